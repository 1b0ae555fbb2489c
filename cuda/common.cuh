// What every CUDA file shares: error checking that turns CUDA and cuBLAS failures into
// mamba::Error with file:line, an owning device buffer whose out-of-memory message names what
// did not fit, the description of a packed batch of sequences, and (device code only) the few
// math and reduction helpers the kernels use.
//
// Host-only translation units (.cpp) may include this header: the device helpers are compiled
// only under nvcc.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"

namespace mamba::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file,
                                     int line);

// CUDA_CHECK(cudaMemcpy(...)); after a kernel launch: CUDA_CHECK(cudaGetLastError()).
#define CUDA_CHECK(expr)                                                          \
  do {                                                                            \
    const cudaError_t cuda_check_err_ = (expr);                                   \
    if (cuda_check_err_ != cudaSuccess)                                           \
      ::mamba::cuda::throw_cuda_error(cuda_check_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                          \
  do {                                                                              \
    const cublasStatus_t cublas_check_st_ = (expr);                                 \
    if (cublas_check_st_ != CUBLAS_STATUS_SUCCESS)                                  \
      ::mamba::cuda::throw_cublas_error(cublas_check_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// True when at least one CUDA device can be used (false on a machine without a GPU or
// driver; never throws).
bool device_available();

// "37.7 MiB"
std::string format_bytes(uint64_t bytes);

// An owning, move-only cudaMalloc'ed buffer. Construction throws mamba::Error
//   "out of GPU memory allocating <what> (37.7 MiB; 120.0 MiB free)"
// when the device cannot hold it, so the caller always learns which allocation failed.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, const std::string& what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// An owning, move-only page-locked host buffer (cudaMallocHost): the staging area for copies
// that happen every token, which run at full speed only from pinned memory.
class HostBuffer {
 public:
  HostBuffer() = default;
  HostBuffer(size_t bytes, const std::string& what);
  ~HostBuffer();
  HostBuffer(HostBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  HostBuffer& operator=(HostBuffer&& o) noexcept;
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// A packed batch of sequences for the prefill kernels. Sequence s owns rows
// [start[s], start[s+1]) of every (n_tok, ...) activation buffer and continues the recurrent
// state of slot slots[s]. Decode is the special case of one row per sequence, which the
// *_step kernels take directly as (n rows, slots).
struct SeqBatch {
  int n_seq = 0;
  int n_tok = 0;     // start[n_seq]
  int max_len = 0;   // longest sequence: sizes the grids (shorter ones exit early)
  const int32_t* start = nullptr;  // device (n_seq + 1), start[0] = 0
  const int32_t* slots = nullptr;  // device (n_seq)
};

// Recurrent state of one layer inside the per-slot state buffer: slot s's tensor starts at
// base + slots[s] * slot_stride (floats).
struct StateRef {
  float* base = nullptr;
  int64_t slot_stride = 0;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

#ifdef __CUDACC__
#define MAMBA_HOST_DEVICE __host__ __device__
#else
#define MAMBA_HOST_DEVICE
#endif

// Where linear_decode's batched GEMM keeps element (row, k) of its 16-bit (n, K) input, K a
// multiple of 32: blocks of 16 rows x 32 k (512 values), ordered [row / 16][k / 32]; inside a
// block, the A-operand fragments of the mma.sync steps as lane l = 4 g + c reads them,
// [step (2)][lane (32)][4 pairs]. Lane (g, c) holds k = 8c .. 8c+7 of rows g and g + 8 (the
// GEMM's K order, see linear_decode_gemm.cu); step s takes the pairs 2s and 2s + 1 of each row, in
// the order (row g, pair 2s), (row g + 8, pair 2s), (row g, pair 2s + 1), (row g + 8, ...).
// One 16-byte read per lane and step gives the operand registers as mma.sync wants them.
constexpr int kGemmX16Block = 16 * 32;  // values in one block of gemm_x16_index's order
// The arithmetic is unsigned 32-bit: indices are below 2^31 (linear_decode refuses larger x16
// buffers), and a kernel's epilogue then spends a few shifts on it instead of 64-bit signed
// divisions.
MAMBA_HOST_DEVICE inline int64_t gemm_x16_index(int64_t row, int64_t k, int64_t K) {
  const uint32_t r = uint32_t(row), kk = uint32_t(k);
  const uint32_t rr = r % 16, ki = kk % 32;
  const uint32_t g = rr % 8, h = rr / 8, c = ki / 8, e = ki % 8, pair = e / 2;
  return int64_t((r / 16 * (uint32_t(K) / 32) + kk / 32) * kGemmX16Block + (pair / 2) * 256 +
                 (g * 4 + c) * 8 + ((pair % 2) * 2 + h) * 2 + e % 2);
}

// A second, 16-bit copy of a kernel's float32 output, rounded to nearest even, written where
// the next step is a projection with f16 or bf16 weights that reads its input in 16 bits (the
// cuBLAS prefill GEMM, linear_decode's staged GEMM): that projection then skips its own
// rounding pass (x_rounded). data == nullptr: no copy.
struct Out16 {
  void* data = nullptr;  // (rows, cols) contiguous, or in gemm_x16_index order
  bool bf16 = false;     // bfloat16, else IEEE half
  int64_t gemm_k = 0;    // > 0: the order of gemm_x16_index with K = gemm_k (= cols)
};

// Throws mamba::Error "<op>: <what>" unless cond holds: the host entry points check every
// precondition with it before launching anything.
inline void require(bool cond, const char* op, const char* what) {
  if (!cond) fail(op, ": ", what);
}

}  // namespace mamba::cuda

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mamba::cuda {

// The same formulas as the CPU reference: x * sigmoid(x), and softplus with PyTorch's
// threshold (the identity above 20, where log1p(exp(x)) == x in float32).
// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl() may be scheduled
// while the kernel before it in the stream is still finishing, so the launch latency and the
// previous kernel's tail overlap. Such a kernel calls pdl_start() first thing: it lets the next
// kernel be scheduled, then waits until the previous kernel has completed and its writes are
// visible. Since every kernel waits for its predecessor before it can complete, a kernel also
// sees the writes of all earlier ones. Nothing happens on older GPUs or in plain launches.
// Reads of memory no kernel writes (weights) may go between the two halves.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_start() {
  pdl_launch_dependents();
  pdl_wait();
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic dependent launch allowed,
// the grid cut into thread-block clusters of `cluster` blocks (Hopper; {1, 1, 1}: none).
template <typename... Params, typename... Args>
void launch_pdl_cluster(void (*kernel)(Params...), dim3 grid, dim3 cluster, dim3 block,
                        size_t smem, cudaStream_t stream, Args... args) {
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = cluster.x;
  attr[1].val.clusterDim.y = cluster.y;
  attr[1].val.clusterDim.z = cluster.z;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = cluster.x * cluster.y * cluster.z > 1 ? 2 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args... args) {
  launch_pdl_cluster(kernel, grid, dim3(1, 1, 1), block, smem, stream, args...);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// Element (row, col) of the (rows, cols) output = v rounded to o's type (o.data not null):
// at row * cols + col, or where gemm_x16_index puts it when o.gemm_k is set (= cols).
__device__ __forceinline__ void store16(const Out16& o, int64_t row, int64_t col, int64_t cols,
                                        float v) {
  const int64_t i = o.gemm_k ? gemm_x16_index(row, col, cols) : row * cols + col;
  if (o.bf16)
    static_cast<__nv_bfloat16*>(o.data)[i] = __float2bfloat16_rn(v);
  else
    static_cast<__half*>(o.data)[i] = __float2half_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the
// result. `scratch` is 32 floats of shared memory; the call synchronises the block.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < n_warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// Element loads from a weight of any stored dtype.
__device__ __forceinline__ float load_as_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_as_float(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

}  // namespace mamba::cuda
#endif
