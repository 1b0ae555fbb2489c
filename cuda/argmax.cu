#include "argmax.cuh"

#include <climits>

namespace mamba::cuda {
namespace {

constexpr int kThreads = 1024;

// (value, index) with the larger value first and, on equal values, the lower index: the order
// in which greedy_argmax's scan keeps its best. "None yet" is (-inf, INT_MAX), which every
// candidate beats (a candidate is above -inf: the scan takes only strictly larger values).
struct Best {
  float v;
  int i;
};
__device__ __forceinline__ Best better(Best a, Best b) {
  return b.v > a.v || (b.v == a.v && b.i < a.i) ? b : a;
}

// Block (row). Thread t scans t, t + kThreads, ... in order, keeping strictly larger values
// (so the lowest of its equal maxima; NaN never compares larger); then a reduction in the order
// above, which is a total order on the candidates, so its result does not depend on how the
// pairs meet: the lowest index among the row's maxima.
__global__ void argmax_rows_kernel(const float* __restrict__ x, int64_t ld, int V,
                                   const int32_t* __restrict__ banned, int32_t* __restrict__ ids) {
  pdl_start();
  __shared__ Best warp_best[kThreads / 32];
  const int row = blockIdx.x, tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const float* xr = x + int64_t(row) * ld;
  const int ban = banned ? banned[row] : -1;
  Best b{-INFINITY, INT_MAX};
  for (int i = tid; i < V; i += kThreads) {
    const float v = xr[i];
    if (v > b.v && i != ban) b = {v, i};
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    b = better(b, {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)});
  if (lane == 0) warp_best[warp] = b;
  __syncthreads();
  if (warp == 0) {
    b = lane < kThreads / 32 ? warp_best[lane] : Best{-INFINITY, INT_MAX};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      b = better(b, {__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.i, o)});
    if (lane == 0) ids[row] = b.i == INT_MAX ? 0 : b.i;
  }
}

}  // namespace

void argmax_rows(const float* x, int64_t ld, int n, int V, const int32_t* banned, int32_t* ids,
                 cudaStream_t stream) {
  require(x && ids, "argmax_rows", "null pointer");
  require(n >= 0 && V > 0 && ld >= V, "argmax_rows", "bad shape");
  if (n == 0) return;
  launch_pdl(argmax_rows_kernel, dim3(unsigned(n)), dim3(kThreads), 0, stream, x, ld, V, banned,
             ids);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
