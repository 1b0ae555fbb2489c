// Causal depthwise conv1d over time with bias and SiLU fused, for prefill and for the
// one-token decode step, both continuing a per-slot conv state.
//
// Channel c of the output at time t is
//   SiLU(b[c] + sum_k w[c, k] * in[t - (d_conv - 1) + k, c])
// where inputs before the start of the chunk come from the conv state: the last d_conv - 1
// inputs seen by the slot, oldest first, stored (d_conv - 1, dim). After the call the state
// holds the last d_conv - 1 inputs including this chunk.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

constexpr int kMaxConvWidth = 8;

struct Conv1dParams {
  const float* x = nullptr;  // (n_tok, ldx); the first `dim` columns are the conv input
  int64_t ldx = 0;
  const float* w = nullptr;  // (dim, d_conv)
  const float* b = nullptr;  // (dim) or null (no bias)
  StateRef state;            // per slot (d_conv - 1, dim)
  int dim = 0;
  int d_conv = 0;            // 1 ..= kMaxConvWidth
  float* out = nullptr;      // (n_tok, dim); must not overlap x
  Out16 out16;               // (n_tok, dim) 16-bit copy of out, when out16.data is set
};

// Prefill: every sequence of the batch from its slot's state.
void conv1d_prefill(const Conv1dParams& p, const SeqBatch& batch, cudaStream_t stream);
// Decode: row i of x is the next input of slot slots[i] (device, n entries, all distinct).
void conv1d_step(const Conv1dParams& p, int n, const int32_t* slots, cudaStream_t stream);

}  // namespace mamba::cuda
