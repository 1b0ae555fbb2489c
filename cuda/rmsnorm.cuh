// RMSNorm fused with the residual add that precedes it.
//
// The residual stream stays float32 for the whole forward pass. Each block ends with
// h = h + Mixer(RMSNorm(h)); fusing "h += mixer output" into the next norm reads and writes
// h once per layer instead of twice.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

// The kernel's block width for rows of d values, and how many values of its row each thread
// keeps in registers between the sum of squares and the scaling. The persistent decode step
// (persistent_decode.cu) norms with the same widths. (The sum of squares does not depend on
// them: rmsnorm_row_scale below adds in one fixed order.)
inline int rmsnorm_threads(int d) { return d >= 1024 ? 512 : d >= 256 ? 256 : 128; }
constexpr int kRmsNormKeep = 8;

// For each of the n rows:
//   h     (n, d) float32, updated in place: h += delta   (skipped when delta is null)
//   out   (n, d) float32 = h / sqrt(mean(h^2) + eps) * w
//   delta (n, d) or null;  w (d)
//   out16 (n, d) 16-bit copy of out, when out16.data is set
// out must not alias h or delta.
// d <= kRmsNormMaxDim.
void rmsnorm_residual(float* h, const float* delta, const float* w, int n, int d, float eps,
                      float* out, Out16 out16, cudaStream_t stream);

constexpr int kRmsNormMaxDim = 16384;

#ifdef __CUDACC__
// The sum of squares of a row of h, in one fixed order whichever kernel computes it: the norm
// kernel, or (decode steps of up to 8 rows) the projection that writes h in its epilogue and
// the projection that reads it normed in its prologue (linear_decode's ResidualOut and NormIn).
// Every output of a decode step must have the same bits at any batch size, so the parts must be
// added in the same order everywhere:
//   G[g] = the squares of h[16g .. 16g + 15], added by a butterfly over 16 lanes (xor 8, 4, 2,
//          1), values past the row being zeros: sumsq16, called by all 32 lanes of a warp,
//          lanes 16k .. 16k + 15 holding one group;
//   ss   = lane L of one warp adds G[L], G[L + 32], ... in order, then a butterfly over the 32
//          lanes (xor 16 .. 1) adds the lanes: sumsq_groups, every lane gets ss.
// (A butterfly gives every lane of the group the same bits: each level adds the same two
// values on both sides.)
__device__ __forceinline__ float sumsq16(float v) {
  float s = v * v;
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}
__device__ __forceinline__ float sumsq_groups(const float* G, int n_groups) {
  float s = 0.0f;
  for (int g = int(threadIdx.x & 31); g < n_groups; g += 32) s += G[g];
  return warp_sum(s);
}
// 1 / sqrt(mean(h^2) + eps) from the sum of squares of d values.
__device__ __forceinline__ float rms_scale(float ss, int d, float eps) {
  return rsqrtf(ss / float(d) + eps);
}
// Stores G[j / 16] = sumsq16 of the group holding value j of a row (v; past the row's d values,
// zeros): every lane of a warp calls it, lane L holding a value j with j % 32 == L.
__device__ __forceinline__ void sumsq_group(float* G, int j, int d, float v) {
  const float s = sumsq16(j < d ? v : 0.0f);
  if (j < d && j % 16 == 0) G[j / 16] = s;
}
// One row's 1 / rms, the sum of squares in the order above, by threads [0, B) of the block (B a
// multiple of 32): rmsnorm_residual's kernel, and the persistent decode step's norm. Every
// thread of the block calls it (it synchronises the block); threads from B on take no part.
// value(j) is h[j] (a read, or the residual add), called once for each j < d; thread t keeps
// its values t + i B (i < kKeep; zeros past d) in `keep`. G: ceil(d / 16) floats of shared
// memory, `total` one.
template <int kKeep, typename Value>
__device__ __forceinline__ float rmsnorm_row_scale(const Value& value, int d, float eps, int B,
                                                   float (&keep)[kKeep], float* G,
                                                   float* total) {
  const int t = int(threadIdx.x);
  if (t < B) {  // warp-uniform
#pragma unroll
    for (int i = 0; i < kKeep; i++) {
      const int j = t + i * B;
      keep[i] = j < d ? value(j) : 0.0f;
      if (i * B < d) sumsq_group(G, j, d, keep[i]);  // uniform over threads [0, B)
    }
    for (int j0 = kKeep * B; j0 < d; j0 += B) {
      const int j = j0 + t;
      sumsq_group(G, j, d, j < d ? value(j) : 0.0f);
    }
  }
  __syncthreads();
  if (t < 32) {
    const float ss = sumsq_groups(G, (d + 15) / 16);
    if (t == 0) *total = ss;
  }
  __syncthreads();
  return rms_scale(*total, d, eps);
}
#endif

}  // namespace mamba::cuda
