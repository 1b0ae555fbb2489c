// The Mamba-2 scan (SSD, "state space duality"): the chunked algorithm for prefill and the
// single-step recurrence for decode, with softplus(dt + dt_bias), the dt clamp and the D skip
// connection fused in. The gate and the grouped norm that follow are gated_rmsnorm.cuh.
//
// Per head h (group g = h / (n_heads / n_groups)), channel p and state index n:
//   dt           = clamp(softplus(dt_raw[h] + dt_bias[h]), dt_min, dt_max)
//   state[h,p,n] = exp(dt * A[h]) * state[h,p,n] + dt * x[h,p] * B[g,n]
//   y[h,p]       = sum_n state[h,p,n] * C[g,n] + D[h] * x[h,p]
//
// Prefill follows the four steps of the SSD paper's minimal reference (Dao & Gu 2024, listing
// 1), on chunks of kSsdChunk steps:
//   1. within each chunk, y_diag = (L o C B^T) (dt x), L the causal decay matrix,
//   2. each chunk's final state from a zero start, B^T (decay o dt x),
//   3. a sequential pass over chunks turning those into the state entering every chunk,
//   4. y_off = (decay o C) state_in, the contribution of everything before the chunk.
// Steps 1, 2 and 4 are small dense matmuls run on tensor cores in TF32 with the operands
// split into high and low halves (three products per tile), which keeps float32 accuracy.
// C B^T depends only on the group, so it is formed once per (chunk, group) and shared by the
// group's heads; decay and dt are applied to it per head.
// The chunk length only changes the order of the arithmetic, never the result.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

constexpr int kSsdChunk = 64;

struct SsdParams {
  const float* x = nullptr;        // (n_tok, ldx): n_heads * head_dim values per row
  int64_t ldx = 0;
  const float* B = nullptr;        // (n_tok, ldbc): n_groups * d_state values per row
  const float* C = nullptr;        // (n_tok, ldbc)
  int64_t ldbc = 0;
  const float* dt = nullptr;       // (n_tok, lddt): n_heads raw values per row
  int64_t lddt = 0;
  const float* dt_bias = nullptr;  // (n_heads)
  const float* A = nullptr;        // (n_heads), already -exp(A_log)
  const float* D = nullptr;        // (n_heads)
  float dt_min = 0.0f;
  float dt_max = 0.0f;             // may be +inf
  StateRef state;                  // per slot (n_heads, head_dim, d_state)
  int n_heads = 0;
  int head_dim = 0;
  int d_state = 0;
  int n_groups = 0;
  float* y = nullptr;              // (n_tok, n_heads * head_dim); must not overlap inputs
};

// Scratch that ssd_prefill needs for this batch: per-step dt and decay sums, one state per
// chunk and head, and C B^T per chunk and group.
size_t ssd_workspace_bytes(const SsdParams& p, const SeqBatch& batch);

void ssd_prefill(const SsdParams& p, const SeqBatch& batch, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream);
// Decode: row i advances slot slots[i] (device, n entries, all distinct) by one step.
void ssd_step(const SsdParams& p, int n, const int32_t* slots, cudaStream_t stream);

}  // namespace mamba::cuda
