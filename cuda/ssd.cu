#include "ssd.cuh"

#include <type_traits>

#include <algorithm>
#include <cstdint>

namespace mamba::cuda {
namespace {

constexpr int Q = kSsdChunk;
static_assert(Q == 64, "the warp layouts below cover a chunk with four 16-row tiles");
constexpr int kThreads = 128;      // four warps in chunk_state (and its cb blocks)
constexpr int kScanThreads = 256;  // eight in chunk_scan, to hide the latency of its inner loops
constexpr int kSlice = 64;         // head_dim columns a chunk_scan or chunk_state block covers
constexpr int kStateCols = 64;     // d_state columns a chunk_state block covers

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }
// The smallest leading dimension >= n that is r modulo 32 floats. A warp reads an mma
// fragment as 8 rows x 4 columns (r = 4) or 4 rows x 8 columns (r = 8) of a shared tile;
// with that stagger the 32 reads hit 32 different banks. Both values keep rows 16-byte
// aligned for cp.async.
__host__ __device__ constexpr int pad_ld(int n, int r) {
  return r + round_up(n > r ? n - r : 0, 32);
}

// ---- split-TF32 tensor-core products --------------------------------------------------------
// A float32 value v is split into hi = tf32(v) and lo = tf32(v - hi). hi*hi + hi*lo + lo*hi
// recovers the product to about float32 precision (the lo*lo term is below it), at three
// tensor-core products per tile instead of one. Operands are split as a warp reads its
// fragments, so shared memory holds each operand once, in float32.
//
// hi is rounded to nearest with integer operations (add half a TF32 ulp, clear the 13 low
// bits); lo = v - hi is exact in float32 and goes in as it is: the tensor cores read only a
// TF32 value's top 19 bits, truncating lo by at most 2^-21 |v|. cvt.rna.tf32 would do the
// same at a fraction of the ALU throughput, and these splits are most of the inner loops.
__device__ __forceinline__ void split_tf32(float v, uint32_t& hi, uint32_t& lo) {
  hi = (__float_as_uint(v) + 0x1000u) & 0xffffe000u;
  lo = __float_as_uint(v - __uint_as_float(hi));
}

// d (16 x 8) += a (16 x 8) b (8 x 8)
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Warp-level acc[i][j] (16 x 8 tile) += A_i (16 x K) B_j (K x 8) over k in [0, k_end[i]),
// k_end[i] a multiple of 8. a(i, r, k) is row r of A_i, b(j, k, c) column c of B_j. Per lane,
// accumulator element e of a tile sits at row lane/4 + 8 (e / 2), column 2 (lane % 4) + e % 2.
template <int MT, int NT, class FA, class FB>
__device__ __forceinline__ void warp_mma_3xtf32(float (&acc)[MT][NT][4], const int (&k_end)[MT],
                                                FA a, FB b) {
  const int lane = int(threadIdx.x) & 31, gr = lane >> 2, tc = lane & 3;
  int k_max = 0;
#pragma unroll
  for (int i = 0; i < MT; i++) k_max = max(k_max, k_end[i]);
#pragma unroll 4
  for (int k = 0; k < k_max; k += 8) {
    uint32_t bh[NT][2], bl[NT][2];
#pragma unroll
    for (int j = 0; j < NT; j++) {
      split_tf32(b(j, k + tc, gr), bh[j][0], bl[j][0]);
      split_tf32(b(j, k + tc + 4, gr), bh[j][1], bl[j][1]);
    }
#pragma unroll
    for (int i = 0; i < MT; i++) {
      if (k >= k_end[i]) continue;  // warp-uniform
      uint32_t ah[4], al[4];
      split_tf32(a(i, gr, k + tc), ah[0], al[0]);
      split_tf32(a(i, gr + 8, k + tc), ah[1], al[1]);
      split_tf32(a(i, gr, k + tc + 4), ah[2], al[2]);
      split_tf32(a(i, gr + 8, k + tc + 4), ah[3], al[3]);
#pragma unroll
      for (int j = 0; j < NT; j++) {
        mma_tf32(acc[i][j], al, bh[j][0], bh[j][1]);  // small terms first
        mma_tf32(acc[i][j], ah, bl[j][0], bl[j][1]);
        mma_tf32(acc[i][j], ah, bh[j][0], bh[j][1]);
      }
    }
  }
}

// Calls f(i, j, r, c, v) for every accumulator element v a lane holds of a warp's MT x NT
// tiles: v sits at row r (0..15), column c (0..7) of tile (i, j).
template <int MT, int NT, class F>
__device__ __forceinline__ void each_acc(float (&acc)[MT][NT][4], F f) {
  const int lane = int(threadIdx.x) & 31;
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++)
        f(i, j, (lane >> 2) + 8 * (e >> 1), 2 * (lane & 3) + (e & 1), acc[i][j][e]);
}

// ---- asynchronous staging -------------------------------------------------------------------
// Zero-filled copies: a source size of 0 writes zeros and reads nothing, which pads partial
// chunks and head_dim / d_state up to the tile sizes without branches around the copy.

__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  const unsigned d = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(d), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
  const unsigned d = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait_group() {  // all but the kPending newest groups
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

// dst (rows, ld) <- src (rows, lds) where r < rv and c < cv, zeros elsewhere. vec: 16-byte
// copies, allowed when src and lds keep every row 16-byte aligned and cols, cv are multiples
// of 4. src is only dereferenced inside (rv, cv).
template <int kBlock = kThreads>
__device__ __forceinline__ void stage_tile(float* dst, int ld, const float* src, int64_t lds,
                                           int rows, int cols, int rv, int cv, bool vec) {
  if (vec) {
    const int c4 = cols / 4;
    for (int i = int(threadIdx.x); i < rows * c4; i += kBlock) {
      const int r = i / c4, c = (i % c4) * 4;
      const bool v = r < rv && c < cv;
      cp_async16(dst + r * ld + c, v ? src + r * lds + c : src, v);
    }
  } else {
    for (int i = int(threadIdx.x); i < rows * cols; i += kBlock) {
      const int r = i / cols, c = i % cols;
      const bool v = r < rv && c < cv;
      cp_async4(dst + r * ld + c, v ? src + r * lds + c : src, v);
    }
  }
}

// Which inputs allow 16-byte copies (decided on the host: pointers, strides and widths).
struct VecOk {
  bool x, bc, states, cb;
};

struct ChunkPos {
  int seq, chunk, n_rows;
  int64_t row0;  // first activation row of the chunk
  bool valid;
};
__device__ __forceinline__ ChunkPos chunk_pos(const SeqBatch& batch) {
  ChunkPos c;
  c.chunk = blockIdx.x;
  c.seq = blockIdx.y;
  const int t_begin = batch.start[c.seq];
  const int len = batch.start[c.seq + 1] - t_begin;
  c.valid = c.chunk * Q < len;
  c.n_rows = c.valid ? min(Q, len - c.chunk * Q) : 0;
  c.row0 = int64_t(t_begin) + int64_t(c.chunk) * Q;
  return c;
}

// ---- step 0: dt and the decay sums ---------------------------------------------------------
// One warp, for head h over the chunk's rows: dt_s (Q) = clamp(softplus(dt + dt_bias)) and
// cs_s (Q) = running sum of dt * A from the start of the chunk (inclusive), in shared memory.
// Padding rows get dt = 0 and so the last real sum. With dt_ws set, the real rows also go to
// dt_ws, cs_ws (n_tok, H) for the pass and chunk_scan.
__device__ __forceinline__ void chunk_dt(const SsdParams& p, const ChunkPos& c, int h,
                                         float* dt_s, float* cs_s, float* dt_ws, float* cs_ws) {
  const int H = p.n_heads, lane = int(threadIdx.x) & 31;
  const float bias = p.dt_bias[h], a = p.A[h];
  // Both 32-row halves are loaded before the first is scanned, so the strided loads overlap.
  float raw[Q / 32];
#pragma unroll
  for (int half = 0; half < Q / 32; half++) {
    const int l = half * 32 + lane;
    raw[half] = l < c.n_rows ? p.dt[(c.row0 + l) * p.lddt + h] : 0.0f;
  }
  float carry = 0.0f;
#pragma unroll
  for (int half = 0; half < Q / 32; half++) {
    const int l = half * 32 + lane;
    // dt = clamp(softplus(dt + dt_bias), dt_min, dt_max)
    const float dt =
        l < c.n_rows ? fminf(fmaxf(softplus(raw[half] + bias), p.dt_min), p.dt_max) : 0.0f;
    float cum = dt * a;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {  // inclusive warp scan
      const float v = __shfl_up_sync(0xffffffffu, cum, o);
      if (lane >= o) cum += v;
    }
    cum += carry;
    dt_s[l] = dt;
    cs_s[l] = cum;
    if (dt_ws && l < c.n_rows) {
      dt_ws[(c.row0 + l) * H + h] = dt;
      cs_ws[(c.row0 + l) * H + h] = cum;
    }
    carry = __shfl_sync(0xffffffffu, cum, 31);
  }
}

// ---- C B^T, once per group ------------------------------------------------------------------
// Block (chunk, seq, group * 4 + row tile) of chunk_state's grid: rows [16 rt, 16 rt + 16) of
// cb (Q, Q) = C B^T of the chunk, which every head of the group shares. Rows and columns past
// the end of the sequence come out as zeros.
__device__ __forceinline__ void cb_block(const SsdParams& p, const ChunkPos& c, int g, int rt,
                                         float* __restrict__ cb, int max_chunks, VecOk vec,
                                         float* smem) {
  const int N = p.d_state;
  const int Nk = round_up(N, 8), ld = pad_ld(Nk, 4);
  float* out = cb + ((int64_t(c.seq) * max_chunks + c.chunk) * p.n_groups + g) * (Q * Q) +
               rt * 16 * Q;  // (16, Q)
  if (rt * 16 >= c.n_rows) {
    for (int i = int(threadIdx.x); i < 16 * Q; i += kThreads) out[i] = 0.0f;
    return;
  }
  float* Cs = smem;          // (16, ld)
  float* Bs = Cs + 16 * ld;  // (Q, ld)
  const int64_t col0 = int64_t(g) * N;
  stage_tile(Cs, ld, p.C + (c.row0 + rt * 16) * p.ldbc + col0, p.ldbc, 16, Nk,
             c.n_rows - rt * 16, N, vec.bc);
  stage_tile(Bs, ld, p.B + c.row0 * p.ldbc + col0, p.ldbc, Q, Nk, c.n_rows, N, vec.bc);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  // Warp w: columns [16 w, 16 w + 16). B^T read from B's rows.
  const int warp = int(threadIdx.x) >> 5;
  float acc[1][2][4] = {};
  const int k_end[1] = {Nk};
  warp_mma_3xtf32(
      acc, k_end, [&](int, int r, int k) { return Cs[r * ld + k]; },
      [&](int j, int k, int col) { return Bs[(warp * 16 + j * 8 + col) * ld + k]; });
  each_acc(acc, [&](int, int j, int r, int col, float v) {
    out[r * Q + warp * 16 + j * 8 + col] = v;
  });
}

// ---- step 2: each chunk's own final state ---------------------------------------------------
// Block (chunk, seq, 4 G + head * slices + slice): a (kSlice, kStateCols) slice of
//   states[chunk] (P, N) = (w o X)^T (P, Q) B (Q, N),   w[l] = dt[l] exp(cs[last] - cs[l]),
// the decay from step l to the end of the chunk folded into X's rows. Each block computes its
// head's dt and decay sums itself (warp 0, while X and B are in flight); the first slice
// publishes them. The first 4 G blocks compute cb instead. One launch for the three saves two
// kernel latencies, which at these sizes cost as much as the work.
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_state_kernel(SsdParams p, SeqBatch batch, float* __restrict__ dt_ws,
                           float* __restrict__ cs_ws, float* __restrict__ states,
                           float* __restrict__ cb, int max_chunks, VecOk vec) {
  extern __shared__ __align__(16) float smem[];
  const ChunkPos c = chunk_pos(batch);
  if (!c.valid) return;
  const int H = p.n_heads, P = p.head_dim, N = p.d_state;
  if (int(blockIdx.z) < 4 * p.n_groups) {
    cb_block(p, c, int(blockIdx.z) / 4, int(blockIdx.z) % 4, cb, max_chunks, vec, smem);
    return;
  }
  const int z = int(blockIdx.z) - 4 * p.n_groups;
  const int n_slices = (N + kStateCols - 1) / kStateCols;
  const int slices = (P + kSlice - 1) / kSlice * n_slices;
  const int h = z / slices, sl = z % slices;
  const int g = h / (H / p.n_groups);
  const int p0 = sl / n_slices * kSlice, n0 = sl % n_slices * kStateCols;
  constexpr int ldx = pad_ld(kSlice, 8), ldb = pad_ld(kStateCols, 8);
  float* Xs = smem;              // (Q, ldx) columns [p0, p0 + kSlice) of the head's x
  float* Bs = Xs + Q * ldx;      // (Q, ldb) columns [n0, n0 + kStateCols) of the group's B
  float* dt_s = Bs + Q * ldb;    // (Q)
  float* cs_s = dt_s + Q;        // (Q)
  float* w_s = cs_s + Q;         // (Q)
  stage_tile(Xs, ldx, p.x + c.row0 * p.ldx + int64_t(h) * P + p0, p.ldx, Q, kSlice, c.n_rows,
             P - p0, vec.x);
  stage_tile(Bs, ldb, p.B + c.row0 * p.ldbc + int64_t(g) * N + n0, p.ldbc, Q, kStateCols,
             c.n_rows, N - n0, vec.bc);
  cp_async_commit();
  if (threadIdx.x < 32) chunk_dt(p, c, h, dt_s, cs_s, sl == 0 ? dt_ws : nullptr, cs_ws);
  cp_async_wait_all();
  __syncthreads();
  if (int(threadIdx.x) < Q) {
    const int l = int(threadIdx.x);
    w_s[l] = l < c.n_rows ? dt_s[l] * expf(cs_s[c.n_rows - 1] - cs_s[l]) : 0.0f;
  }
  __syncthreads();

  // Warp w: the 32 x 32 tile at rows 32 (w / 2), columns 32 (w % 2) of the slice.
  const int warp = int(threadIdx.x) >> 5;
  const int wr0 = (warp >> 1) * 32, wc0 = (warp & 1) * 32;
  float acc[2][4][4] = {};
  const int k_end[2] = {Q, Q};
  // X^T is X read down its columns.
  warp_mma_3xtf32(
      acc, k_end, [&](int i, int r, int l) { return Xs[l * ldx + wr0 + i * 16 + r] * w_s[l]; },
      [&](int j, int l, int col) { return Bs[l * ldb + wc0 + j * 8 + col]; });
  float* out = states + ((int64_t(c.seq) * max_chunks + c.chunk) * H + h) * int64_t(P) * N;
  each_acc(acc, [&](int i, int j, int r, int col, float v) {
    const int pr = p0 + wr0 + 16 * i + r, n = n0 + wc0 + 8 * j + col;
    if (pr < P && n < N) out[int64_t(pr) * N + n] = v;
  });
}

// ---- step 3: pass the state along the chunks ------------------------------------------------
// Thread (4 elements of (P, N), head, seq). Replaces each chunk's own final state with the state
// entering that chunk, and leaves the state after the last chunk in the slot. The pass is pure
// memory traffic, so each thread moves 16-byte vectors and issues the loads of kPassBatch
// chunks before the dependent updates: one 4-byte load in flight per thread cannot keep HBM
// busy.
constexpr int kPassBatch = 4;

struct Vec4 {
  float v[4];
};
__device__ __forceinline__ Vec4 load4(const float* ptr, int cnt, bool vec) {
  Vec4 r{};
  if (vec) {
    const float4 t = *reinterpret_cast<const float4*>(ptr);
    r.v[0] = t.x, r.v[1] = t.y, r.v[2] = t.z, r.v[3] = t.w;
  } else {
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (i < cnt) r.v[i] = ptr[i];
  }
  return r;
}
__device__ __forceinline__ void store4(float* ptr, const Vec4& r, int cnt, bool vec) {
  if (vec) {
    *reinterpret_cast<float4*>(ptr) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else {
#pragma unroll
    for (int i = 0; i < 4; i++)
      if (i < cnt) ptr[i] = r.v[i];
  }
}

__global__ void ssd_state_pass_kernel(SsdParams p, SeqBatch batch, const float* __restrict__ cs_ws,
                                      float* __restrict__ states, int max_chunks, bool vec) {
  const int seq = blockIdx.z, h = blockIdx.y, H = p.n_heads;
  const int64_t PN = int64_t(p.head_dim) * p.d_state;
  const int64_t e = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (e >= PN) return;
  const int cnt = int(min(int64_t(4), PN - e));
  const bool v4 = vec && cnt == 4;
  const int t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - t_begin;
  float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride + h * PN + e;
  Vec4 s = load4(st, cnt, v4);
  const int n_chunks = (len + Q - 1) / Q;
  float* own_k = states + (int64_t(seq) * max_chunks * H + h) * PN + e;  // chunk 0
  const int64_t chunk_stride = int64_t(H) * PN;
  for (int k0 = 0; k0 < n_chunks; k0 += kPassBatch) {
    Vec4 own[kPassBatch];
    float decay[kPassBatch];
#pragma unroll
    for (int u = 0; u < kPassBatch; u++) {
      const int k = k0 + u;
      if (k < n_chunks) {
        own[u] = load4(own_k + u * chunk_stride, cnt, v4);
        // cs at the chunk's last row
        decay[u] = expf(cs_ws[(int64_t(t_begin) + min(len, (k + 1) * Q) - 1) * H + h]);
      }
    }
#pragma unroll
    for (int u = 0; u < kPassBatch; u++) {
      if (k0 + u < n_chunks) {
        store4(own_k + u * chunk_stride, s, cnt, v4);
#pragma unroll
        for (int i = 0; i < 4; i++) s.v[i] = decay[u] * s.v[i] + own[u].v[i];
      }
    }
    own_k += kPassBatch * chunk_stride;
  }
  store4(st, s, cnt, v4);
}

// ---- steps 1 and 4: the outputs -------------------------------------------------------------
// Block (chunk, seq, group * head_blocks + head block) covers heads_per_block heads of one
// group, each in slices of kSlice channels. Per head:
//   M = cb o decay o dt   (Q, Q), decay[l, s] = exp(cs[l] - cs[s]) for s <= l, else 0
//   Y = exp(cs) o (C S_in^T) + M X + D x     (Q, P)
// C is staged once for all the block's heads (exp(cs) scales the rows of C S_in^T rather than
// C); cb, computed once per group, is copied in per head and turned into M in place.
__global__ void __launch_bounds__(kScanThreads, 2)
    ssd_chunk_scan_kernel(SsdParams p, SeqBatch batch, const float* __restrict__ dt_ws,
                          const float* __restrict__ cs_ws, const float* __restrict__ states,
                          const float* __restrict__ cb, int max_chunks, int heads_per_block,
                          VecOk vec) {
  extern __shared__ __align__(16) float smem[];
  const ChunkPos c = chunk_pos(batch);
  if (!c.valid) return;
  const int H = p.n_heads, P = p.head_dim, N = p.d_state;
  const int hpg = H / p.n_groups;
  const int head_blocks = (hpg + heads_per_block - 1) / heads_per_block;
  const int g = int(blockIdx.z) / head_blocks;
  const int h0 = g * hpg + int(blockIdx.z) % head_blocks * heads_per_block;
  const int h1 = min(h0 + heads_per_block, (g + 1) * hpg);
  const int Nk = round_up(N, 8), ldc = pad_ld(Nk, 4);
  constexpr int ldm = pad_ld(Q, 4), ldx = pad_ld(kSlice, 8);
  float* Cs = smem;               // (Q, ldc)
  float* Ms = Cs + Q * ldc;       // (Q, ldm) the group's cb, turned into this head's M
  float* Ss = Ms + Q * ldm;       // (kSlice, ldc) rows [p0, p0 + kSlice) of the state entering
  float* Xs = Ss + kSlice * ldc;  // (Q, ldx) columns [p0, p0 + kSlice) of the head's x
  float* cs_s = Xs + Q * ldx;     // (Q)
  float* dt_s = cs_s + Q;         // (Q)
  float* ecs_s = dt_s + Q;        // (Q) exp(cs)

  const int64_t chunk_id = int64_t(c.seq) * max_chunks + c.chunk;
  const float* cb_g = cb + (chunk_id * p.n_groups + g) * (Q * Q);  // (Q, Q)
  const int n_slices = (P + kSlice - 1) / kSlice;
  const int n_units = (h1 - h0) * n_slices;  // (head, slice) pairs, one after another
  const auto stage_state = [&](int u) {      // S_in of unit u
    const int h = h0 + u / n_slices, p0 = u % n_slices * kSlice;
    stage_tile<kScanThreads>(Ss, ldc,
                             states + (chunk_id * H + h) * int64_t(P) * N + int64_t(p0) * N, N,
                             kSlice, Nk, P - p0, N, vec.states);
    cp_async_commit();
  };
  // Two copy groups per unit, so that loads overlap the products: S_in of the next unit goes
  // in during this unit's M X, and this unit's cb, X, cs, dt during its C S_in^T.
  stage_tile<kScanThreads>(Cs, ldc, p.C + c.row0 * p.ldbc + int64_t(g) * N, p.ldbc, Q, Nk,
                           c.n_rows, N, vec.bc);
  stage_state(0);  // one group with C

  const int warp = int(threadIdx.x) >> 5;
  // Warp w: row tiles w / 4 and 3 - w / 4 (equal causal work in M X), columns
  // [16 (w % 4), 16 (w % 4) + 16) of the slice.
  const int rt[2] = {warp >> 2, 3 - (warp >> 2)};
  const int col0 = (warp & 3) * 16;
  const int64_t ldy = int64_t(H) * P;
  for (int u = 0; u < n_units; u++) {
    const int h = h0 + u / n_slices, p0 = u % n_slices * kSlice;
    __syncthreads();  // everyone is done with the previous unit's Ms, Xs (and ecs_s)
    // cb from L2: every head of the group reads it.
    stage_tile<kScanThreads>(Ms, ldm, cb_g, Q, Q, Q, Q, Q, vec.cb);
    stage_tile<kScanThreads>(Xs, ldx, p.x + c.row0 * p.ldx + int64_t(h) * P + p0, p.ldx, Q,
                             kSlice, c.n_rows, P - p0, vec.x);
    stage_tile<kScanThreads>(cs_s, 1, cs_ws + c.row0 * H + h, H, Q, 1, c.n_rows, 1, false);
    stage_tile<kScanThreads>(dt_s, 1, dt_ws + c.row0 * H + h, H, Q, 1, c.n_rows, 1, false);
    cp_async_commit();
    cp_async_wait_group<1>();  // S_in (and C) are in; cb, X, cs, dt may still be in flight
    __syncthreads();

    float acc[2][2][4] = {};
    const int k_state[2] = {Nk, Nk};
    // S_in^T is S_in read along its rows.
    warp_mma_3xtf32(
        acc, k_state, [&](int i, int r, int k) { return Cs[(rt[i] * 16 + r) * ldc + k]; },
        [&](int j, int k, int col) { return Ss[(col0 + j * 8 + col) * ldc + k]; });
    __syncthreads();  // everyone is done with Ss
    if (u + 1 < n_units) {
      stage_state(u + 1);
      cp_async_wait_group<1>();
    } else {
      cp_async_wait_group<0>();
    }
    __syncthreads();
    // Padding rows and columns take the last real decay sum (their dt is 0), so every exp()
    // below is <= 1. Each thread rewrites only its own elements of Ms.
    const int last = c.n_rows - 1;
    for (int i = int(threadIdx.x); i < Q * Q; i += kScanThreads) {
      const int l = i / Q, s = i % Q;
      float& m = Ms[l * ldm + s];  // mask before exp can overflow
      m = s <= l ? m * expf(cs_s[min(l, last)] - cs_s[min(s, last)]) * dt_s[s] : 0.0f;
    }
    if (int(threadIdx.x) < Q) ecs_s[threadIdx.x] = expf(cs_s[min(int(threadIdx.x), last)]);
    __syncthreads();

    each_acc(acc, [&](int i, int, int r, int, float& v) { v *= ecs_s[rt[i] * 16 + r]; });
    // M is causal: row tile t needs s < 16 (t + 1) only.
    const int k_causal[2] = {(rt[0] + 1) * 16, (rt[1] + 1) * 16};
    warp_mma_3xtf32(
        acc, k_causal,
        [&](int i, int r, int s) { return Ms[(rt[i] * 16 + r) * ldm + s]; },
        [&](int j, int s, int col) { return Xs[s * ldx + col0 + j * 8 + col]; });

    const float Dh = p.D[h];
    each_acc(acc, [&](int i, int j, int r, int cc, float v) {
      const int l = rt[i] * 16 + r, col = col0 + j * 8 + cc;
      if (l < c.n_rows && p0 + col < P)
        p.y[(c.row0 + l) * ldy + int64_t(h) * P + p0 + col] = v + Dh * Xs[l * ldx + col];
    });
  }
}
// ---- decode ---------------------------------------------------------------------------------
// One warp per (row, head, channel), lanes over the state index, so the state is read and
// written in coalesced rows; a block holds kStepWarps channels of one head. Decode is latency
// bound, so the grid is made wide (H * P / kStepWarps blocks per row) rather than deep.
//
// Lane l owns V consecutive entries (V = 4: 16-byte accesses) at V * (l + 32 r) for rounds r.
// A batch of rounds (128 entries: 4 values a lane) is held in registers at once, its loads all
// requested before its first store: a loop that stored entry n before loading entry n + 32
// would wait one round trip per round, since B and C might alias the state as far as the
// compiler knows. The first batch of the state is requested before the PDL wait: a decode step
// starts with the copies of its tokens and slots, which wait for all earlier work, and within
// the step only this kernel writes the layer's SSM state. The sum over the state runs over a
// lane's entries in order (round, then vector element), then the warp's butterfly.
constexpr int kStepWarps = 4;

template <int V>
__global__ void ssd_step_kernel(SsdParams p, const int32_t* __restrict__ slots) {
  pdl_launch_dependents();
  using Vec = std::conditional_t<V == 4, float4, float>;
  constexpr int R = 4 / V;  // rounds in registers: 4 values a lane per array
  const int P = p.head_dim, N = p.d_state, H = p.n_heads;
  const int p_blocks = (P + kStepWarps - 1) / kStepWarps;
  const int h = blockIdx.x / p_blocks, row = blockIdx.y;
  const int g = h / (H / p.n_groups);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = (blockIdx.x % p_blocks) * kStepWarps + warp;  // this warp's channel
  if (j >= P) return;  // whole warps only; no block-wide sync below
  float* sj = p.state.base + int64_t(slots[row]) * p.state.slot_stride +
              (int64_t(h) * P + j) * N;
  Vec s[R];
  const auto load_state = [&](int base) {
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int n = base + V * (lane + 32 * r);
      if (n < N) s[r] = *reinterpret_cast<const Vec*>(sj + n);
    }
  };
  load_state(0);
  pdl_wait();
  const float dt = fminf(
      fmaxf(softplus(p.dt[int64_t(row) * p.lddt + h] + p.dt_bias[h]), p.dt_min), p.dt_max);
  const float dA = expf(dt * p.A[h]);
  const float* B = p.B + int64_t(row) * p.ldbc + int64_t(g) * N;
  const float* C = p.C + int64_t(row) * p.ldbc + int64_t(g) * N;
  const float xv = p.x[int64_t(row) * p.ldx + int64_t(h) * P + j], dtx = dt * xv;
  float acc = 0.0f;
  for (int base = 0; base < N; base += 32 * V * R) {
    if (base > 0) load_state(base);
    Vec b[R], c[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int n = base + V * (lane + 32 * r);
      if (n < N) {
        b[r] = *reinterpret_cast<const Vec*>(B + n);
        c[r] = *reinterpret_cast<const Vec*>(C + n);
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
      const int n = base + V * (lane + 32 * r);
      if (n >= N) break;
      float* sv = reinterpret_cast<float*>(&s[r]);
      const float* bv = reinterpret_cast<const float*>(&b[r]);
      const float* cv = reinterpret_cast<const float*>(&c[r]);
#pragma unroll
      for (int i = 0; i < V; i++) {
        // h = exp(dt * A) * h + dt * B * x;  y += h . C
        sv[i] = dA * sv[i] + dtx * bv[i];
        acc += sv[i] * cv[i];
      }
      *reinterpret_cast<Vec*>(sj + n) = s[r];
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) p.y[int64_t(row) * H * P + int64_t(h) * P + j] = acc + p.D[h] * xv;
}

void check(const SsdParams& p, const char* op) {
  require(p.x && p.B && p.C && p.dt && p.dt_bias && p.A && p.D && p.y && p.state.base, op,
          "null pointer");
  require(p.n_heads > 0 && p.head_dim > 0 && p.d_state > 0 && p.n_groups > 0 &&
              p.n_heads % p.n_groups == 0,
          op, "bad heads or groups");
  require(p.ldx >= int64_t(p.n_heads) * p.head_dim &&
              p.ldbc >= int64_t(p.n_groups) * p.d_state && p.lddt >= p.n_heads,
          op, "bad leading dimension");
  require(p.state.slot_stride >= int64_t(p.n_heads) * p.head_dim * p.d_state, op,
          "bad state stride");
}

struct WorkspaceLayout {
  size_t dt, cs, states, cb, total;  // float offsets, each a multiple of 64
  int max_chunks;
};
WorkspaceLayout workspace_layout(const SsdParams& p, const SeqBatch& batch) {
  const auto up64 = [](size_t v) { return (v + 63) / 64 * 64; };
  WorkspaceLayout w;
  w.max_chunks = int(ceil_div(batch.max_len, Q));
  const size_t per_row = size_t(round_up(std::max(p.n_heads, 1), 64));
  const size_t chunks = size_t(batch.n_seq) * w.max_chunks;
  w.dt = 0;
  w.cs = w.dt + size_t(batch.n_tok) * per_row;
  w.states = w.cs + size_t(batch.n_tok) * per_row;
  w.cb = w.states + up64(chunks * p.n_heads * size_t(p.head_dim) * p.d_state);
  w.total = w.cb + chunks * p.n_groups * size_t(Q * Q);
  return w;
}

int device_attribute(cudaDeviceAttr attr) {
  int dev = 0, v = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
  return v;
}

// Dynamic shared memory of each kernel, in bytes.
size_t cb_smem(int N) { return size_t(16 + Q) * pad_ld(round_up(N, 8), 4) * sizeof(float); }
size_t state_smem() {
  return size_t(Q * pad_ld(kSlice, 8) + Q * pad_ld(kStateCols, 8) + 3 * Q) * sizeof(float);
}
size_t scan_smem(int N) {
  const int ldc = pad_ld(round_up(N, 8), 4);
  return size_t(Q * ldc + Q * pad_ld(Q, 4) + kSlice * ldc + Q * pad_ld(kSlice, 8) + 3 * Q) *
         sizeof(float);
}

template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes, size_t limit, const SsdParams& p) {
  if (bytes <= 48 * 1024) return;
  if (bytes > limit)
    fail("ssd_prefill: d_state ", p.d_state, " needs more shared memory than the device has (",
         bytes, " > ", limit, " bytes)");
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

size_t ssd_workspace_bytes(const SsdParams& p, const SeqBatch& batch) {
  // Only the shapes matter here; a zero n_groups would size the C*B^T region at nothing.
  require(p.n_heads > 0 && p.head_dim > 0 && p.d_state > 0 && p.n_groups > 0 &&
              p.n_heads % p.n_groups == 0,
          "ssd_workspace_bytes", "bad heads or groups");
  return workspace_layout(p, batch).total * sizeof(float);
}

void ssd_prefill(const SsdParams& p, const SeqBatch& batch, void* workspace,
                 size_t workspace_bytes, cudaStream_t stream) {
  check(p, "ssd_prefill");
  require(batch.start && batch.slots && batch.n_seq >= 0 && batch.n_seq <= 65535 &&
              batch.max_len >= 0 && batch.n_tok >= batch.max_len,
          "ssd_prefill", "bad batch");
  require(p.n_heads <= 65535, "ssd_prefill", "too many heads");
  if (batch.n_seq == 0 || batch.max_len == 0) return;
  const WorkspaceLayout w = workspace_layout(p, batch);
  require(workspace && workspace_bytes >= w.total * sizeof(float), "ssd_prefill",
          "workspace too small (see ssd_workspace_bytes)");
  const int H = p.n_heads, P = p.head_dim, N = p.d_state, G = p.n_groups;
  const size_t limit = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  const size_t state_cb_smem = std::max(state_smem(), cb_smem(N));
  allow_smem(ssd_chunk_state_kernel, state_cb_smem, limit, p);
  allow_smem(ssd_chunk_scan_kernel, scan_smem(N), limit, p);

  float* ws = static_cast<float*>(workspace);
  float* dt_ws = ws + w.dt;
  float* cs_ws = ws + w.cs;
  float* states = ws + w.states;
  float* cb = ws + w.cb;
  VecOk vec;
  vec.x = aligned16(p.x) && p.ldx % 4 == 0 && P % 4 == 0;
  vec.bc = aligned16(p.B) && aligned16(p.C) && p.ldbc % 4 == 0 && N % 4 == 0;
  vec.states = aligned16(workspace) && N % 4 == 0;
  vec.cb = aligned16(workspace);
  const unsigned n_seq = unsigned(batch.n_seq), max_chunks = unsigned(w.max_chunks);

  const int64_t slices = ceil_div(P, kSlice) * ceil_div(N, kStateCols);
  require(4 * int64_t(G) + H * slices <= 65535, "ssd_prefill", "too many heads");
  ssd_chunk_state_kernel<<<dim3(max_chunks, n_seq, unsigned(4 * G + H * slices)), kThreads,
                           state_cb_smem, stream>>>(p, batch, dt_ws, cs_ws, states, cb,
                                                    w.max_chunks, vec);
  CUDA_CHECK(cudaGetLastError());
  const int64_t PN = int64_t(P) * N;
  const bool pass_vec = PN % 4 == 0 && p.state.slot_stride % 4 == 0 &&
                        aligned16(p.state.base) && aligned16(workspace);
  ssd_state_pass_kernel<<<dim3(unsigned(ceil_div(PN, 4 * 256)), unsigned(H), n_seq), 256, 0,
                          stream>>>(p, batch, cs_ws, states, w.max_chunks, pass_vec);
  CUDA_CHECK(cudaGetLastError());
  // Heads per block: more share C's staging, fewer spread over more SMs. Cost model: waves of
  // resident blocks times (heads + 1 for C) per block; ties go to more heads.
  const int hpg = H / G;
  const int64_t chunk_groups = int64_t(max_chunks) * n_seq * G;
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ssd_chunk_scan_kernel,
                                                           kScanThreads, scan_smem(N)));
  const int64_t resident =
      std::max(1, per_sm) * int64_t(device_attribute(cudaDevAttrMultiProcessorCount));
  int heads_per_block = 1;
  int64_t best = INT64_MAX;
  for (int hb = 1; hb <= std::min(8, hpg); hb++) {
    const int64_t cost = ceil_div(chunk_groups * ceil_div(hpg, hb), resident) * (hb + 1);
    if (cost <= best) best = cost, heads_per_block = hb;
  }
  const unsigned head_blocks = unsigned(ceil_div(hpg, heads_per_block));
  ssd_chunk_scan_kernel<<<dim3(max_chunks, n_seq, unsigned(G) * head_blocks), kScanThreads,
                          scan_smem(N), stream>>>(p, batch, dt_ws, cs_ws, states, cb,
                                                  w.max_chunks, heads_per_block, vec);
  CUDA_CHECK(cudaGetLastError());
}

void ssd_step(const SsdParams& p, int n, const int32_t* slots, cudaStream_t stream) {
  check(p, "ssd_step");
  require(slots && n >= 0 && n <= 65535, "ssd_step", "bad slots or row count");
  if (n == 0) return;
  const int64_t blocks = int64_t(p.n_heads) * ceil_div(p.head_dim, kStepWarps);
  require(blocks <= INT32_MAX, "ssd_step", "too many heads");
  // 16-byte state, B and C accesses where every row, group and channel start is 16-byte aligned.
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const bool vec = p.d_state % 4 == 0 && p.ldbc % 4 == 0 && p.state.slot_stride % 4 == 0 &&
                   aligned(p.state.base) && aligned(p.B) && aligned(p.C);
  const dim3 grid{unsigned(blocks), unsigned(n)}, block{unsigned(kStepWarps * 32)};
  if (vec)
    launch_pdl(ssd_step_kernel<4>, grid, block, 0, stream, p, slots);
  else
    launch_pdl(ssd_step_kernel<1>, grid, block, 0, stream, p, slots);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
