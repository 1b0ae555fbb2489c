#include "rmsnorm.cuh"

namespace mamba::cuda {
namespace {

// One block per row. The row is read twice (the second time from L1/L2), which is cheaper
// than holding a d_model = 4096 row in registers across a block-wide reduction.
__global__ void rmsnorm_residual_kernel(float* __restrict__ h, const float* __restrict__ delta,
                                        const float* __restrict__ w, int d, float eps,
                                        float* __restrict__ out, Out16 out16) {
  pdl_start();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  float* hr = h + row * d;
  float ss = 0.0f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float v = hr[j];
    if (delta) {
      v += delta[row * d + j];
      hr[j] = v;
    }
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(d) + eps);
  float* o = out + row * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = hr[j] * scale * w[j];
    o[j] = v;
    if (out16.data) store16(out16, row * d + j, v);
  }
}

}  // namespace

void rmsnorm_residual(float* h, const float* delta, const float* w, int n, int d, float eps,
                      float* out, Out16 out16, cudaStream_t stream) {
  require(h && w && out, "rmsnorm_residual", "null pointer");
  require(n >= 0 && d > 0, "rmsnorm_residual", "bad shape");
  require(out != h && out != delta, "rmsnorm_residual", "out aliases an input");
  if (n == 0) return;
  const int threads = d >= 1024 ? 512 : d >= 256 ? 256 : 128;
  launch_pdl(rmsnorm_residual_kernel, dim3(n), dim3(threads), 0, stream, h, delta, w, d, eps, out,
             out16);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
