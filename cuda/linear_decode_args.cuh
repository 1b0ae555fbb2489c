// The pieces that linear_decode.cu (the one-row / tile kernel and the host dispatch) and
// linear_decode_gemm.cu (the staged GEMM for batches of more than 8 rows) share: the fragment
// loads, the cluster's slice sums, the kernel arguments and the output stores, and the staged
// GEMM's tiles. Internal to those two files.
#pragma once

#include "linear_decode.cuh"
#include "mma.cuh"
#include "rmsnorm.cuh"

#include <cooperative_groups.h>

#include <cstdint>

namespace mamba::cuda::decode_detail {

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

// The kernel arguments; the K split depends on W alone.
inline MmaArgs mma_args(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
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

// ---- The staged GEMM's tiles (linear_decode_gemm.cu) -------------------------------------------
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

// The staged GEMM over n > 8 rows with the given tile: rounds x into ws.x16 first unless
// x_rounded (linear_decode_gemm.cu). Instantiated for __half and __nv_bfloat16 with BigTile,
// MidTile and SmallTile.
template <typename T, typename Tile>
void launch_gemm(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                 int64_t ldy, const float* bias, const LinearDecodeWorkspace& ws,
                 cudaStream_t stream, bool x_rounded, const Out16& y16,
                 const FusedConv& conv);

}  // namespace mamba::cuda::decode_detail
