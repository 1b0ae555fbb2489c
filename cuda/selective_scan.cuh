// The Mamba-1 selective scan (S6), with the discretisation, the D skip connection and the
// SiLU(z) gate fused in, for prefill and for the single decode step.
//
// Per channel c and state index n, at every time step:
//   dt         = softplus(dt_raw[c] + dt_bias[c])
//   state[c,n] = exp(dt * A[c,n]) * state[c,n] + dt * B[n] * x[c]
//   y[c]       = (sum_n state[c,n] * C[n] + D[c] * x[c]) * SiLU(z[c])
// The state is float32 (d_inner, d_state) per slot.
#pragma once

#include <type_traits>

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

#ifdef __CUDACC__
// The decode step of one (row, channel) by a group of L = 1 << log2_L consecutive lanes (L a
// power of two, at most 32; all 32 lanes of the warp call it): lane j owns the V consecutive
// state entries at V*j and V*(j + L) (the entries past N are skipped; V * L >= N / 2), and
// updates them in place unless !valid (a lane whose group has no channel still shuffles).
// Returns h . C, the same on every lane of the group: each lane's entries in order, then a
// fixed butterfly over the group. st, A (the channel's rows), B and C are 16-byte aligned
// when V = 4. selective_scan_step and the persistent decode step both call this, so a row's
// state and output are the same bits whichever kernel steps it.
template <int V>
__device__ __forceinline__ float selective_scan_step_lanes(float* st, const float* A,
                                                           const float* B, const float* C, int N,
                                                           float dt, float dtx, int j, int log2_L,
                                                           bool valid) {
  using Vec = std::conditional_t<V == 4, float4, float>;
  float acc = 0.0f;
  static_assert(kMaxScanState <= 2 * 32, "two rounds of V * L >= 32 entries");
#pragma unroll
  for (int round = 0; round < 2; round++) {
    const int n = V * (j + (round << log2_L));
    if (n >= N) break;
    Vec s = *reinterpret_cast<const Vec*>(st + n);
    const Vec a = *reinterpret_cast<const Vec*>(A + n);
    const Vec b = *reinterpret_cast<const Vec*>(B + n);
    const Vec cc = *reinterpret_cast<const Vec*>(C + n);
    float* sv = reinterpret_cast<float*>(&s);
    const float* av = reinterpret_cast<const float*>(&a);
    const float* bv = reinterpret_cast<const float*>(&b);
    const float* cv = reinterpret_cast<const float*>(&cc);
#pragma unroll
    for (int i = 0; i < V; i++) {
      // h = exp(dt * A) * h + dt * B * x;  y += h . C
      sv[i] = expf(dt * av[i]) * sv[i] + dtx * bv[i];
      acc += sv[i] * cv[i];
    }
    if (valid) *reinterpret_cast<Vec*>(st + n) = s;
  }
  for (int o = (1 << log2_L) / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// y = (h . C + D * x) * silu(z)
__device__ __forceinline__ float selective_scan_output(float hc, float Dc, float x, float z) {
  return (hc + Dc * x) * silu(z);
}
#endif

// Prefill: parallel over (channel, sequence), each block scanning its channel's time axis in
// chunks of 256 steps with a block-wide parallel scan of the linear recurrence.
void selective_scan_prefill(const SelectiveScanParams& p, const SeqBatch& batch,
                            cudaStream_t stream);
// Decode: row i advances slot slots[i] (device, n entries, all distinct) by one step.
void selective_scan_step(const SelectiveScanParams& p, int n, const int32_t* slots,
                         cudaStream_t stream);

}  // namespace mamba::cuda
