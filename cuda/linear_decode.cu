#include "linear_decode_args.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace mamba::cuda {
namespace {

using namespace decode_detail;

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

template <typename T, int MT, int NT>
void launch_mma(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
                const float* bias, const LinearDecodeWorkspace& ws, const FusedConv& conv,
                cudaStream_t stream, const NormIn& norm = {}, const ResidualOut& res = {}) {
  const MmaArgs p = mma_args(W, x, ldx, n, y, ldy, bias, ws, {}, conv, norm, res);
  const dim3 grid(unsigned(row_tiles<MT>(W)), unsigned(p.splits), unsigned(ceil_div(n, NT * 8)));
  launch_pdl_cluster(linear_decode_mma_kernel<T, MT, NT>, grid, dim3(1, unsigned(p.splits), 1),
                     dim3(kWarps * 32), 0, stream, p);
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
