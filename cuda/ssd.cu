#include "ssd.cuh"

#include <mma.h>

#include <algorithm>
#include <type_traits>

namespace mamba::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int Q = kSsdChunk;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__host__ __device__ constexpr int round_up(int v, int m) { return (v + m - 1) / m * m; }

// Shared-memory geometry of the matmul kernels, in floats. Everything lives in dynamic shared
// memory (no static __shared__ before it), whose start is aligned for WMMA's 32-byte loads. head_dim and d_state are padded
// with zeros to the 16-wide WMMA tiles; each leading dimension is that width plus 4, a
// multiple of 4 as WMMA requires, which also staggers the rows across memory banks. Every
// region starts on a 128-byte boundary.
struct Geometry {
  int Pp, Np, ldp, ldn, ldq;
  __host__ __device__ Geometry(int P, int N)
      : Pp(round_up(P, 16)), Np(round_up(N, 16)), ldp(Pp + 4), ldn(Np + 4), ldq(Q + 4) {}
  __host__ __device__ static int region(int floats) { return round_up(floats, 32); }
  // chunk_state: Xs (Q, ldp), Bw (Q, ldn), Os (Pp, ldn), w (Q)
  __host__ __device__ int state_floats() const {
    return region(Q * ldp) + region(Q * ldn) + region(Pp * ldn) + region(Q);
  }
  // chunk_scan: Cs (Q, ldn), Bs (Q, ldn), Xs (Q, ldp), Ss (Pp, ldn), Ms (Q, ldq), Ys (Q, ldp),
  // cs (Q), dt (Q)
  __host__ __device__ int scan_floats() const {
    return 2 * region(Q * ldn) + region(Q * ldp) + region(Pp * ldn) + region(Q * ldq) +
           region(Q * ldp) + 2 * region(Q);
  }
};

// ---- tensor-core tiles in split TF32 --------------------------------------------------------
// A float32 value v is split into hi = tf32(v) and lo = tf32(v - hi). hi*hi + hi*lo + lo*hi
// recovers the product to about float32 precision (the lo*lo term is below it), at three
// tensor-core products per tile instead of one.

using Acc = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;

template <typename Frag>
__device__ __forceinline__ void split_tf32(Frag& hi, Frag& lo) {
#pragma unroll
  for (int i = 0; i < hi.num_elements; i++) {
    const float v = hi.x[i];
    const float h = wmma::__float_to_tf32(v);
    hi.x[i] = h;
    lo.x[i] = wmma::__float_to_tf32(v - h);
  }
}

// acc (16 x 16) += A (16 x K) * B (K x 16); a and b point at the tiles' k = 0 corners in
// shared memory, K a multiple of 8.
template <typename LayoutA, typename LayoutB>
__device__ __forceinline__ void mma_3xtf32(Acc& acc, const float* a, int lda, const float* b,
                                           int ldb, int K) {
  constexpr bool a_row = std::is_same<LayoutA, wmma::row_major>::value;
  constexpr bool b_row = std::is_same<LayoutB, wmma::row_major>::value;
  wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LayoutA> a_hi, a_lo;
  wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LayoutB> b_hi, b_lo;
  for (int k = 0; k < K; k += 8) {
    wmma::load_matrix_sync(a_hi, a + (a_row ? k : k * lda), lda);
    wmma::load_matrix_sync(b_hi, b + (b_row ? k * ldb : k), ldb);
    split_tf32(a_hi, a_lo);
    split_tf32(b_hi, b_lo);
    wmma::mma_sync(acc, a_lo, b_hi, acc);  // small terms first
    wmma::mma_sync(acc, a_hi, b_lo, acc);
    wmma::mma_sync(acc, a_hi, b_hi, acc);
  }
}

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
// dt_ws (n_tok, H) = clamp(softplus(dt + dt_bias)); cs_ws (n_tok, H) = running sum of dt * A
// from the start of the step's chunk (inclusive).
__global__ void ssd_dt_kernel(SsdParams p, SeqBatch batch, float* dt_ws, float* cs_ws) {
  const ChunkPos c = chunk_pos(batch);
  if (!c.valid) return;
  const int H = p.n_heads;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  // A warp per head: 32 rows at a time, an inclusive warp scan of dt * A on top of the sum so
  // far (the rows one after another would leave 31 lanes idle and chain 256 dependent loads).
  for (int h = warp; h < H; h += int(blockDim.x) / 32) {
    const float bias = p.dt_bias[h], a = p.A[h];
    float carry = 0.0f;
    for (int l0 = 0; l0 < c.n_rows; l0 += 32) {
      const int l = l0 + lane;
      const int64_t row = c.row0 + l;
      // dt = clamp(softplus(dt + dt_bias), dt_min, dt_max)
      const float dt =
          l < c.n_rows ? fminf(fmaxf(softplus(p.dt[row * p.lddt + h] + bias), p.dt_min), p.dt_max)
                       : 0.0f;
      float cum = dt * a;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float v = __shfl_up_sync(0xffffffffu, cum, o);
        if (lane >= o) cum += v;
      }
      cum += carry;
      if (l < c.n_rows) {
        dt_ws[row * H + h] = dt;
        cs_ws[row * H + h] = cum;
      }
      carry = __shfl_sync(0xffffffffu, cum, 31);
    }
  }
}

// ---- step 2: each chunk's own final state ---------------------------------------------------
// Block (chunk, seq, head): states[chunk] (P, N) = X^T (P, Q) * (w o B) (Q, N) with
// w[l] = dt[l] * exp(cs[last] - cs[l]), the decay from step l to the end of the chunk.
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_state_kernel(SsdParams p, SeqBatch batch, const float* __restrict__ dt_ws,
                           const float* __restrict__ cs_ws, float* __restrict__ states,
                           int max_chunks) {
  extern __shared__ __align__(128) float smem[];
  const ChunkPos c = chunk_pos(batch);
  if (!c.valid) return;
  const int h = blockIdx.z, H = p.n_heads, P = p.head_dim, N = p.d_state;
  const int g = h / (H / p.n_groups);
  const Geometry G(P, N);
  float* Xs = smem;                                // (Q, ldp)
  float* Bw = Xs + Geometry::region(Q * G.ldp);    // (Q, ldn)
  float* Os = Bw + Geometry::region(Q * G.ldn);    // (Pp, ldn)
  float* w = Os + Geometry::region(G.Pp * G.ldn);  // (Q)

  const float cs_last = cs_ws[(c.row0 + c.n_rows - 1) * H + h];
  for (int l = threadIdx.x; l < Q; l += kThreads)
    w[l] = l < c.n_rows
               ? dt_ws[(c.row0 + l) * H + h] * expf(cs_last - cs_ws[(c.row0 + l) * H + h])
               : 0.0f;
  __syncthreads();
  for (int i = threadIdx.x; i < Q * G.Pp; i += kThreads) {
    const int l = i / G.Pp, j = i % G.Pp;
    Xs[l * G.ldp + j] =
        (l < c.n_rows && j < P) ? p.x[(c.row0 + l) * p.ldx + int64_t(h) * P + j] : 0.0f;
  }
  for (int i = threadIdx.x; i < Q * G.Np; i += kThreads) {
    const int l = i / G.Np, n = i % G.Np;
    Bw[l * G.ldn + n] =
        (l < c.n_rows && n < N) ? p.B[(c.row0 + l) * p.ldbc + int64_t(g) * N + n] * w[l] : 0.0f;
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5;
  const int tiles_n = G.Np / 16, n_tiles = (G.Pp / 16) * tiles_n;
  for (int t = warp; t < n_tiles; t += kWarps) {
    const int tp = t / tiles_n, tn = t % tiles_n;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    // X^T is X read column-major.
    mma_3xtf32<wmma::col_major, wmma::row_major>(acc, Xs + tp * 16, G.ldp, Bw + tn * 16, G.ldn, Q);
    wmma::store_matrix_sync(Os + tp * 16 * G.ldn + tn * 16, acc, G.ldn, wmma::mem_row_major);
  }
  __syncthreads();
  float* out = states + ((int64_t(c.seq) * max_chunks + c.chunk) * H + h) * int64_t(P) * N;
  for (int i = threadIdx.x; i < P * N; i += kThreads) out[i] = Os[(i / N) * G.ldn + i % N];
}

// ---- step 3: pass the state along the chunks ------------------------------------------------
// Thread (element of (P, N), head, seq). Replaces each chunk's own final state with the state
// entering that chunk, and leaves the state after the last chunk in the slot.
__global__ void ssd_state_pass_kernel(SsdParams p, SeqBatch batch, const float* __restrict__ cs_ws,
                                      float* __restrict__ states, int max_chunks) {
  const int seq = blockIdx.z, h = blockIdx.y, H = p.n_heads;
  const int64_t PN = int64_t(p.head_dim) * p.d_state;
  const int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= PN) return;
  const int t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - t_begin;
  float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride + h * PN + e;
  float s = *st;
  const int n_chunks = (len + Q - 1) / Q;
  const auto chunk_state = [&](int k) {
    return states + ((int64_t(seq) * max_chunks + k) * H + h) * PN + e;
  };
  const auto chunk_decay = [&](int k) {  // cs at the chunk's last row
    return cs_ws[(int64_t(t_begin) + min(len, (k + 1) * Q) - 1) * H + h];
  };
  // The next chunk's values are loaded before this chunk's store, so the loads overlap
  // instead of each waiting for the store before it.
  float own = n_chunks > 0 ? *chunk_state(0) : 0.0f;
  float cs = n_chunks > 0 ? chunk_decay(0) : 0.0f;
  for (int k = 0; k < n_chunks; k++) {
    const float own_next = k + 1 < n_chunks ? *chunk_state(k + 1) : 0.0f;
    const float cs_next = k + 1 < n_chunks ? chunk_decay(k + 1) : 0.0f;
    *chunk_state(k) = s;
    s = expf(cs) * s + own;
    own = own_next;
    cs = cs_next;
  }
  *st = s;
}

// ---- steps 1 and 4: the outputs -------------------------------------------------------------
// Block (chunk, seq, head):
//   M  = (C B^T) o decay o dt   (Q, Q), decay[l, s] = exp(cs[l] - cs[s]) for s <= l, else 0
//   Y  = (exp(cs) o C) S_in^T + M X + D x     (Q, P)
__global__ void __launch_bounds__(kThreads)
    ssd_chunk_scan_kernel(SsdParams p, SeqBatch batch, const float* __restrict__ dt_ws,
                          const float* __restrict__ cs_ws, const float* __restrict__ states,
                          int max_chunks) {
  extern __shared__ __align__(128) float smem[];
  const ChunkPos c = chunk_pos(batch);
  if (!c.valid) return;
  const int h = blockIdx.z, H = p.n_heads, P = p.head_dim, N = p.d_state;
  const int g = h / (H / p.n_groups);
  const Geometry G(P, N);
  float* Cs = smem;                                // (Q, ldn)
  float* Bs = Cs + Geometry::region(Q * G.ldn);    // (Q, ldn)
  float* Xs = Bs + Geometry::region(Q * G.ldn);    // (Q, ldp)
  float* Ss = Xs + Geometry::region(Q * G.ldp);    // (Pp, ldn) state entering the chunk
  float* Ms = Ss + Geometry::region(G.Pp * G.ldn); // (Q, ldq)
  float* Ys = Ms + Geometry::region(Q * G.ldq);    // (Q, ldp)
  float* cs_s = Ys + Geometry::region(Q * G.ldp);  // (Q)
  float* dt_s = cs_s + Geometry::region(Q);        // (Q)

  // Padding rows get dt = 0 and the last real decay sum, so every exp() below stays <= 1.
  const float cs_last = cs_ws[(c.row0 + c.n_rows - 1) * H + h];
  for (int l = threadIdx.x; l < Q; l += kThreads) {
    const bool v = l < c.n_rows;
    cs_s[l] = v ? cs_ws[(c.row0 + l) * H + h] : cs_last;
    dt_s[l] = v ? dt_ws[(c.row0 + l) * H + h] : 0.0f;
  }
  for (int i = threadIdx.x; i < Q * G.Np; i += kThreads) {
    const int l = i / G.Np, n = i % G.Np;
    const bool v = l < c.n_rows && n < N;
    const int64_t off = (c.row0 + l) * p.ldbc + int64_t(g) * N + n;
    Cs[l * G.ldn + n] = v ? p.C[off] : 0.0f;
    Bs[l * G.ldn + n] = v ? p.B[off] : 0.0f;
  }
  for (int i = threadIdx.x; i < Q * G.Pp; i += kThreads) {
    const int l = i / G.Pp, j = i % G.Pp;
    Xs[l * G.ldp + j] =
        (l < c.n_rows && j < P) ? p.x[(c.row0 + l) * p.ldx + int64_t(h) * P + j] : 0.0f;
  }
  const float* s_in =
      states + ((int64_t(c.seq) * max_chunks + c.chunk) * H + h) * int64_t(P) * N;
  for (int i = threadIdx.x; i < G.Pp * G.Np; i += kThreads) {
    const int j = i / G.Np, n = i % G.Np;
    Ss[j * G.ldn + n] = (j < P && n < N) ? s_in[int64_t(j) * N + n] : 0.0f;
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5;
  constexpr int tq = Q / 16;
  // M = C B^T (B^T is B read column-major)
  for (int t = warp; t < tq * tq; t += kWarps) {
    const int tl = t / tq, ts = t % tq;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    mma_3xtf32<wmma::row_major, wmma::col_major>(acc, Cs + tl * 16 * G.ldn, G.ldn,
                                                 Bs + ts * 16 * G.ldn, G.ldn, G.Np);
    wmma::store_matrix_sync(Ms + tl * 16 * G.ldq + ts * 16, acc, G.ldq, wmma::mem_row_major);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < Q * Q; i += kThreads) {
    const int l = i / Q, s = i % Q;
    float& m = Ms[l * G.ldq + s];
    m = s <= l ? m * expf(cs_s[l] - cs_s[s]) * dt_s[s] : 0.0f;  // mask before exp can overflow
  }
  for (int i = threadIdx.x; i < Q * G.Np; i += kThreads) {
    const int l = i / G.Np, n = i % G.Np;
    Cs[l * G.ldn + n] *= expf(cs_s[l]);
  }
  __syncthreads();
  const int tiles_p = G.Pp / 16;
  for (int t = warp; t < tq * tiles_p; t += kWarps) {
    const int tl = t / tiles_p, tp = t % tiles_p;
    Acc acc;
    wmma::fill_fragment(acc, 0.0f);
    mma_3xtf32<wmma::row_major, wmma::col_major>(acc, Cs + tl * 16 * G.ldn, G.ldn,
                                                 Ss + tp * 16 * G.ldn, G.ldn, G.Np);
    mma_3xtf32<wmma::row_major, wmma::row_major>(acc, Ms + tl * 16 * G.ldq, G.ldq, Xs + tp * 16,
                                                 G.ldp, Q);
    wmma::store_matrix_sync(Ys + tl * 16 * G.ldp + tp * 16, acc, G.ldp, wmma::mem_row_major);
  }
  __syncthreads();
  const float Dh = p.D[h];
  const int64_t ldy = int64_t(H) * P;
  for (int i = threadIdx.x; i < c.n_rows * P; i += kThreads) {
    const int l = i / P, j = i % P;
    p.y[(c.row0 + l) * ldy + int64_t(h) * P + j] = Ys[l * G.ldp + j] + Dh * Xs[l * G.ldp + j];
  }
}

// ---- decode ---------------------------------------------------------------------------------
// One warp per (row, head, channel), lanes over the state index, so the state is read and
// written in coalesced rows; a block holds kStepWarps channels of one head. Decode is latency
// bound, so the grid is made wide (H * P / kStepWarps blocks per row) rather than deep.
constexpr int kStepWarps = 4;

__global__ void ssd_step_kernel(SsdParams p, const int32_t* __restrict__ slots) {
  pdl_start();
  const int P = p.head_dim, N = p.d_state, H = p.n_heads;
  const int p_blocks = (P + kStepWarps - 1) / kStepWarps;
  const int h = blockIdx.x / p_blocks, row = blockIdx.y;
  const int g = h / (H / p.n_groups);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int j = (blockIdx.x % p_blocks) * kStepWarps + warp;  // this warp's channel
  if (j >= P) return;  // whole warps only; no block-wide sync below
  const float dt = fminf(
      fmaxf(softplus(p.dt[int64_t(row) * p.lddt + h] + p.dt_bias[h]), p.dt_min), p.dt_max);
  const float dA = expf(dt * p.A[h]);
  const float* B = p.B + int64_t(row) * p.ldbc + int64_t(g) * N;
  const float* C = p.C + int64_t(row) * p.ldbc + int64_t(g) * N;
  const float* x = p.x + int64_t(row) * p.ldx + int64_t(h) * P;
  float* sj = p.state.base + int64_t(slots[row]) * p.state.slot_stride +
              (int64_t(h) * P + j) * N;
  const float xv = x[j], dtx = dt * xv;
  float acc = 0.0f;
  for (int n = lane; n < N; n += 32) {
    const float s = dA * sj[n] + dtx * B[n];
    sj[n] = s;
    acc += s * C[n];
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
  size_t dt, cs, states, total;  // float offsets
  int max_chunks;
};
WorkspaceLayout workspace_layout(const SsdParams& p, const SeqBatch& batch) {
  WorkspaceLayout w;
  w.max_chunks = int(ceil_div(batch.max_len, Q));
  const size_t per_row = size_t(round_up(std::max(p.n_heads, 1), 64));
  w.dt = 0;
  w.cs = w.dt + size_t(batch.n_tok) * per_row;
  w.states = w.cs + size_t(batch.n_tok) * per_row;
  w.total = w.states +
            size_t(batch.n_seq) * w.max_chunks * p.n_heads * size_t(p.head_dim) * p.d_state;
  return w;
}

size_t smem_optin_limit() {
  int dev = 0, v = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return size_t(v);
}

}  // namespace

size_t ssd_workspace_bytes(const SsdParams& p, const SeqBatch& batch) {
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
  const Geometry G(p.head_dim, p.d_state);
  const size_t state_smem = size_t(G.state_floats()) * sizeof(float);
  const size_t scan_smem = size_t(G.scan_floats()) * sizeof(float);
  if (scan_smem > 48 * 1024 || state_smem > 48 * 1024) {
    const size_t limit = smem_optin_limit();
    if (std::max(state_smem, scan_smem) + 1024 > limit)
      fail("ssd_prefill: head_dim ", p.head_dim, " and d_state ", p.d_state,
           " need more shared memory than the device has (", scan_smem, " > ", limit, " bytes)");
    CUDA_CHECK(cudaFuncSetAttribute(ssd_chunk_state_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(state_smem)));
    CUDA_CHECK(cudaFuncSetAttribute(ssd_chunk_scan_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(scan_smem)));
  }
  float* ws = static_cast<float*>(workspace);
  float* dt_ws = ws + w.dt;
  float* cs_ws = ws + w.cs;
  float* states = ws + w.states;
  const dim3 chunks(unsigned(w.max_chunks), unsigned(batch.n_seq));
  const dim3 chunks_heads(unsigned(w.max_chunks), unsigned(batch.n_seq), unsigned(p.n_heads));

  ssd_dt_kernel<<<chunks, 512, 0, stream>>>(p, batch, dt_ws, cs_ws);  // a warp per head
  CUDA_CHECK(cudaGetLastError());
  ssd_chunk_state_kernel<<<chunks_heads, kThreads, state_smem, stream>>>(p, batch, dt_ws, cs_ws,
                                                                         states, w.max_chunks);
  CUDA_CHECK(cudaGetLastError());
  const int64_t PN = int64_t(p.head_dim) * p.d_state;
  ssd_state_pass_kernel<<<dim3(unsigned(ceil_div(PN, 256)), unsigned(p.n_heads),
                               unsigned(batch.n_seq)),
                          256, 0, stream>>>(p, batch, cs_ws, states, w.max_chunks);
  CUDA_CHECK(cudaGetLastError());
  ssd_chunk_scan_kernel<<<chunks_heads, kThreads, scan_smem, stream>>>(p, batch, dt_ws, cs_ws,
                                                                       states, w.max_chunks);
  CUDA_CHECK(cudaGetLastError());
}

void ssd_step(const SsdParams& p, int n, const int32_t* slots, cudaStream_t stream) {
  check(p, "ssd_step");
  require(slots && n >= 0 && n <= 65535, "ssd_step", "bad slots or row count");
  if (n == 0) return;
  const int64_t blocks = int64_t(p.n_heads) * ceil_div(p.head_dim, kStepWarps);
  require(blocks <= INT32_MAX, "ssd_step", "too many heads");
  launch_pdl(ssd_step_kernel, dim3(unsigned(blocks), unsigned(n)), dim3(kStepWarps * 32), 0, stream,
             p, slots);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
