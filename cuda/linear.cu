#include "linear.cuh"

#include <algorithm>

namespace mamba::cuda {
namespace {

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// out (n, cols) contiguous = x (n, ldx) rounded to T. With vec (cols and ldx multiples of 4,
// x 16-byte aligned) a thread converts 4 values with one 16-byte read and one 8-byte write.
template <typename T>
__global__ void round_rows_kernel(const float* __restrict__ x, int64_t ldx, int64_t cols,
                                  bool vec, T* __restrict__ out) {
  const int64_t row = blockIdx.y;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    for (j *= 4; j < cols; j += 4 * step) {
      const float4 v = *reinterpret_cast<const float4*>(x + row * ldx + j);
      struct alignas(8) Four { T a, b, c, d; };
      *reinterpret_cast<Four*>(out + row * cols + j) =
          Four{from_float<T>(v.x), from_float<T>(v.y), from_float<T>(v.z), from_float<T>(v.w)};
    }
    return;
  }
  for (; j < cols; j += step) out[row * cols + j] = from_float<T>(x[row * ldx + j]);
}

__global__ void add_bias_kernel(float* __restrict__ y, int64_t ldy, int64_t cols,
                                const float* __restrict__ bias) {
  const int64_t row = blockIdx.y;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x)
    y[row * ldy + j] += bias[j];
}

dim3 row_grid(int64_t cols, int n, int threads) {
  return dim3(unsigned(std::min<int64_t>(ceil_div(cols, threads), 128)), unsigned(n));
}

}  // namespace

size_t linear_scratch_bytes(const DeviceMatrix& W, int n) {
  return W.dtype == gguf::DType::F32 ? 0 : size_t(n) * size_t(W.cols) * 2;
}

void linear(cublasHandle_t handle, const DeviceMatrix& W, const float* x, int64_t ldx, int n,
            float* y, int64_t ldy, const float* bias, const LinearScratch& scratch,
            cudaStream_t stream, bool x_rounded) {
  const bool w16 = W.dtype != gguf::DType::F32;
  require(handle && W.data && (x || (x_rounded && w16)) && y, "linear", "null pointer");
  require(W.rows > 0 && W.cols > 0 && n >= 0 && n <= 65535, "linear", "bad shape");
  require(ldx >= W.cols && ldy >= W.rows, "linear", "bad leading dimension");
  require(W.rows <= INT32_MAX && W.cols <= INT32_MAX && ldx <= INT32_MAX && ldy <= INT32_MAX,
          "linear", "dimension exceeds cuBLAS's int range");
  if (n == 0) return;
  CUBLAS_CHECK(cublasSetStream(handle, stream));
  const float one = 1.0f, zero = 0.0f;
  // Row-major y = x W^T is column-major y^T = W x^T: W's row-major storage read as
  // column-major is W^T, hence op(A) = transpose.
  const int m = int(W.rows), k = int(W.cols);
  if (W.dtype == gguf::DType::F32) {
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, W.data,
                              CUDA_R_32F, k, x, CUDA_R_32F, int(ldx), &zero, y, CUDA_R_32F,
                              int(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    require(scratch.data && scratch.bytes >= linear_scratch_bytes(W, n), "linear",
            "16-bit activation scratch too small");
    const int threads = 256;
    const bool vec = !x_rounded && k % 4 == 0 && ldx % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(x) % 16 == 0;
    const dim3 grid = row_grid(vec ? k / 4 : k, n, threads);
    cudaDataType_t type;
    if (W.dtype == gguf::DType::F16) {
      if (!x_rounded)
        round_rows_kernel<<<grid, threads, 0, stream>>>(x, ldx, k, vec,
                                                        static_cast<__half*>(scratch.data));
      type = CUDA_R_16F;
    } else if (W.dtype == gguf::DType::BF16) {
      if (!x_rounded)
        round_rows_kernel<<<grid, threads, 0, stream>>>(
            x, ldx, k, vec, static_cast<__nv_bfloat16*>(scratch.data));
      type = CUDA_R_16BF;
    } else {
      fail("linear: unsupported weight dtype ", gguf::dtype_name(W.dtype));
    }
    CUDA_CHECK(cudaGetLastError());
    CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, W.data, type, k,
                              scratch.data, type, k, &zero, y, CUDA_R_32F, int(ldy),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  if (bias) {
    add_bias_kernel<<<row_grid(m, n, 256), 256, 0, stream>>>(y, ldy, m, bias);
    CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace mamba::cuda
