#include "embedding.cuh"

#include <algorithm>

namespace mamba::cuda {
namespace {

template <typename T>
__global__ void embedding_kernel(const T* __restrict__ table, int64_t n_vocab, int64_t d_model,
                                 const int32_t* __restrict__ ids, float* __restrict__ out) {
  pdl_start();
  const int row = blockIdx.y;
  const int32_t id = ids[row];
  const bool valid = id >= 0 && id < n_vocab;
  float* o = out + int64_t(row) * d_model;
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < d_model;
       j += int64_t(gridDim.x) * blockDim.x)
    o[j] = valid ? load_as_float(table, int64_t(id) * d_model + j) : 0.0f;
}

}  // namespace

void embedding(const void* table, gguf::DType dtype, int64_t n_vocab, int64_t d_model,
               const int32_t* ids, int n, float* out, cudaStream_t stream) {
  require(table && ids && out, "embedding", "null pointer");
  require(n_vocab > 0 && d_model > 0 && n >= 0, "embedding", "bad shape");
  require(n <= 65535, "embedding", "more than 65535 rows in one call");
  if (n == 0) return;
  const int threads = 256;
  const dim3 grid(unsigned(std::min<int64_t>(ceil_div(d_model, threads), 64)), unsigned(n));
  switch (dtype) {
    case gguf::DType::F32:
      launch_pdl(embedding_kernel<float>, grid, dim3(threads), 0, stream, static_cast<const float*>(table),
                 n_vocab, d_model, ids, out);
      break;
    case gguf::DType::F16:
      launch_pdl(embedding_kernel<__half>, grid, dim3(threads), 0, stream,
                 static_cast<const __half*>(table), n_vocab, d_model, ids, out);
      break;
    case gguf::DType::BF16:
      launch_pdl(embedding_kernel<__nv_bfloat16>, grid, dim3(threads), 0, stream,
                 static_cast<const __nv_bfloat16*>(table), n_vocab, d_model, ids, out);
      break;
    default:
      fail("embedding: unsupported dtype ", gguf::dtype_name(dtype));
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
