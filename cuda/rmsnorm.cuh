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
// (persistent_decode.cu) norms with the same widths, so its sums are the same.
inline int rmsnorm_threads(int d) { return d >= 1024 ? 512 : d >= 256 ? 256 : 128; }
constexpr int kRmsNormKeep = 8;

// For each of the n rows:
//   h     (n, d) float32, updated in place: h += delta   (skipped when delta is null)
//   out   (n, d) float32 = h / sqrt(mean(h^2) + eps) * w
//   delta (n, d) or null;  w (d)
//   out16 (n, d) 16-bit copy of out, when out16.data is set
// out must not alias h or delta.
void rmsnorm_residual(float* h, const float* delta, const float* w, int n, int d, float eps,
                      float* out, Out16 out16, cudaStream_t stream);

}  // namespace mamba::cuda
