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

#ifdef __CUDACC__
// One decode step of channel c of batch row `row`, whose slot is `slot`, with input xin (p.x
// unused): out = silu(b + sum_k w[k] * (state ++ xin)[k]), in order of k, and the state
// shifted by one. The body of conv1d_step, and the epilogue of a projection that produces the
// conv's input (linear_decode). Offsets other than the state slot's are 32-bit (conv1d_step
// and linear_decode check that they fit). Every load is requested before any store: a loop
// that shifted the state entry by entry could not move a load above the previous store to the
// same array, and waited for d_conv - 1 round trips.
//
// In two parts, so that conv1d_step can request the state and the weights (which no kernel of
// the step before it writes) before it waits for its input: conv1d_step_load, then
// conv1d_step_finish with the input.
struct ConvStepLoads {
  float v[kMaxConvWidth];   // the state entries, oldest first
  float wk[kMaxConvWidth];  // the channel's weights
  float bias;
};
__device__ __forceinline__ ConvStepLoads conv1d_step_load(const Conv1dParams& p, int slot, int c) {
  const int K = p.d_conv, dim = p.dim;
  const float* st = p.state.base + int64_t(slot) * p.state.slot_stride + c;  // column c
  const float* w = p.w + c * K;
  ConvStepLoads l;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) l.v[k] = k < K - 1 ? st[k * dim] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) l.wk[k] = k < K ? w[k] : 0.0f;
  l.bias = p.b ? p.b[c] : 0.0f;
  return l;
}
__device__ __forceinline__ void conv1d_step_finish(const Conv1dParams& p, const ConvStepLoads& l,
                                                   int slot, int row, int c, float xin) {
  const int K = p.d_conv, dim = p.dim;
  float* st = p.state.base + int64_t(slot) * p.state.slot_stride + c;  // column c
  float acc = l.bias;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) {  // (fixed indices: the arrays stay in registers)
    const float in = k < K - 1 ? l.v[k] : xin;
    if (k < K) acc += l.wk[k] * in;
  }
#pragma unroll
  for (int k = 1; k < kMaxConvWidth - 1; k++)
    if (k < K - 1) st[(k - 1) * dim] = l.v[k];
  if (K > 1) st[(K - 2) * dim] = xin;
  const float y = silu(acc);
  p.out[row * dim + c] = y;
  if (p.out16.data) store16(p.out16, row, c, dim, y);
}
__device__ __forceinline__ void conv1d_step_one(const Conv1dParams& p, int slot, int row, int c,
                                                float xin) {
  conv1d_step_finish(p, conv1d_step_load(p, slot, c), slot, row, c, xin);
}
#endif

// Prefill: every sequence of the batch from its slot's state.
void conv1d_prefill(const Conv1dParams& p, const SeqBatch& batch, cudaStream_t stream);
// Decode: row i of x is the next input of slot slots[i] (device, n entries, all distinct).
void conv1d_step(const Conv1dParams& p, int n, const int32_t* slots, cudaStream_t stream);
// The preconditions of a decode step of n rows, p.x aside (for conv1d_step_one in a fused
// epilogue); throws "<op>: ..." if one fails.
void conv1d_step_check(const Conv1dParams& p, int n, const int32_t* slots, const char* op);

}  // namespace mamba::cuda
