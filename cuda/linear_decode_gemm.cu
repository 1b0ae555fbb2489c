// Decode projections over batches of more than 8 rows: the staged GEMM, with the one-row
// kernel's arithmetic (linear_decode.cuh says why that matters; linear_decode.cu dispatches).
#include "linear_decode_args.cuh"

namespace mamba::cuda::decode_detail {
namespace {

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
// (The tiles are in linear_decode_args.cuh.)

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

}  // namespace

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

#define MAMBA_GEMM_TILE(T, Tile)                                                                 \
  template void launch_gemm<T, Tile>(const DeviceMatrix&, const float*, int64_t, int, float*,  \
                                     int64_t, const float*, const LinearDecodeWorkspace&,      \
                                     cudaStream_t, bool, const Out16&, const FusedConv&);
MAMBA_GEMM_TILE(__half, BigTile)
MAMBA_GEMM_TILE(__half, MidTile)
MAMBA_GEMM_TILE(__half, SmallTile)
MAMBA_GEMM_TILE(__nv_bfloat16, BigTile)
MAMBA_GEMM_TILE(__nv_bfloat16, MidTile)
MAMBA_GEMM_TILE(__nv_bfloat16, SmallTile)
#undef MAMBA_GEMM_TILE

}  // namespace mamba::cuda::decode_detail
