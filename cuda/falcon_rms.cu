#include "falcon_rms.cuh"

namespace mamba::cuda {
namespace {

// Block per row, one warp per part: the parts are short (tens to hundreds of values).
__global__ void falcon_bcdt_rms_kernel(float* x_dbl, int64_t ld, int dt_rank, int d_state,
                                       float eps) {
  pdl_start();
  const int part = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int begin = part == 0 ? 0 : part == 1 ? dt_rank : dt_rank + d_state;
  const int width = part == 0 ? dt_rank : d_state;
  float* v = x_dbl + int64_t(blockIdx.x) * ld + begin;
  float ss = 0.0f;
  for (int j = lane; j < width; j += 32) ss += v[j] * v[j];
  const float scale = rsqrtf(warp_sum(ss) / float(width) + eps);
  for (int j = lane; j < width; j += 32) v[j] *= scale;
}

}  // namespace

void falcon_bcdt_rms(float* x_dbl, int64_t ld, int n, int dt_rank, int d_state, float eps,
                     cudaStream_t stream) {
  require(x_dbl != nullptr, "falcon_bcdt_rms", "null pointer");
  require(n >= 0 && dt_rank > 0 && d_state > 0 && ld >= int64_t(dt_rank) + 2 * d_state,
          "falcon_bcdt_rms", "bad shape");
  if (n == 0) return;
  launch_pdl(falcon_bcdt_rms_kernel, dim3(unsigned(n)), dim3(96), 0, stream, x_dbl, ld, dt_rank,
             d_state, eps);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
