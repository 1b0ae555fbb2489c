#include "linear_decode.cuh"
#include "mma.cuh"
#include "rmsnorm.cuh"

#include <cooperative_groups.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace mamba::cuda {
namespace {

constexpr int kWarps = kLinearDecodeWarps;
constexpr int kChunk = 32;  // K values per warp per chunk: 8 per lane column group

// 8 consecutive weights W[row][k .. k+8) as 4 packed pairs; zeros at or past `kend` or M.
template <typename T>
__device__ __forceinline__ void load_w8(const T* __restrict__ W, int64_t M, int64_t K,
                                        int64_t kend, bool vec, int64_t row, int64_t k,
                                        uint32_t (&r)[4]) {
  if (row < M && k + 8 <= kend && vec) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(W + row * K + k));
    r[0] = v.x, r[1] = v.y, r[2] = v.z, r[3] = v.w;
    return;
  }
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(W);  // the raw 16-bit patterns
  uint32_t e[8];
#pragma unroll
  for (int i = 0; i < 8; i++) e[i] = row < M && k + i < kend ? bits[row * K + k + i] : 0u;
#pragma unroll
  for (int i = 0; i < 4; i++) r[i] = e[2 * i] | (e[2 * i + 1] << 16);
}

// 8 consecutive activations x[col][k .. k+8); zeros at or past `kend` or n.
__device__ __forceinline__ void load_f8(const float* __restrict__ x, int64_t ldx, int n,
                                        int64_t kend, bool vec, int col, int64_t k, float (&e)[8]) {
  if (col < n && k + 8 <= kend && vec) {
    const float4 a = *reinterpret_cast<const float4*>(x + col * ldx + k);
    const float4 b = *reinterpret_cast<const float4*>(x + col * ldx + k + 4);
    e[0] = a.x, e[1] = a.y, e[2] = a.z, e[3] = a.w, e[4] = b.x, e[5] = b.y, e[6] = b.z,
    e[7] = b.w;
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) e[i] = col < n && k + i < kend ? x[col * ldx + k + i] : 0.0f;
  }
}

// The same, rounded to T, as 4 packed pairs.
template <typename T>
__device__ __forceinline__ void load_x8(const float* __restrict__ x, int64_t ldx, int n,
                                        int64_t kend, bool vec, int col, int64_t k,
                                        uint32_t (&r)[4]) {
  float e[8];
  load_f8(x, ldx, n, kend, vec, col, k, e);
#pragma unroll
  for (int i = 0; i < 4; i++) r[i] = pack2<T>(e[2 * i], e[2 * i + 1]);
}

// The same for x normed as it is read (NormIn): x * scale * w, rmsnorm_residual's product, then
// rounded; zeros at or past `kend` or n. Four values at a time, to keep the registers of the
// one-row kernel's loop within its 64.
template <typename T>
__device__ __forceinline__ void load_x8_normed(const float* __restrict__ x, int64_t ldx, int n,
                                               int64_t kend, bool vec, int col, int64_t k,
                                               float scale, const float* __restrict__ w,
                                               uint32_t (&r)[4]) {
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int64_t k4 = k + 4 * h;
    float e[4];
    if (col < n && k4 + 4 <= kend && vec) {
      const float4 a = *reinterpret_cast<const float4*>(x + col * ldx + k4);
      const float4 b = *reinterpret_cast<const float4*>(w + k4);
      e[0] = a.x * scale * b.x, e[1] = a.y * scale * b.y, e[2] = a.z * scale * b.z,
      e[3] = a.w * scale * b.w;
    } else {
#pragma unroll
      for (int i = 0; i < 4; i++)
        e[i] = col < n && k4 + i < kend ? x[col * ldx + k4 + i] * scale * w[k4 + i] : 0.0f;
    }
    r[2 * h] = pack2<T>(e[0], e[1]);
    r[2 * h + 1] = pack2<T>(e[2], e[3]);
  }
}

// The K slices of one output tile run as one thread-block cluster, block rank = slice, and
// meet in its blocks' shared memory (Hopper's distributed shared memory): no workspace, no
// fence, no counter. Without clusters (older GPUs) every weight is one slice, and nothing
// calls these.
constexpr int kMaxSplits = 8;  // the portable cluster size
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::this_cluster().sync();
#endif
}
// `p` (this block's shared memory) as it lies in the shared memory of the cluster's block `rank`.
__device__ __forceinline__ const float* cluster_peer(float* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return cooperative_groups::this_cluster().map_shared_rank(p, unsigned(rank));
#else
  return p;
#endif
}

// ((0 + slice 0) + slice 1) + ... of the value at `off` in every slice's buffer, in slice
// order; the loads of all slices are issued together.
__device__ __forceinline__ float sum_slices(const float* const (&peer)[kMaxSplits], int off,
                                            int splits) {
  float t[kMaxSplits];
#pragma unroll
  for (int s = 0; s < kMaxSplits; s++) t[s] = s < splits ? peer[s][off] : 0.0f;
  float v = 0.0f;
#pragma unroll
  for (int s = 0; s < kMaxSplits; s++)
    if (s < splits) v += t[s];
  return v;
}

struct MmaArgs {
  const void* W;
  int64_t M, K;
  bool w_vec;
  const float* x;
  int64_t ldx;
  bool x_vec;
  int n;
  float* y;
  int64_t ldy;
  const float* bias;
  int splits;             // K slices (at most kMaxSplits), one block each, one cluster a tile
  int64_t chunks_per_split;
  const void* x16;        // x rounded to T in gemm_x16_index order, for the staged GEMM
  Out16 y16;              // the staged GEMM's 16-bit copy of y's first y16.gemm_k columns
  FusedConv conv;         // a conv step on some of y's columns, when conv.slots is set
  NormIn norm;            // the one-row kernel: x is h, normed as it is read
  ResidualOut res;        // the one-row kernel: y is h, y += result, and its groups' sums
};

// Output (batch row col, feature row) = v: y, its 16-bit copy, and the fused conv step.
__device__ __forceinline__ void store_out(const MmaArgs& p, int col, int64_t row, float v) {
  p.y[int64_t(col) * p.ldy + row] = v;
  if (p.y16.data && row < p.y16.gemm_k) store16(p.y16, col, row, p.y16.gemm_k, v);
  if (p.conv.slots && row >= p.conv.first && row < p.conv.first + p.conv.conv.dim)
    conv1d_step_one(p.conv.conv, p.conv.slots[col], col, int(row - p.conv.first), v);
}

// Output (batch row col, feature row) = v with a ResidualOut: y (the residual stream, which
// held h_old there) = h_old + v, and the sum of squares of each 16-feature group of the new
// values (rmsnorm.cuh's order). Every lane of the warp calls it, in range or not (the sum is a
// butterfly), lanes 16k .. 16k + 15 holding 16 consecutive features of one batch row, the
// first a multiple of 16.
__device__ __forceinline__ void store_residual(const MmaArgs& p, int col, int64_t row, bool in,
                                               float h_old, float v) {
  float h = 0.0f;
  if (in) {
    h = h_old + v;
    p.y[int64_t(col) * p.ldy + row] = h;
  }
  const float s = sumsq16(h);
  if (in && row % 16 == 0) p.res.sumsq[int64_t(col) * ((p.M + 15) / 16) + row / 16] = s;
}

// Block (row tile of MT*16 features, K slice, batch pass of NT*8 rows). kWarps warps split the
// slice's 32-wide chunks, each warp walking its chunks in order.
//
// Lane (g = lane / 4, c = lane % 4) loads 8 consecutive K values at 8c of each chunk (one
// 16-byte load per weight row). The mma's K index is a permutation of the physical one: step 0
// takes physical {8c..8c+3}, step 1 {8c+4..8c+7}; weights and activations use the same
// permutation, so each step is an exact dot-product piece and the two steps cover the chunk.
//
// Sums, all in a fixed order: chunks in order within a warp, warps in order within a block,
// K slices in order across the tile's cluster.
// (The one-row tile keeps to 64 registers, 8 blocks an SM: 1,056 blocks on 132 SMs, so that
// in_proj's 1,024 blocks at one row are all resident at once. The other tiles name no minimum:
// 0 emits none, and their registers stay as they were; 1 would let <1, 2> grow from 56 to 90.)
template <typename T, int MT, int NT>
__global__ void __launch_bounds__(kWarps * 32, MT * NT == 1 ? 8 : 0)
    linear_decode_mma_kernel(MmaArgs p) {
  pdl_launch_dependents();  // pdl_wait() below, once the first weights are on their way
  constexpr int RT = MT * 16, CT = NT * 8;  // features and batch rows per block
  __shared__ float sum[CT][RT + 1];
  const T* __restrict__ W = static_cast<const T*>(p.W);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int g = lane / 4, c = lane % 4;
  const int64_t row0 = int64_t(blockIdx.x) * RT;
  const int split = int(blockIdx.y);
  const int col0 = int(blockIdx.z) * CT;
  const int64_t ch0 = split * p.chunks_per_split;
  const int64_t ch1 = min((p.K + kChunk - 1) / kChunk, ch0 + p.chunks_per_split);
  const int64_t kend = min(p.K, ch1 * kChunk);

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; mt++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[mt][nt][i] = 0.0f;
  float h_old = 0.0f;  // ResidualOut: h at the output this thread stores, requested early

  if constexpr (NT >= 2) {
    // Batches of more than 8 rows: the block stages the activations of its 4 warps' chunks in
    // shared memory once, rounded to T, instead of every warp reading them from L2. Each warp
    // takes the same chunks in the same order as in the unstaged loop below, so every output's
    // arithmetic is the same whichever branch runs. Rows are padded by 32 values so that the
    // 16-byte fragment reads of lanes g and g + 1 fall on different banks.
    constexpr int kSpan = kWarps * kChunk, kPad = 32;
    __shared__ __align__(16) uint16_t xs[CT][kSpan + kPad];
    pdl_wait();
    for (int64_t cb = ch0; cb < ch1; cb += kWarps) {
      const int64_t ch = cb + warp;
      const int64_t k = ch * kChunk + 8 * c;  // past kend: loads zeros
      uint32_t a[MT][2][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        load_w8(W, p.M, p.K, kend, p.w_vec, row0 + mt * 16 + g, k, a[mt][0]);
        load_w8(W, p.M, p.K, kend, p.w_vec, row0 + mt * 16 + g + 8, k, a[mt][1]);
      }
      __syncthreads();  // every warp is done reading the previous span
      for (int e = int(threadIdx.x); e < CT * (kSpan / 8); e += kWarps * 32) {
        const int r = e / (kSpan / 8), k8 = e % (kSpan / 8);
        uint32_t v[4];
        load_x8<T>(p.x, p.ldx, p.n, kend, p.x_vec, col0 + r, cb * kChunk + 8 * k8, v);
        *reinterpret_cast<uint4*>(&xs[r][8 * k8]) = make_uint4(v[0], v[1], v[2], v[3]);
      }
      __syncthreads();
      if (ch >= ch1) continue;  // warp-uniform; the barriers above are behind every warp
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const uint4 bv = *reinterpret_cast<const uint4*>(&xs[nt * 8 + g][warp * kChunk + 8 * c]);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          mma16816<T>(acc[mt][nt], a[mt][0][0], a[mt][1][0], a[mt][0][1], a[mt][1][1], bv.x,
                      bv.y);
          mma16816<T>(acc[mt][nt], a[mt][0][2], a[mt][1][2], a[mt][0][3], a[mt][1][3], bv.z,
                      bv.w);
        }
      }
    }
  } else {
    // One 8-row batch tile (a single sequence, or a small weight's pass of 8 rows): the weight
    // stream is everything. Each warp keeps two of its chunks in flight and requests a slot's
    // next chunk as soon as the slot has been multiplied. Chunks are multiplied and summed one
    // after another in order. (Measured on the H100, mamba-1.4b shape, batch 1: this rolling
    // pair gives 477 tok/s against 450 for refilling both slots together; keeping 4 or 8
    // chunks in registers gives 450 and 373, as the register count halves the blocks per SM.)
    static_assert(MT == 1 && NT == 1, "the unstaged loop serves one 16 x 8 tile");
    constexpr int kDepth = 2;
    uint32_t a[kDepth][2][4];  // [slot][row g, row g + 8][4 pairs]
    const auto load_a = [&](int slot, int64_t ch) {  // past kend: zeros
      const int64_t k = ch * kChunk + 8 * c;
      load_w8(W, p.M, p.K, kend, p.w_vec, row0 + g, k, a[slot][0]);
      load_w8(W, p.M, p.K, kend, p.w_vec, row0 + g + 8, k, a[slot][1]);
    };
    const int64_t first = ch0 + warp;  // this warp's chunks: first, first + kWarps, ...
    // No kernel writes the weights, so the first ones are requested before waiting for x.
#pragma unroll
    for (int s = 0; s < kDepth; s++) load_a(s, first + s * kWarps);
    pdl_wait();
    if (p.res.sumsq && blockIdx.y == 0) {  // the block (slice 0) that stores the outputs
      const int r = int(threadIdx.x) % RT, q = int(threadIdx.x) / RT;
      if (row0 + r < p.M && col0 + q < p.n) h_old = p.y[int64_t(col0 + q) * p.ldy + row0 + r];
    }
    // NormIn: each batch row's 1 / rms from the groups' sums the previous projection wrote.
    __shared__ float xscale[8];
    if (p.norm.sumsq) {
      const int groups = int((p.K + 15) / 16);
      for (int q = warp; q < 8; q += kWarps) {  // warp-uniform
        const int col = col0 + q;
        const float ss = col < p.n ? sumsq_groups(p.norm.sumsq + int64_t(col) * groups, groups)
                                   : 0.0f;
        if (lane == 0) xscale[q] = rms_scale(ss, int(p.K), p.norm.eps);
      }
      __syncthreads();
    }
    // A single row (n == 1): the warp requests x for 8 of its chunks at once, lane l taking
    // piece l % 4 of chunk l / 4 (the loads and rounding that lane (0, l % 4) would make for
    // that chunk), parks them in shared memory, and each chunk's operand is then one 16-byte
    // shared load. Loading x per chunk put an L2 round trip in front of every chunk's mma (ncu,
    // H100, mamba-1.4b in_proj at one row: 42% of the warps' stall samples waited on them;
    // grouped: mamba-1.4b tg128 555.4 against 532.8 tok/s, docs/benchmarks.md).
    const bool one_row = p.n == 1;  // block-uniform
    __shared__ __align__(16) uint32_t xgroup[kWarps][8 * 4][4];  // [warp][chunk * 4 + piece]
    const auto load_group = [&](int64_t ch) {  // chunks ch, ch + kWarps, ..., ch + 7 kWarps
      const int64_t k = (ch + (lane / 4) * kWarps) * kChunk + 8 * (lane % 4);
      uint32_t v[4];
      if (p.norm.sumsq)  // block-uniform
        load_x8_normed<T>(p.x, p.ldx, p.n, kend, p.x_vec, col0, k, xscale[0], p.norm.w, v);
      else
        load_x8<T>(p.x, p.ldx, p.n, kend, p.x_vec, col0, k, v);
      __syncwarp();  // the previous group's reads are done
      *reinterpret_cast<uint4*>(xgroup[warp][lane]) = make_uint4(v[0], v[1], v[2], v[3]);
      __syncwarp();
    };
    for (int64_t base = first; base < ch1; base += kDepth * kWarps) {
#pragma unroll
      for (int s = 0; s < kDepth; s++) {
        const int64_t ch = base + s * kWarps;
        if (ch >= ch1) break;  // warp-uniform
        uint32_t b[4];
        if (one_row) {
          const int jj = int((ch - first) / kWarps) % 8;  // this chunk's place in its group
          if (jj == 0) load_group(ch);                    // warp-uniform
          // Every g reads row 0's operand: the tile's batch rows 1..7 then hold copies of row
          // 0's sums, which nothing stores (outputs past n are dropped below).
          const uint4 v = *reinterpret_cast<const uint4*>(xgroup[warp][4 * jj + c]);
          b[0] = v.x, b[1] = v.y, b[2] = v.z, b[3] = v.w;
        } else if (p.norm.sumsq) {  // warp-uniform
          load_x8_normed<T>(p.x, p.ldx, p.n, kend, p.x_vec, col0 + g, ch * kChunk + 8 * c,
                            xscale[g], p.norm.w, b);
        } else {
          load_x8<T>(p.x, p.ldx, p.n, kend, p.x_vec, col0 + g, ch * kChunk + 8 * c, b);
        }
        mma16816<T>(acc[0][0], a[s][0][0], a[s][1][0], a[s][0][1], a[s][1][1], b[0], b[1]);
        mma16816<T>(acc[0][0], a[s][0][2], a[s][1][2], a[s][0][3], a[s][1][3], b[2], b[3]);
        if (ch + kDepth * kWarps < ch1) load_a(s, ch + kDepth * kWarps);
      }
    }
  }

  // acc[mt][nt] = {(r, q), (r, q + 1), (r + 8, q), (r + 8, q + 1)}, r = mt*16 + g, q = nt*8 + 2c.
  for (int w = 0; w < kWarps; w++) {
    if (warp == w) {
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
          for (int i = 0; i < 4; i++) {
            const int r = mt * 16 + g + (i >= 2 ? 8 : 0), q = nt * 8 + 2 * c + (i & 1);
            sum[q][r] = w == 0 ? acc[mt][nt][i] : sum[q][r] + acc[mt][nt][i];
          }
    }
    __syncthreads();
  }
  if (p.splits == 1) {
    for (int o = int(threadIdx.x); o < RT * CT; o += kWarps * 32) {
      const int r = o % RT, q = o / RT;
      const int64_t row = row0 + r;
      const int col = col0 + q;
      const bool in = row < p.M && col < p.n;
      const float v = in ? sum[q][r] + (p.bias ? p.bias[row] : 0.0f) : 0.0f;
      if (p.res.sumsq)  // block-uniform; RT * CT is a multiple of the block
        store_residual(p, col, row, in, h_old, v);
      else if (in)
        store_out(p, col, row, v);
    }
    return;
  }
  // Several K slices: block `split` of the tile's cluster adds the slices' sums of every
  // splits-th output, in slice order.
  cluster_sync();  // every slice's sums are in its block's `sum`
  const float* peer[kMaxSplits];
#pragma unroll
  for (int s = 0; s < kMaxSplits; s++) peer[s] = cluster_peer(&sum[0][0], min(s, p.splits - 1));
  for (int o = split * kWarps * 32 + int(threadIdx.x); o < RT * CT; o += p.splits * kWarps * 32) {
    const int r = o % RT, q = o / RT;
    const int64_t row = row0 + r;
    const int col = col0 + q;
    const bool in = row < p.M && col < p.n;
    const float v =
        in ? sum_slices(peer, q * (RT + 1) + r, p.splits) + (p.bias ? p.bias[row] : 0.0f) : 0.0f;
    if (p.res.sumsq)  // block-uniform: the loop runs once in block 0 of the cluster, else never
      store_residual(p, col, row, in, h_old, v);
    else if (in)
      store_out(p, col, row, v);
  }
  cluster_sync();  // no block leaves while another reads its shared memory
}

// ---- Batches of more than 8 rows: a sliced-K GEMM with the same arithmetic ------------------
//
// The kernel above reloads activations per block and keeps one chunk in flight per warp; at 64
// rows it streams weights at a fraction of the memory bandwidth. This one takes x rounded to
// the weight's dtype once (round_x_kernel, the same rounding as load_x8, or the producer of x
// through an Out16), stored in the mma's operand order (gemm_x16_index), then streams the K
// slice through shared memory with cp.async, several stages ahead. A stage is 4 consecutive
// chunks: 256 contiguous bytes of each of the block's weight rows, and the same K range of its
// 64 batch rows. The batch rows are the mma's M and the features its N (the kernel above has
// them the other way round): each lane's weight fragment is then one 16-byte read of 8
// consecutive K values and its activation fragment one 16-byte read in operand order, with no
// register shuffling. The products and the order they are added in are the kernel above's.
//
// It reproduces the kernel above bit for bit, which is what keeps decode batch-invariant. The
// block's 8 warps are (residue j = warp % 4, feature group q = warp / 4): warp (j, q) multiplies
// chunk j of every stage for features q*32 .. q*32+31 and all 64 batch rows, so over the slice
// it takes exactly the chunks that warp j of the kernel above takes (ch0 + j, ch0 + j + 4, ...),
// in the same order, with the same fragment permutation (lane (g, c) holds physical K values
// 8c .. 8c+7 of a chunk, as two mma steps), summed from zero in one register set. The four
// residue warps of a feature group then add their sums in warp order through shared memory,
// ((P0 + P1) + P2) + P3, as the kernel above does, and K slices meet in the tile's cluster in
// slice order.
//
// The tile (64 features x 64 batch rows, 3 stages of 32 KiB, two blocks an SM) was measured on
// the H200 against 128- and 32-feature tiles and against warps that split the batch rows (the
// mamba-1.4b shapes at 16 to 256 rows; docs/benchmarks.md); none changes an output's sum.
// Small weights (x_proj, dt_proj: a few MB, read from L2 after the first batch tile) take a
// tile of 32 features x 32 batch rows instead, so that their few row tiles and slices still
// make enough blocks (measured on the H200 against 16 batch rows: docs/benchmarks.md).
// Batches of 17 to 32 rows take 32 batch rows x 64 features (MidTile; MAMBA_NO_MID_TILE turns
// it off, to compare in one build).
constexpr int kSub = 4;        // chunks per stage, = kWarps: one per residue warp
constexpr int kGemmStages = 3;
template <int MB, int QG>  // MB 16-row batch tiles (the mma's M), QG 32-feature groups
struct GemmTile {
  static constexpr int kMB = MB, kQG = QG;
  static constexpr int kCols = MB * 16;               // batch rows per block
  static constexpr int kRows = QG * 32;               // features per block
  static constexpr int kThreads = kSub * QG * 32;     // warps (residue j, feature group q)
  static constexpr int kW = kRows * kSub * kChunk;    // 16-bit values per stage: [j][row][32]
  static constexpr int kX = kCols * kSub * kChunk;    // [j][16-row block][kGemmX16Block]
  static constexpr int kStageBytes = (kW + kX) * 2;
  static constexpr int kSmem = kGemmStages * kStageBytes;
  static constexpr int kAcc = MB * 4 * 4;             // accumulators per thread
  // The epilogue reuses the stages: the residue sums of warps j > 0, then the block's tile.
  static constexpr int kOutPitch = kRows + 8;  // floats; the float2 fragment stores hit distinct banks
  static constexpr int kRedFloats = (kSub - 1) * (kThreads / kSub) * kAcc;
  static_assert((kRedFloats + kCols * kOutPitch) * 4 <= kSmem);
};
using BigTile = GemmTile<4, 2>;    // 64 batch rows x 64 features, 256 threads
using MidTile = GemmTile<2, 2>;    // 32 batch rows x 64 features, 256 threads
using SmallTile = GemmTile<2, 1>;  // 32 batch rows x 32 features, 128 threads

// x (n, ldx) -> x16 rounded to T (the rounding of load_x8), in the order of gemm_x16_index:
// one thread per 16 bytes of x16, which is one lane's operand of one mma step (4 consecutive K
// values of rows g and g + 8 of a 16-row block). Rows from n up to the next multiple of 16
// are zeros. K % 32 == 0.
template <typename T>
__global__ void round_x_kernel(const float* __restrict__ x, int64_t ldx, bool x_vec, int n,
                               int64_t K, T* __restrict__ x16) {
  pdl_start();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, blocks_k = K / kChunk;
  if (i >= (n + 15) / 16 * blocks_k * 64) return;
  const int64_t blk = i / 64;  // 16 rows x 32 K, 64 pieces of 16 bytes
  const int step = int(i % 64) / 32, lane = int(i % 32), g = lane / 4, c = lane % 4;
  const int64_t row0 = blk / blocks_k * 16 + g, k = blk % blocks_k * kChunk + 8 * c + 4 * step;
  float e[2][4];  // [row g, row g + 8][4 consecutive K values]
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int64_t row = row0 + 8 * h;
    if (row < n && x_vec) {
      const float4 v = *reinterpret_cast<const float4*>(x + row * ldx + k);
      e[h][0] = v.x, e[h][1] = v.y, e[h][2] = v.z, e[h][3] = v.w;
    } else {
#pragma unroll
      for (int t = 0; t < 4; t++) e[h][t] = row < n ? x[row * ldx + k + t] : 0.0f;
    }
  }
  reinterpret_cast<uint4*>(x16)[i] = make_uint4(pack2<T>(e[0][0], e[0][1]),
                                                pack2<T>(e[1][0], e[1][1]),
                                                pack2<T>(e[0][2], e[0][3]),
                                                pack2<T>(e[1][2], e[1][3]));
}

// Block (batch tile of Tile::kCols rows, tile of Tile::kRows features, K slice). Needs
// K % 32 == 0, M * K < 2^31, 16-byte aligned W and x16, and x16 in gemm_x16_index order for the
// rows up to n rounded up to 16.
template <typename T, typename Tile>
__global__ void __launch_bounds__(Tile::kThreads, 2) linear_decode_gemm_kernel(MmaArgs p) {
  constexpr int MB = Tile::kMB;      // 16-row batch tiles: the mma's M
  constexpr int NF = 32 / 8;         // 8-feature tiles of a warp's 32 features: the mma's N
  constexpr int kAcc = Tile::kAcc;   // accumulators per thread
  constexpr int kThreads = Tile::kThreads, kRows = Tile::kRows, kOutPitch = Tile::kOutPitch;
  pdl_launch_dependents();  // pdl_wait() below, once the first weights are on their way
  extern __shared__ __align__(16) unsigned char smem[];
  const T* __restrict__ W = static_cast<const T*>(p.W);
  const T* __restrict__ X = static_cast<const T*>(p.x16);
  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, c = lane % 4;
  const int j = warp % kSub, q = warp / kSub;
  const int col0 = int(blockIdx.x) * Tile::kCols;
  const int row0 = int(blockIdx.y) * kRows;
  const int split = int(blockIdx.z);
  const int K = int(p.K);
  const int ch0 = split * int(p.chunks_per_split);
  const int ch1 = min(K / kChunk, ch0 + int(p.chunks_per_split));
  const int total = ch1 - ch0;
  const int n_stages = (total + kSub - 1) / kSub;

  // The copies, fixed for the whole walk. Weights: lane l of a warp copies 16 bytes, piece
  // l % 4 of chunk l / 8 of row 2 * warp + (l / 4) % 2 (then every kRowStep rows further), so
  // a warp reads 256 contiguous bytes of each of two rows, and each 8 lanes fill 128 contiguous
  // bytes of shared memory (no bank conflicts). Activations: x16's blocks of 16 rows x 32 K are
  // 1 KiB each, contiguous; a stage's kSub * MB blocks are taken in order (chunk-major), 64
  // consecutive threads a block, thread t copying piece t % 64 of every kThreads / 64-th block
  // from block t / 64 on; a round of kThreads / 64 blocks covers whole chunks. Pieces past M, n
  // or the slice land as zeros.
  constexpr int kRowStep = kThreads / 16;
  constexpr int kWPieces = kRows / kRowStep;
  constexpr int kXStep = kThreads / 64;              // x16 blocks copied per round
  constexpr int kXPieces = kSub * MB / kXStep;       // rounds: this thread's pieces per stage
  static_assert(kWPieces >= 1 && kXPieces >= 1 && kXStep % MB == 0 && (kSub * MB) % kXStep == 0);
  const int pw = lane % 4, pj = lane / 8, pr = 2 * warp + (lane / 4) % 2;
  const unsigned rstride = unsigned(kRowStep) * unsigned(K);
  const unsigned w_off = unsigned(row0 + pr) * unsigned(K) + unsigned((ch0 + pj) * kChunk + 8 * pw);
  unsigned w_rows = 0;  // bit t: the thread's piece t is inside M
#pragma unroll
  for (int t = 0; t < kWPieces; t++) w_rows |= unsigned(row0 + pr + t * kRowStep < p.M) << t;
  // Piece t of this thread's x16 copies in a stage: chunk tc0 + t * kXStep / MB of the stage,
  // row block xb (the same for every t).
  const int xr = (tid / 64) % kXStep, xp = tid % 64;  // (% kXStep: the compiler learns xr's range)
  const int tc0 = xr / MB, xb = xr % MB;
  constexpr int kTcStep = kXStep / MB;  // chunks per round
  constexpr unsigned kBlk = kGemmX16Block;  // one 16-row x 32-K block of x16, 1 KiB
  const unsigned x_off =
      (unsigned(col0 / 16 + xb) * unsigned(K / kChunk) + unsigned(ch0 + tc0)) * kBlk +
      unsigned(xp) * 8u;
  const bool x_in = col0 + xb * 16 < p.n;
  const auto stage_ptr = [&](int st) {
    return reinterpret_cast<T*>(smem + st * Tile::kStageBytes);
  };
  const auto copy = [&](int st, int stage, bool weights) {
    const int ch = ch0 + stage * kSub;  // the stage's first chunk
    if (weights) {
      const bool in_k = ch + pj < ch1;
      const unsigned koff = unsigned(stage) * (kSub * kChunk);
      T* dst = stage_ptr(st) + (pj * kRows + pr) * kChunk + 8 * pw;
#pragma unroll
      for (int t = 0; t < kWPieces; t++) {
        const bool ok = in_k && (w_rows >> t & 1u);
        cp_async16(dst + t * kRowStep * kChunk, W + (ok ? w_off + t * rstride + koff : 0u), ok);
      }
    } else {
      T* dst = stage_ptr(st) + Tile::kW + xr * kBlk + xp * 8;
#pragma unroll
      for (int t = 0; t < kXPieces; t++) {
        const bool ok = x_in && ch + tc0 + t * kTcStep < ch1;
        const unsigned src = x_off + unsigned(stage * kSub + t * kTcStep) * kBlk;
        cp_async16(dst + t * kXStep * kBlk, X + (ok ? src : 0u), ok);
      }
    }
  };

  // Prologue: the weights of the first kStages - 1 stages (one group) before waiting for the
  // producer of x16, then their activations (one group per stage). Stage i's weights and
  // activations are then complete once all but the last kStages - 2 groups are, in the
  // prologue as in the loop, where each stage is one group.
#pragma unroll
  for (int s = 0; s < kGemmStages - 1; s++) copy(s, s, true);
  cp_async_commit();
  pdl_wait();
#pragma unroll
  for (int s = 0; s < kGemmStages - 1; s++) {
    copy(s, s, false);
    cp_async_commit();
  }

  float acc[MB][NF][4];  // [16-row batch tile][8-feature tile][fragment]
#pragma unroll
  for (int mb = 0; mb < MB; mb++)
#pragma unroll
    for (int nf = 0; nf < NF; nf++)
#pragma unroll
      for (int i = 0; i < 4; i++) acc[mb][nf][i] = 0.0f;

  for (int i = 0, st = 0; i < n_stages; i++, st = st == kGemmStages - 1 ? 0 : st + 1) {
    cp_async_wait<kGemmStages - 2>();
    __syncthreads();  // stage i has landed for every thread; stage i - 1 is free again
    const int refill = st == 0 ? kGemmStages - 1 : st - 1;
    copy(refill, i + kGemmStages - 1, true);
    copy(refill, i + kGemmStages - 1, false);
    cp_async_commit();
    if (i * kSub + j >= total) continue;  // warp-uniform: past the slice's last chunk
    const T* ws = stage_ptr(st) + (j * kRows + q * 32) * kChunk;
    const T* xs = stage_ptr(st) + Tile::kW + j * MB * kBlk;
    // The weights are the mma's B operand: lane (g, c) reads K 8c .. 8c+7 of feature g of
    // each 8-feature tile, whose pairs 0, 1 are step 0's b0, b1 and pairs 2, 3 step 1's.
    uint4 b[NF];
#pragma unroll
    for (int nf = 0; nf < NF; nf++)
      b[nf] = *reinterpret_cast<const uint4*>(ws + (nf * 8 + g) * kChunk + 8 * c);
#pragma unroll
    for (int mb = 0; mb < MB; mb++)
#pragma unroll
      for (int s = 0; s < 2; s++) {
        // The activations are the A operand, stored in operand order: one 16-byte read.
        const uint4 a = *reinterpret_cast<const uint4*>(xs + mb * kBlk + s * 256 + lane * 8);
#pragma unroll
        for (int nf = 0; nf < NF; nf++)
          mma16816<T>(acc[mb][nf], a.x, a.y, a.z, a.w, s ? b[nf].z : b[nf].x,
                      s ? b[nf].w : b[nf].y);
      }
  }
  cp_async_wait<0>();
  __syncthreads();  // the staging buffers are free

  // Residue warps 1..3 publish their sums; warp (0, q) adds them in order and puts the
  // tile's sums in `out` (64 batch rows x kRows features). Each thread's values go to the same
  // slots in every residue, lane-minor: conflict-free.
  float* red = reinterpret_cast<float*>(smem);
  float* out = red + Tile::kRedFloats;
  const auto slot = [&](int jj, int idx) {
    return (((jj - 1) * Tile::kQG + q) * kAcc + idx) * 32 + lane;
  };
  if (j > 0) {
#pragma unroll
    for (int mb = 0; mb < MB; mb++)
#pragma unroll
      for (int nf = 0; nf < NF; nf++)
#pragma unroll
        for (int i = 0; i < 4; i++) red[slot(j, (mb * NF + nf) * 4 + i)] = acc[mb][nf][i];
  }
  __syncthreads();
  if (j == 0) {
    // acc[mb][nf] = {(b, f), (b, f + 1), (b + 8, f), (b + 8, f + 1)}, batch row b = mb*16 + g,
    // feature f = q*32 + nf*8 + 2c within the block's tile.
#pragma unroll
    for (int mb = 0; mb < MB; mb++)
#pragma unroll
      for (int nf = 0; nf < NF; nf++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          float v[2];
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int i = 2 * h + e;
            v[e] = acc[mb][nf][i];
#pragma unroll
            for (int jj = 1; jj < kSub; jj++) v[e] = v[e] + red[slot(jj, (mb * NF + nf) * 4 + i)];
          }
          const int b = mb * 16 + g + 8 * h, f = q * 32 + nf * 8 + 2 * c;
          *reinterpret_cast<float2*>(&out[b * kOutPitch + f]) = make_float2(v[0], v[1]);
        }
  }
  __syncthreads();

  // Every thread stores the tile, consecutive threads consecutive features (coalesced).
  constexpr int kOut = Tile::kCols * kRows;
  const auto put = [&](int col, int row, float v) { store_out(p, col, row, v); };
  if (p.splits == 1) {
    for (int o = tid; o < kOut; o += kThreads) {
      const int r = o % kRows, b = o / kRows;
      const int row = row0 + r, col = col0 + b;
      if (row < p.M && col < p.n)
        put(col, row, out[b * kOutPitch + r] + (p.bias ? p.bias[row] : 0.0f));
    }
    return;
  }
  // Several K slices: as above, block `split` of the tile's cluster adds the slices' sums of
  // every splits-th group of kThreads outputs, in slice order.
  cluster_sync();
  const float* peer[kMaxSplits];
#pragma unroll
  for (int s = 0; s < kMaxSplits; s++) peer[s] = cluster_peer(out, min(s, p.splits - 1));
  for (int o = split * kThreads + tid; o < kOut; o += p.splits * kThreads) {
    const int r = o % kRows, b = o / kRows;
    const int row = row0 + r, col = col0 + b;
    if (row < p.M && col < p.n)
      put(col, row, sum_slices(peer, b * kOutPitch + r, p.splits) + (p.bias ? p.bias[row] : 0.0f));
  }
  cluster_sync();
}

// f32 weights: warp (feature row); lanes stride K, then a fixed butterfly sum per batch row.
__global__ void linear_decode_f32_kernel(const float* __restrict__ W, int64_t M, int64_t K,
                                         const float* __restrict__ x, int64_t ldx, int n,
                                         float* __restrict__ y, int64_t ldy,
                                         const float* __restrict__ bias) {
  pdl_start();
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = int(threadIdx.x) % 32;
  if (row >= M) return;
  const float* w = W + row * K;
  for (int col = 0; col < n; col++) {
    const float* xr = x + int64_t(col) * ldx;
    float acc = 0.0f;
    for (int64_t k = lane; k < K; k += 32) acc = fmaf(w[k], xr[k], acc);
    acc = warp_sum(acc);
    if (lane == 0) y[int64_t(col) * ldy + row] = acc + (bias ? bias[row] : 0.0f);
  }
}

// Whether the current device launches thread-block clusters, which K slices need.
bool clusters_supported() {
  int dev = 0, v = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrClusterLaunch, dev));
  return v != 0;
}

// How many K slices a weight's reduction is cut into: enough blocks to keep every SM's memory
// pipe busy (the row tiles alone are too few for narrow matrices such as x_proj), but at least
// two chunks per warp, and at most one cluster's worth. A function of W's shape (and of the
// device having clusters), never of the batch. (Measured on the H200: a target of 8 or 16
// blocks per SM instead of 4 slows mamba-1.4b by 10-15%; allowing two chunks per warp instead
// of four speeds mamba-130m up, whose in_proj otherwise has 192 blocks.)
int splits_for(const DeviceMatrix& W) {
  const int64_t tiles = ceil_div(W.rows, 16), chunks = ceil_div(W.cols, kChunk);
  const int64_t want = ceil_div(528, tiles);  // about four blocks per SM on an H100
  const int64_t most = std::max<int64_t>(1, chunks / (2 * kWarps));
  static const bool clusters = clusters_supported();
  if (!clusters) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>({want, most, kMaxSplits})));
}

template <int MT>
int64_t row_tiles(const DeviceMatrix& W) {
  return ceil_div(W.rows, MT * 16);
}

// The kernel arguments; the K split depends on W alone.
MmaArgs mma_args(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                 const float* bias, const LinearDecodeWorkspace& ws, const Out16& y16,
                 const FusedConv& conv, const NormIn& norm = {}, const ResidualOut& res = {}) {
  MmaArgs p;
  p.W = W.data;
  p.M = W.rows;
  p.K = W.cols;
  p.w_vec = W.cols % 8 == 0 && reinterpret_cast<uintptr_t>(W.data) % 16 == 0;
  p.x = x;
  p.ldx = ldx;
  p.x_vec = ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  p.n = n;
  p.y = y;
  p.ldy = ldy;
  p.bias = bias;
  const LinearDecodeSplit split = linear_decode_split(W);
  p.splits = split.splits;
  p.chunks_per_split = split.chunks_per_split;
  p.x16 = ws.x16;
  p.y16 = y16;
  p.conv = conv;
  p.norm = norm;
  p.res = res;
  return p;
}

template <typename T, int MT, int NT>
void launch_mma(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                const float* bias, const LinearDecodeWorkspace& ws, const FusedConv& conv,
                cudaStream_t stream, const NormIn& norm = {}, const ResidualOut& res = {}) {
  const MmaArgs p = mma_args(W, x, ldx, n, y, ldy, bias, ws, {}, conv, norm, res);
  const dim3 grid(unsigned(row_tiles<MT>(W)), unsigned(p.splits), unsigned(ceil_div(n, NT * 8)));
  launch_pdl_cluster(linear_decode_mma_kernel<T, MT, NT>, grid, dim3(1, unsigned(p.splits), 1),
                     dim3(kWarps * 32), 0, stream, p);
}

template <typename T, typename Tile>
void launch_gemm(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                 int64_t ldy, const float* bias, const LinearDecodeWorkspace& ws,
                 cudaStream_t stream, bool x_rounded, const Out16& y16,
                 const FusedConv& conv) {
  static const bool smem_set = [] {  // more than the default 48 KiB of shared memory
    CUDA_CHECK(cudaFuncSetAttribute(linear_decode_gemm_kernel<T, Tile>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, Tile::kSmem));
    return true;
  }();
  (void)smem_set;
  const MmaArgs p = mma_args(W, x, ldx, n, y, ldy, bias, ws, y16, conv);
  const int64_t pieces = ceil_div(n, 16) * (W.cols / kChunk) * 64;
  if (!x_rounded)  // else the producer of x wrote x16 (the same rounding, element by element)
    launch_pdl(round_x_kernel<T>, dim3(unsigned(ceil_div(pieces, 256))), dim3(256), 0, stream, x,
               ldx, p.x_vec, n, W.cols, static_cast<T*>(ws.x16));
  // Batch tiles fastest, so the blocks that share a weight tile run together and read it from
  // HBM once.
  const dim3 grid(unsigned(ceil_div(n, Tile::kCols)), unsigned(ceil_div(W.rows, Tile::kRows)),
                  unsigned(p.splits));
  launch_pdl_cluster(linear_decode_gemm_kernel<T, Tile>, grid, dim3(1, 1, unsigned(p.splits)),
                     dim3(Tile::kThreads), Tile::kSmem, stream, p);
}

// The tile shape by batch size: one 8-row batch tile for a single sequence (the weight stream
// dominates); above 8 rows the staged GEMM, when the shapes and alignment allow its 16-byte
// copies (with the small tile for small weights), else more weight tiles per block as n grows
// so each block reuses its activations (32 features per block beat 64 there: 4 tiles need 220
// registers, so fewer blocks fit).
enum class Path { kOneSeq, kGemm, kGemmMid, kGemmSmall, kWide };
Path path_for(const DeviceMatrix& W, int n, const LinearDecodeWorkspace& ws) {
  const int64_t x16_elems = ceil_div(n, 16) * 16 * W.cols;
  const bool gemm_ok = W.cols % kChunk == 0 && reinterpret_cast<uintptr_t>(W.data) % 16 == 0 &&
                       ws.x16 && reinterpret_cast<uintptr_t>(ws.x16) % 16 == 0 &&
                       ws.x16_elems >= size_t(x16_elems) && x16_elems < (int64_t(1) << 31) &&
                       ceil_div(W.rows, SmallTile::kRows) <= 65535 &&
                       W.rows * W.cols < (int64_t(1) << 31);
  // Small weights (x_proj, dt_proj: a few MB, read from L2 after the first batch tile) take
  // the small tile, or else the one-sequence kernel once per 8 rows.
  const bool small = W.rows * W.cols * 2 <= (int64_t(4) << 20);
  if (n <= 8) return Path::kOneSeq;
  if (small) return gemm_ok ? Path::kGemmSmall : Path::kOneSeq;
  // Up to 32 rows the 32-row tile: the 64-row one would multiply and reduce as many zero rows
  // as real ones (measured on the H100, mamba-1.4b tg128 x32: 11,513 against 10,845 tok/s).
  static const bool no_mid = std::getenv("MAMBA_NO_MID_TILE") != nullptr;  // A/B in one build
  if (gemm_ok && n <= 32 && !no_mid) return Path::kGemmMid;
  return gemm_ok ? Path::kGemm : Path::kWide;
}

template <typename T>
void dispatch(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
              const float* bias, const LinearDecodeWorkspace& ws, cudaStream_t stream,
              bool x_rounded, const Out16& y16, const FusedConv& conv, const NormIn& norm,
              const ResidualOut& res) {
  const Path path = path_for(W, n, ws);
  if (path == Path::kOneSeq)
    launch_mma<T, 1, 1>(W, x, ldx, n, y, ldy, bias, ws, conv, stream, norm, res);
  else if (path == Path::kGemm)
    launch_gemm<T, BigTile>(W, x, ldx, n, y, ldy, bias, ws, stream, x_rounded, y16, conv);
  else if (path == Path::kGemmMid)
    launch_gemm<T, MidTile>(W, x, ldx, n, y, ldy, bias, ws, stream, x_rounded, y16, conv);
  else if (path == Path::kGemmSmall)
    launch_gemm<T, SmallTile>(W, x, ldx, n, y, ldy, bias, ws, stream, x_rounded, y16, conv);
  else if (n <= 16)
    launch_mma<T, 1, 2>(W, x, ldx, n, y, ldy, bias, ws, conv, stream);
  else if (n <= 32)
    launch_mma<T, 2, 4>(W, x, ldx, n, y, ldy, bias, ws, conv, stream);
  else
    launch_mma<T, 2, 8>(W, x, ldx, n, y, ldy, bias, ws, conv, stream);
}

}  // namespace

LinearDecodeSplit linear_decode_split(const DeviceMatrix& W) {
  const int64_t chunks = ceil_div(W.cols, kChunk);
  LinearDecodeSplit s;
  s.chunks_per_split = ceil_div(chunks, splits_for(W));
  s.splits = int(ceil_div(chunks, s.chunks_per_split));  // no empty slice
  return s;
}

LinearDecodeNeeds linear_decode_needs(const DeviceMatrix& W, int n) {
  LinearDecodeNeeds need;
  if (W.dtype == gguf::DType::F32 || n <= 0) return need;
  if (n > 8 && W.cols % kChunk == 0) need.x16_elems = size_t(ceil_div(n, 16) * 16 * W.cols);
  return need;
}

bool linear_decode_reads_x16(const DeviceMatrix& W, int n, const LinearDecodeWorkspace& ws) {
  if ((W.dtype != gguf::DType::F16 && W.dtype != gguf::DType::BF16) || n <= 0) return false;
  const Path path = path_for(W, n, ws);
  return path == Path::kGemm || path == Path::kGemmMid || path == Path::kGemmSmall;
}

void linear_decode(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                   int64_t ldy, const float* bias, const LinearDecodeWorkspace& ws,
                   cudaStream_t stream, bool x_rounded, const Out16& y16,
                   const FusedConv& conv, const NormIn& norm, const ResidualOut& res) {
  require(W.data && x && y, "linear_decode", "null pointer");
  require(W.rows > 0 && W.cols > 0 && n >= 0 && n <= 65535, "linear_decode", "bad shape");
  require(ldx >= W.cols && ldy >= W.rows, "linear_decode", "bad leading dimension");
  require(ceil_div(W.rows, 16) <= INT32_MAX, "linear_decode", "too many rows");
  if (n == 0) return;
  require(!x_rounded || linear_decode_reads_x16(W, n, ws), "linear_decode",
          "x_rounded where this weight and batch size do not read x16");
  require(!y16.data || (linear_decode_reads_x16(W, n, ws) && y16.gemm_k > 0 &&
                        y16.gemm_k % kChunk == 0 && y16.gemm_k <= W.rows && y16.data != ws.x16),
          "linear_decode",
          "y16 where this weight and batch size do not run the staged GEMM, or a bad y16");
  if (conv.slots) {
    require(W.dtype == gguf::DType::F16 || W.dtype == gguf::DType::BF16, "linear_decode",
            "a fused conv needs f16 or bf16 weights");
    require(conv.first >= 0 && conv.first + conv.conv.dim <= W.rows, "linear_decode",
            "fused conv columns outside the output");
    conv1d_step_check(conv.conv, n, conv.slots, "linear_decode (fused conv)");
  }
  if (norm.sumsq || res.sumsq) {
    require(n <= 8 && (W.dtype == gguf::DType::F16 || W.dtype == gguf::DType::BF16),
            "linear_decode", "a NormIn or ResidualOut needs at most 8 rows and 16-bit weights");
  }
  require(!norm.sumsq || !x_rounded, "linear_decode", "a NormIn with x_rounded");
  require(!res.sumsq || (!y16.data && !conv.slots), "linear_decode",
          "a ResidualOut with y16 or a fused conv");
  if (norm.sumsq)
    require(norm.w && reinterpret_cast<uintptr_t>(norm.w) % 16 == 0 && ldx >= W.cols,
            "linear_decode", "NormIn needs a 16-byte aligned norm weight");
  if (res.sumsq)
    require(x != y && ldy >= W.rows, "linear_decode", "ResidualOut with y aliasing x");
  switch (W.dtype) {
    case gguf::DType::F16:
      dispatch<__half>(W, x, ldx, n, y, ldy, bias, ws, stream, x_rounded, y16, conv, norm, res);
      break;
    case gguf::DType::BF16:
      dispatch<__nv_bfloat16>(W, x, ldx, n, y, ldy, bias, ws, stream, x_rounded, y16, conv,
                              norm, res);
      break;
    case gguf::DType::F32:
      launch_pdl(linear_decode_f32_kernel, dim3(unsigned(ceil_div(W.rows, kWarps))),
                 dim3(kWarps * 32), 0, stream, static_cast<const float*>(W.data), W.rows, W.cols, x,
                 ldx, n, y, ldy, bias);
      break;
    default:
      fail("linear_decode: unsupported weight dtype ", gguf::dtype_name(W.dtype));
  }
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
