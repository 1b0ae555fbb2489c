#include "rmsnorm.cuh"

namespace mamba::cuda {
namespace {

// One block per row. A thread keeps its first kKeep values of the row (and their weights, which
// it requests before the reduction) in registers, so the second pass waits for no memory; any
// further values (rows wider than kKeep * blockDim.x) are read again from L2. The sum of squares
// is rmsnorm.cuh's fixed order (rmsnorm_row_scale), and the products are the same either way.
constexpr int kKeep = kRmsNormKeep;
__global__ void rmsnorm_residual_kernel(float* __restrict__ h, const float* __restrict__ delta,
                                        const float* __restrict__ w, int d, float eps,
                                        float* __restrict__ out, Out16 out16) {
  pdl_launch_dependents();
  const int B = int(blockDim.x), t = int(threadIdx.x);
  float wk[kKeep];
#pragma unroll
  for (int i = 0; i < kKeep; i++) wk[i] = t + i * B < d ? w[t + i * B] : 0.0f;  // weights: no
  pdl_wait();                                                                 // kernel writes them
  __shared__ float groups[kRmsNormMaxDim / 16];
  __shared__ float total;
  const int64_t row = blockIdx.x;
  float* hr = h + row * d;
  float keep[kKeep];
  const auto add = [&](int j) {  // h += delta at j; returns the new value
    float v = hr[j];
    if (delta) {
      v += delta[row * d + j];
      hr[j] = v;
    }
    return v;
  };
  const float scale = rmsnorm_row_scale(add, d, eps, B, keep, groups, &total);
  float* o = out + row * d;
  const auto put = [&](int j, float v) {
    o[j] = v;
    if (out16.data) store16(out16, row, j, d, v);
  };
#pragma unroll
  for (int i = 0; i < kKeep; i++)
    if (t + i * B < d) put(t + i * B, keep[i] * scale * wk[i]);
  for (int j = t + kKeep * B; j < d; j += B) put(j, hr[j] * scale * w[j]);
}

}  // namespace

void rmsnorm_residual(float* h, const float* delta, const float* w, int n, int d, float eps,
                      float* out, Out16 out16, cudaStream_t stream) {
  require(h && w && out, "rmsnorm_residual", "null pointer");
  require(n >= 0 && d > 0 && d <= kRmsNormMaxDim, "rmsnorm_residual", "bad shape");
  require(out != h && out != delta, "rmsnorm_residual", "out aliases an input");
  if (n == 0) return;
  const int threads = rmsnorm_threads(d);
  launch_pdl(rmsnorm_residual_kernel, dim3(n), dim3(threads), 0, stream, h, delta, w, d, eps, out,
             out16);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
