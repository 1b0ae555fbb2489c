// Mamba-2's gated RMSNorm, applied per group of d_inner / n_groups channels:
//   g   = y * SiLU(z)
//   out = g / sqrt(mean_group(g^2) + eps) * w
// With n_groups = 1 this is the plain gated norm over all of d_inner.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

// y (n, d_inner); z (n, ldz), the first d_inner columns; w (d_inner); out (n, d_inner), which
// may alias y; out16 (n, d_inner) a 16-bit copy of out when out16.data is set. Either output
// may be left out (null), not both.
void gated_rmsnorm(const float* y, const float* z, int64_t ldz, const float* w, int n,
                   int d_inner, int n_groups, float eps, float* out, Out16 out16,
                   cudaStream_t stream);

}  // namespace mamba::cuda
