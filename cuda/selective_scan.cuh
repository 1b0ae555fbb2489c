// The Mamba-1 selective scan (S6), with the discretisation, the D skip connection and the
// SiLU(z) gate fused in, for prefill and for the single decode step.
//
// Per channel c and state index n, at every time step:
//   dt         = softplus(dt_raw[c] + dt_bias[c])
//   state[c,n] = exp(dt * A[c,n]) * state[c,n] + dt * B[n] * x[c]
//   y[c]       = (sum_n state[c,n] * C[n] + D[c] * x[c]) * SiLU(z[c])
// The state is float32 (d_inner, d_state) per slot.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

constexpr int kMaxScanState = 64;  // Mamba-1 checkpoints use d_state = 16

struct SelectiveScanParams {
  const float* x = nullptr;        // (n_tok, d_inner) conv output
  const float* dt = nullptr;       // (n_tok, d_inner) dt_proj output, before bias and softplus
  const float* dt_bias = nullptr;  // (d_inner)
  const float* A = nullptr;        // (d_inner, d_state), already -exp(A_log)
  const float* B = nullptr;        // (n_tok, ldbc): d_state values per row
  const float* C = nullptr;        // (n_tok, ldbc)
  int64_t ldbc = 0;
  const float* D = nullptr;        // (d_inner)
  const float* z = nullptr;        // (n_tok, ldz): the gate, d_inner values per row
  int64_t ldz = 0;
  StateRef state;                  // per slot (d_inner, d_state)
  int d_inner = 0;
  int d_state = 0;                 // 1 ..= kMaxScanState
  float* y = nullptr;              // (n_tok, d_inner); must not overlap the inputs
  Out16 y16;                       // (n_tok, d_inner) 16-bit copy of y, when y16.data is set
};

// Prefill: parallel over (channel, sequence), each block scanning its channel's time axis in
// chunks of 256 steps with a block-wide parallel scan of the linear recurrence.
void selective_scan_prefill(const SelectiveScanParams& p, const SeqBatch& batch,
                            cudaStream_t stream);
// Decode: row i advances slot slots[i] (device, n entries, all distinct) by one step.
void selective_scan_step(const SelectiveScanParams& p, int n, const int32_t* slots,
                         cudaStream_t stream);

}  // namespace mamba::cuda
