#include "rmsnorm.cuh"

namespace mamba::cuda {
namespace {

// One block per row. A thread keeps its first kKeep values of the row (and their weights, which
// it requests before the reduction) in registers, so the second pass waits for no memory; any
// further values (rows wider than kKeep * blockDim.x) are read again from L2. The sum and the
// products are the same either way.
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
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  float* hr = h + row * d;
  float keep[kKeep];
  float ss = 0.0f;
  const auto add = [&](int j) {  // h += delta at j; returns the new value
    float v = hr[j];
    if (delta) {
      v += delta[row * d + j];
      hr[j] = v;
    }
    return v;
  };
#pragma unroll
  for (int i = 0; i < kKeep; i++) {
    const int j = t + i * B;
    keep[i] = j < d ? add(j) : 0.0f;
    if (j < d) ss += keep[i] * keep[i];
  }
  for (int j = t + kKeep * B; j < d; j += B) {
    const float v = add(j);
    ss += v * v;
  }
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(d) + eps);
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
  require(n >= 0 && d > 0, "rmsnorm_residual", "bad shape");
  require(out != h && out != delta, "rmsnorm_residual", "out aliases an input");
  if (n == 0) return;
  const int threads = rmsnorm_threads(d);
  launch_pdl(rmsnorm_residual_kernel, dim3(n), dim3(threads), 0, stream, h, delta, w, d, eps, out,
             out16);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
