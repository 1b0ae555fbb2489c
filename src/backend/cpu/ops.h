// The CPU kernels. Each computes one step of the forward pass for a block of tokens; the
// layer code (mamba1_layer.cpp, mamba2_layer.cpp) strings them together.
//
// Conventions:
//   - Activations are row-major (T, n) float32 with a row stride ("ld", in floats), so a kernel
//     can read a slice of a wider buffer (e.g. the dt part of x_proj's output) in place.
//   - Kernels taking a ThreadPool split the work themselves; the others work on a range that
//     the caller picked for its thread.
//   - Every output element is computed by the same sequence of float operations whatever the
//     number of tokens or threads, so decode and prefill agree bit for bit and results do not
//     depend on the thread count.
#pragma once

#include <cstdint>

#include "backend/cpu/threadpool.h"
#include "model/model.h"

namespace mamba::cpu {

// y[t, n] = (accumulate ? y[t, n] : 0) + (sum_k x[t, k] * w[n, k] + bias[n])
// for t < T, n < w.rows, k < w.cols. w is f32, f16 or bf16; bias may be null.
// This is PyTorch's y = F.linear(x, w, bias) (plus y when accumulating: the residual add).
void matmul(ThreadPool& pool, const Matrix& w, const float* x, int64_t ldx, int64_t T, float* y,
            int64_t ldy, const float* bias = nullptr, bool accumulate = false);

// out = x / sqrt(mean(x^2) + eps) * w, over n elements (w == nullptr: no weight).
void rmsnorm(const float* x, int64_t n, const float* w, float eps, float* out);

// Causal depthwise conv1d over time followed by SiLU, for channels [c0, c1) of one sequence:
//   window  = concat(state (d_conv - 1 rows), x (T rows))           per channel
//   out[t]  = silu(bias + sum_k w[k] * window[t + k])
//   state   = last d_conv - 1 rows of the window
// x (T, ldx), w_t (d_conv, C) = the (C, d_conv) weight transposed, bias (C),
// state (d_conv - 1, C), out (T, ldo).
void conv1d_silu(const float* x, int64_t ldx, int64_t T, int64_t c0, int64_t c1, const float* w_t,
                 const float* bias, int64_t d_conv, int64_t C, float* state, float* out,
                 int64_t ldo);

// dt[i] = clamp(softplus(dt[i] + bias[i]), lo, hi) for i < n, in place.
void dt_softplus(float* dt, const float* bias, int64_t n, float lo, float hi);

// x[i] *= silu(z[i]) for i < n.
void mul_silu(float* x, const float* z, int64_t n);

// Mamba-1 selective scan of one sequence for channels [c0, c1), N = d_state:
//   s[c, :] = exp(dt[t, c] * A[c, :]) * s[c, :] + dt[t, c] * x[t, c] * B[t, :]
//   y[t, c] = sum_n s[c, n] * C[t, n] + D[c] * x[t, c]
// x, dt, y are (T, ld*) with one column per channel; B and C are (T, ldbc); A (C, N);
// state (C, N) is read and updated.
struct Mamba1ScanArgs {
  int64_t T;
  int64_t N;
  const float* x;
  int64_t ldx;
  const float* dt;
  int64_t lddt;
  const float* B;
  const float* C;
  int64_t ldbc;
  const float* A;
  const float* D;
  float* state;
  float* y;
  int64_t ldy;
};
void mamba1_scan(const Mamba1ScanArgs& a, int64_t c0, int64_t c1);

// Mamba-2 (SSD) scan of one sequence for heads [h0, h1). H heads of P channels, G groups of
// B and C (head h reads group h / (H / G)), N = d_state:
//   s[h, p, :] = exp(dt[t, h] * A[h]) * s[h, p, :] + dt[t, h] * x[t, h, p] * B[t, g, :]
//   y[t, h, p] = sum_n s[h, p, n] * C[t, g, n] + D[h] * x[t, h, p]
// x, y (T, ld) with H*P columns; dt (T, lddt) with H; B, C (T, ldbc) with G*N; state (H, P, N).
struct Mamba2ScanArgs {
  int64_t T;
  int64_t H;
  int64_t P;
  int64_t G;
  int64_t N;
  const float* x;
  int64_t ldx;
  const float* dt;
  int64_t lddt;
  const float* B;
  const float* C;
  int64_t ldbc;
  const float* A;
  const float* D;
  float* state;
  float* y;
  int64_t ldy;
};
// Token by token, exactly the recurrence above.
void mamba2_scan(const Mamba2ScanArgs& a, int64_t h0, int64_t h1);
// The chunked SSD form: the same result, computed chunk_size tokens at a time as matrix
// products (intra-chunk "attention-like" part plus the state carried between chunks).
void mamba2_scan_chunked(const Mamba2ScanArgs& a, int64_t h0, int64_t h1, int64_t chunk_size);

// Mamba-2's gated RMSNorm on one token, normalising each of the G groups separately:
//   g = y * silu(z);  g = g / sqrt(mean(g^2 over the group) + eps) * w
// y (n) in place, z (n), w (n), n = G * group size.
void gated_rmsnorm(float* y, const float* z, const float* w, int64_t n, int64_t G, float eps);

}  // namespace mamba::cpu
