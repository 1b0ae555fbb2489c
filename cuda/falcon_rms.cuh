// Falcon-Mamba's weightless RMSNorm on the three parts of x_proj's output, in place:
//   dt_low = rms(dt_low), B = rms(B), C = rms(C),  rms(v) = v / sqrt(mean(v^2) + eps)
// Each part is normalised over its own width (dt_rank, d_state, d_state).
#pragma once

#include "common.cuh"

namespace mamba::cuda {

// x_dbl (n, ld): row = [dt_low (dt_rank) | B (d_state) | C (d_state)].
void falcon_bcdt_rms(float* x_dbl, int64_t ld, int n, int dt_rank, int d_state, float eps,
                     cudaStream_t stream);

}  // namespace mamba::cuda
