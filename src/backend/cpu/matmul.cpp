// y = x w^T for a weight matrix w (N, K) in the model file and activations x (T, K).
//
// Both operands have K contiguous, so every output is a dot product of two rows. The kernel
// computes a tile of TT tokens x NN weight rows at once: each step along K loads NN weight
// vectors and TT activation vectors and does TT*NN fused multiply-adds into TT*NN vector
// accumulators, so every load feeds several FMAs. At the end each accumulator is summed
// across its lanes.
//
// Decode (T = 1) is the same kernel with TT = 1: it streams the weights once, NN rows side
// by side, and is limited by memory bandwidth; the threads take runs of rows.
// Prefill (T > 1) is limited by FMA throughput: the weight rows of a tile (NN * K values,
// a few KB) stay in L1 while the kernel walks down a block of up to ~512 KB of tokens in L2.
// f16 / bf16 weights are widened to f32 as they are loaded (F16C, or a 16-bit shift for
// bf16); in prefill, once per block of NN rows rather than once per tile.
//
// Determinism: output (t, n) always accumulates k = lane, lane + W, lane + 2W, ... in lane
// `lane` of one accumulator, then sums the lanes in a fixed order. Tiling, T and the thread
// split only decide which outputs are computed together, never how one is computed.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/simd.h"
#include "common/error.h"

namespace mamba::cpu {

using namespace simd;

namespace {

constexpr int kTT = 4;                            // tokens per tile
constexpr int kNN = 6;                            // weight rows per tile
constexpr int64_t kTokenBlockBytes = 512 * 1024;  // activations kept in L2 per pass over w

// How a weight element type becomes a float vector.
struct F32 {
  using T = float;
  static V load(const T* p) { return simd::load(p); }
  static V load_n(const T* p, int n) { return simd::load_n(p, n); }
};
struct F16 {
  using T = uint16_t;
  static V load(const T* p) { return load_f16(p); }
  static V load_n(const T* p, int n) { return load_f16_n(p, n); }
};
struct BF16 {
  using T = uint16_t;
  static V load(const T* p) { return load_bf16(p); }
  static V load_n(const T* p, int n) { return load_bf16_n(p, n); }
};

struct TileArgs {
  const void* w;   // row 0 of the tile
  int64_t K;       // row length (= stride) of w
  const float* x;  // token 0 of the tile
  int64_t ldx;
  float* y;  // y[0, 0] of the tile
  int64_t ldy;
  const float* bias;  // bias[0] of the tile or null
  bool accumulate;
};

// Keeps v in a register. Without it GCC tends to fold the loads into the FMAs as memory
// operands, loading each vector NN (or TT) times instead of once.
inline void pin(V& v) {
#if defined(__GNUC__) && (defined(__AVX2__) || defined(__AVX512F__))
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

template <class L, int TT, int NN>
void tile(const TileArgs& a) {
  const auto* w = static_cast<const typename L::T*>(a.w);
  const int64_t K = a.K;
  V acc[TT][NN];
  for (int t = 0; t < TT; t++)
    for (int n = 0; n < NN; n++) acc[t][n] = zero();

  int64_t k = 0;
  for (; k + W <= K; k += W) {
    V wv[NN];
    for (int n = 0; n < NN; n++) {
      wv[n] = L::load(w + n * K + k);
      pin(wv[n]);
    }
    for (int t = 0; t < TT; t++) {
      V xv = load(a.x + t * a.ldx + k);
      pin(xv);
      for (int n = 0; n < NN; n++) acc[t][n] = fmadd(xv, wv[n], acc[t][n]);
    }
  }
  if (k < K) {  // the last K % W columns: zero-filled lanes add nothing
    const int r = int(K - k);
    V wv[NN];
    for (int n = 0; n < NN; n++) wv[n] = L::load_n(w + n * K + k, r);
    for (int t = 0; t < TT; t++) {
      const V xv = load_n(a.x + t * a.ldx + k, r);
      for (int n = 0; n < NN; n++) acc[t][n] = fmadd(xv, wv[n], acc[t][n]);
    }
  }

  for (int t = 0; t < TT; t++) {
    float* y = a.y + t * a.ldy;
    for (int n = 0; n < NN; n++) {
      float v = reduce_add(acc[t][n]);
      if (a.bias) v += a.bias[n];
      y[n] = a.accumulate ? y[n] + v : v;
    }
  }
}

using TileFn = void (*)(const TileArgs&);

// table[tt - 1][nn - 1] = tile<L, tt, nn>, so edge tiles get a kernel of their exact size.
template <class L>
struct Tiles {
  TileFn fn[kTT][kNN];
  Tiles() { fill(std::make_integer_sequence<int, kTT * kNN>{}); }
  template <int... I>
  void fill(std::integer_sequence<int, I...>) {
    ((fn[I / kNN][I % kNN] = &tile<L, I / kNN + 1, I % kNN + 1>), ...);
  }
};

// Rows [n0, n1) of y = x w^T.
template <class L>
void matmul_rows(const Matrix& w, const float* x, int64_t ldx, int64_t T, float* y, int64_t ldy,
                 const float* bias, bool accumulate, int64_t n0, int64_t n1) {
  static const Tiles<L> tiles;
  static const Tiles<F32> tiles_f32;
  const auto* wd = static_cast<const typename L::T*>(w.data);
  const int64_t K = w.cols;
  const int64_t token_block = std::max<int64_t>(kTT, kTokenBlockBytes / (K * 4) / kTT * kTT);
  // With 16-bit weights and several token tiles, each block of kNN rows is widened to f32
  // once and then reused by every tile, instead of being converted again for each one. The
  // widening is exact, so the results are the same bits either way.
  const bool widen = !std::is_same_v<L, F32> && T > kTT;
  thread_local std::vector<float> wide;
  if (widen) wide.resize(size_t(kNN * K));
  for (int64_t t0 = 0; t0 < T; t0 += token_block) {
    const int64_t t1 = std::min(T, t0 + token_block);
    for (int64_t n = n0; n < n1; n += kNN) {
      const int nn = int(std::min<int64_t>(kNN, n1 - n));
      const void* rows = wd + n * K;
      TileFn const* fns = tiles.fn[0];
      if (widen) {
        for (int64_t i = 0; i < nn * K; i += W) {
          const int m = int(std::min<int64_t>(W, nn * K - i));
          const V v = m == W ? L::load(wd + n * K + i) : L::load_n(wd + n * K + i, m);
          store_n(wide.data() + i, v, m);
        }
        rows = wide.data();
        fns = tiles_f32.fn[0];
      }
      for (int64_t t = t0; t < t1; t += kTT) {
        const int tt = int(std::min<int64_t>(kTT, t1 - t));
        TileArgs a{rows,      K, x + t * ldx, ldx, y + t * ldy + n, ldy, bias ? bias + n : nullptr,
                   accumulate};
        fns[(tt - 1) * kNN + (nn - 1)](a);
      }
    }
  }
}

}  // namespace

void matmul(ThreadPool& pool, const Matrix& w, const float* x, int64_t ldx, int64_t T, float* y,
            int64_t ldy, const float* bias, bool accumulate) {
  if (T <= 0 || w.rows <= 0) return;
  // Parts are runs of weight rows: each part streams its rows of w exactly once.
  pool.parallel_for(w.rows, kNN, [&](int64_t n0, int64_t n1) {
    switch (w.dtype) {
      case gguf::DType::F32:
        matmul_rows<F32>(w, x, ldx, T, y, ldy, bias, accumulate, n0, n1);
        break;
      case gguf::DType::F16:
        matmul_rows<F16>(w, x, ldx, T, y, ldy, bias, accumulate, n0, n1);
        break;
      case gguf::DType::BF16:
        matmul_rows<BF16>(w, x, ldx, T, y, ldy, bias, accumulate, n0, n1);
        break;
    }
  });
}

}  // namespace mamba::cpu
