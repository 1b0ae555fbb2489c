// The element-wise, normalisation, convolution and scan kernels (matmul is in matmul.cpp).
#include "backend/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/simd.h"

namespace mamba::cpu {

using namespace simd;

namespace {
// A vector of the m <= W floats at p (the full-width load when m == W).
inline V load_m(const float* p, int m) { return m == W ? load(p) : load_n(p, m); }
inline void store_m(float* p, V v, int m) {
  if (m == W)
    store(p, v);
  else
    store_n(p, v, m);
}
}  // namespace

void rmsnorm(const float* x, int64_t n, const float* w, float eps, float* out) {
  // variance = x.pow(2).mean(-1)
  V acc = zero();
  for (int64_t i = 0; i < n; i += W) {
    const V v = load_m(x + i, int(std::min<int64_t>(W, n - i)));
    acc = fmadd(v, v, acc);
  }
  const float mean = reduce_add(acc) / float(n);
  // x = x * torch.rsqrt(variance + eps); x = weight * x
  const V scale = set1(1.0f / std::sqrt(mean + eps));
  for (int64_t i = 0; i < n; i += W) {
    const int m = int(std::min<int64_t>(W, n - i));
    V v = mul(load_m(x + i, m), scale);
    if (w) v = mul(v, load_m(w + i, m));
    store_m(out + i, v, m);
  }
}

void conv1d_silu(const float* x, int64_t ldx, int64_t T, int64_t c0, int64_t c1, const float* w_t,
                 const float* bias, int64_t d_conv, int64_t C, float* state, float* out,
                 int64_t ldo) {
  const int64_t S = d_conv - 1;  // rows of state
  // Row i of the window: the state for i < S, then the new inputs.
  auto window = [&](int64_t i, int64_t c) {
    return i < S ? state + i * C + c : x + (i - S) * ldx + c;
  };
  for (int64_t c = c0; c < c1; c += W) {
    const int m = int(std::min<int64_t>(W, c1 - c));
    const V b = load_m(bias + c, m);
    for (int64_t t = 0; t < T; t++) {
      // out[t] = silu(bias + sum_k w[k] * window[t + k])
      V acc = b;
      for (int64_t k = 0; k < d_conv; k++)
        acc = fmadd(load_m(w_t + k * C + c, m), load_m(window(t + k, c), m), acc);
      store_m(out + t * ldo + c, silu(acc), m);
    }
    // conv_state = window[-(d_conv - 1):]. Rows are read at or after the row being written,
    // so this is safe in place even when T < d_conv - 1 and part of the old state remains.
    for (int64_t j = 0; j < S; j++) store_m(state + j * C + c, load_m(window(T + j, c), m), m);
  }
}

void dt_softplus(float* dt, const float* bias, int64_t n, float lo, float hi) {
  // dt = softplus(dt + dt_bias); dt = clamp(dt, time_step_min, time_step_max)
  for (int64_t i = 0; i < n; i += W) {
    const int m = int(std::min<int64_t>(W, n - i));
    V v = softplus(add(load_m(dt + i, m), load_m(bias + i, m)));
    v = min(max(v, set1(lo)), set1(hi));
    store_m(dt + i, v, m);
  }
}

void mul_silu(float* x, const float* z, int64_t n) {
  // y = y * silu(z)
  for (int64_t i = 0; i < n; i += W) {
    const int m = int(std::min<int64_t>(W, n - i));
    store_m(x + i, mul(load_m(x + i, m), silu(load_m(z + i, m))), m);
  }
}

void gated_rmsnorm(float* y, const float* z, const float* w, int64_t n, int64_t G, float eps) {
  mul_silu(y, z, n);  // hidden = hidden * silu(gate)
  const int64_t gs = n / G;
  for (int64_t g = 0; g < G; g++) rmsnorm(y + g * gs, gs, w + g * gs, eps, y + g * gs);
}

// ---- selective scans ----------------------------------------------------------------------
//
// Both scans walk one row of state (the N values of one channel) through all T tokens with
// the row held in registers: NV vectors of W lanes, a compile-time count so the compiler
// keeps them in registers. N larger than kMaxNV vectors is done in several blocks of n.
// y[t] is the sum of the blocks' partial dot products in block order, then + D * x.

namespace {

constexpr int kMaxNV = 8;

// Mamba-1, channel c, state entries [n0, n0 + len).
template <int NV>
void mamba1_block(const Mamba1ScanArgs& a, int64_t c, int64_t n0, int64_t len, bool first,
                  bool last) {
  int m[NV];
  V A[NV], s[NV];
  float* st = a.state + c * a.N + n0;
  for (int i = 0; i < NV; i++) {
    m[i] = int(std::min<int64_t>(W, len - i * W));
    A[i] = load_m(a.A + c * a.N + n0 + i * W, m[i]);
    s[i] = load_m(st + i * W, m[i]);
  }
  for (int64_t t = 0; t < a.T; t++) {
    const float dt = a.dt[t * a.lddt + c];
    const float x = a.x[t * a.ldx + c];
    const float* B = a.B + t * a.ldbc + n0;
    const float* C = a.C + t * a.ldbc + n0;
    const V vdt = set1(dt), vdtx = set1(dt * x);
    V acc = zero();
    for (int i = 0; i < NV; i++) {
      // dA = exp(dt * A);  state = dA * state + dt * x * B
      const V dA = exp(mul(vdt, A[i]));
      s[i] = fmadd(dA, s[i], mul(vdtx, load_m(B + i * W, m[i])));
      // y = state @ C
      acc = fmadd(s[i], load_m(C + i * W, m[i]), acc);
    }
    float* y = a.y + t * a.ldy + c;
    const float part = reduce_add(acc);
    *y = first ? part : *y + part;
    if (last) *y += a.D[c] * x;  // y = y + x * D
  }
  for (int i = 0; i < NV; i++) store_m(st + i * W, s[i], m[i]);
}

// Mamba-2, channel p of head h, state entries [n0, n0 + len). dA (T) = exp(dt * A[h]).
template <int NV>
void mamba2_block(const Mamba2ScanArgs& a, int64_t h, int64_t p, const float* dA, int64_t n0,
                  int64_t len, bool first, bool last) {
  const int64_t g = h / (a.H / a.G);
  const int64_t col = h * a.P + p;
  int m[NV];
  V s[NV];
  float* st = a.state + col * a.N + n0;
  for (int i = 0; i < NV; i++) {
    m[i] = int(std::min<int64_t>(W, len - i * W));
    s[i] = load_m(st + i * W, m[i]);
  }
  for (int64_t t = 0; t < a.T; t++) {
    const float x = a.x[t * a.ldx + col];
    const float* B = a.B + t * a.ldbc + g * a.N + n0;
    const float* C = a.C + t * a.ldbc + g * a.N + n0;
    const V vdA = set1(dA[t]), vdtx = set1(a.dt[t * a.lddt + h] * x);
    V acc = zero();
    for (int i = 0; i < NV; i++) {
      // state = exp(dt * A) * state + dt * x * B
      s[i] = fmadd(vdA, s[i], mul(vdtx, load_m(B + i * W, m[i])));
      // y = state @ C
      acc = fmadd(s[i], load_m(C + i * W, m[i]), acc);
    }
    float* y = a.y + t * a.ldy + col;
    const float part = reduce_add(acc);
    *y = first ? part : *y + part;
    if (last) *y += a.D[h] * x;  // y = y + x * D
  }
  for (int i = 0; i < NV; i++) store_m(st + i * W, s[i], m[i]);
}

// Calls body<nv>(n0, len, first, last) for each block of at most kMaxNV vectors of N.
template <class Body>
void for_blocks(int64_t N, Body&& body) {
  constexpr int64_t kBlock = int64_t(kMaxNV) * W;
  for (int64_t n0 = 0; n0 < N; n0 += kBlock) {
    const int64_t len = std::min(kBlock, N - n0);
    const bool first = n0 == 0, last = n0 + kBlock >= N;
    switch ((len + W - 1) / W) {
      case 1:
        body(std::integral_constant<int, 1>{}, n0, len, first, last);
        break;
      case 2:
        body(std::integral_constant<int, 2>{}, n0, len, first, last);
        break;
      case 3:
        body(std::integral_constant<int, 3>{}, n0, len, first, last);
        break;
      case 4:
        body(std::integral_constant<int, 4>{}, n0, len, first, last);
        break;
      case 5:
        body(std::integral_constant<int, 5>{}, n0, len, first, last);
        break;
      case 6:
        body(std::integral_constant<int, 6>{}, n0, len, first, last);
        break;
      case 7:
        body(std::integral_constant<int, 7>{}, n0, len, first, last);
        break;
      default:
        body(std::integral_constant<int, 8>{}, n0, len, first, last);
        break;
    }
  }
}

}  // namespace

void mamba1_scan(const Mamba1ScanArgs& a, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c++)
    for_blocks(a.N, [&](auto nv, int64_t n0, int64_t len, bool first, bool last) {
      mamba1_block<decltype(nv)::value>(a, c, n0, len, first, last);
    });
}

void mamba2_scan(const Mamba2ScanArgs& a, int64_t h0, int64_t h1) {
  std::vector<float> dA(static_cast<size_t>(a.T));
  for (int64_t h = h0; h < h1; h++) {
    for (int64_t t = 0; t < a.T; t++) dA[size_t(t)] = std::exp(a.dt[t * a.lddt + h] * a.A[h]);
    for (int64_t p = 0; p < a.P; p++)
      for_blocks(a.N, [&](auto nv, int64_t n0, int64_t len, bool first, bool last) {
        mamba2_block<decltype(nv)::value>(a, h, p, dA.data(), n0, len, first, last);
      });
  }
}

// Chunked SSD. Within a chunk of L tokens, with a[t] = dt[t] * A[h] and the cumulative sum
// cum[t] = a[0] + ... + a[t] (the log of the decay from the chunk start to t):
//   y[t]   = exp(cum[t]) * C[t] . state_in                            (the carried state)
//          + sum_{s <= t} (C[t] . B[s]) * exp(cum[t] - cum[s]) * dt[s] * x[s]   (in-chunk)
//          + D * x[t]
//   state_out = exp(cum[L-1]) * state_in + sum_s exp(cum[L-1] - cum[s]) * dt[s] * x[s] B[s]^T
// This is the recurrence unrolled; the in-chunk part is a masked (L x L) matrix times x, which
// is what makes it fast on matrix hardware. cum is summed in double so that the differences
// cum[t] - cum[s] keep full float precision even when cum itself is large.
void mamba2_scan_chunked(const Mamba2ScanArgs& a, int64_t h0, int64_t h1, int64_t chunk_size) {
  const int64_t N = a.N, P = a.P;
  const int64_t Lmax = std::min(chunk_size, a.T);
  std::vector<double> cum(static_cast<size_t>(Lmax));
  std::vector<float> M(static_cast<size_t>(Lmax * Lmax));  // (L, L) lower-triangular mixing matrix
  std::vector<float> carry(static_cast<size_t>(Lmax));     // exp(cum[t])
  std::vector<float> decay(static_cast<size_t>(Lmax));     // exp(cum[L-1] - cum[s]) * dt[s]
  auto dot = [](const float* u, const float* v, int64_t n) {
    V acc = zero();
    for (int64_t i = 0; i < n; i += W) {
      const int m = int(std::min<int64_t>(W, n - i));
      acc = fmadd(load_m(u + i, m), load_m(v + i, m), acc);
    }
    return reduce_add(acc);
  };
  for (int64_t h = h0; h < h1; h++) {
    const int64_t g = h / (a.H / a.G);
    float* state = a.state + h * P * N;  // (P, N)
    for (int64_t c0 = 0; c0 < a.T; c0 += chunk_size) {
      const int64_t L = std::min(chunk_size, a.T - c0);
      const float* dt = a.dt + c0 * a.lddt + h;
      const float* x = a.x + c0 * a.ldx + h * P;
      const float* B = a.B + c0 * a.ldbc + g * N;
      const float* C = a.C + c0 * a.ldbc + g * N;
      float* y = a.y + c0 * a.ldy + h * P;
      double acc = 0;
      for (int64_t t = 0; t < L; t++) {
        acc += double(dt[t * a.lddt] * a.A[h]);
        cum[size_t(t)] = acc;
      }
      for (int64_t t = 0; t < L; t++) {
        carry[size_t(t)] = std::exp(float(cum[size_t(t)]));
        decay[size_t(t)] = std::exp(float(cum[size_t(L - 1)] - cum[size_t(t)])) * dt[t * a.lddt];
        for (int64_t s = 0; s <= t; s++)
          M[size_t(t * L + s)] = dot(C + t * a.ldbc, B + s * a.ldbc, N) *
                                 std::exp(float(cum[size_t(t)] - cum[size_t(s)])) * dt[s * a.lddt];
      }
      // y before the state is overwritten: it needs state_in.
      for (int64_t t = 0; t < L; t++)
        for (int64_t p = 0; p < P; p++) {
          float v = carry[size_t(t)] * dot(C + t * a.ldbc, state + p * N, N);
          for (int64_t s = 0; s <= t; s++) v += M[size_t(t * L + s)] * x[s * a.ldx + p];
          y[t * a.ldy + p] = v + a.D[h] * x[t * a.ldx + p];
        }
      const V total = set1(carry[size_t(L - 1)]);
      for (int64_t p = 0; p < P; p++)
        for (int64_t n = 0; n < N; n += W) {
          const int m = int(std::min<int64_t>(W, N - n));
          V s = mul(total, load_m(state + p * N + n, m));
          for (int64_t t = 0; t < L; t++)
            s = fmadd(set1(decay[size_t(t)] * x[t * a.ldx + p]), load_m(B + t * a.ldbc + n, m), s);
          store_m(state + p * N + n, s, m);
        }
    }
  }
}

}  // namespace mamba::cpu
