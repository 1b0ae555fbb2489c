// Decode-step projections: y (n, ldy) = x (n, ldx) W^T (+ bias) for the few rows of one decode
// step (one row per running sequence), with every output value computed by the same arithmetic
// in the same order whatever n is and whatever the other rows hold. This is what makes batched
// generation batch-invariant: a sequence gets bit-identical logits alone or beside 255 others.
//
// How (see docs/batch.md): the reduction over K is split in a way fixed by W's shape alone.
// kLinearDecodeWarps warps of a block take interleaved 32-wide K chunks; each accumulates its
// chunks in order, and the warps' partial sums are added in warp order. n only decides how many
// 8-row batch tiles a warp carries and how many 16-row weight tiles a block holds, which changes
// no output's sum. (cuBLAS picks its kernel, its tiling and its split-K by n, so its per-row
// results differ with the batch size.)
//
//   f16 / bf16 weights: x is rounded to the weight's dtype (as the prefill GEMM does) and the
//     products run on tensor cores (mma.sync m16n8k16) with float32 accumulation. Weights are
//     read once per step for up to 64 rows, so a step is bound by the weight bytes.
//   f32 weights: float32 FMAs, one warp per output feature (exact, slower; for reference runs).
#pragma once

#include "conv1d.cuh"
#include "linear.cuh"

namespace mamba::cuda {

constexpr int kLinearDecodeWarps = 4;

// Narrow weights (few rows, long rows: x_proj, out_proj) have their K range cut into slices on
// more blocks, at most 8; the slices of an output tile run as one thread-block cluster and add
// their sums in slice order through the cluster's shared memory (Hopper; on GPUs without
// clusters every weight is one slice). Batches of more than 8 rows round x to the weight's
// dtype once, into x16.
struct LinearDecodeWorkspace {
  void* x16 = nullptr;  // device, x16_elems 16-bit values, 16-byte aligned
  size_t x16_elems = 0;
};
struct LinearDecodeNeeds {
  size_t x16_elems = 0;
};
// How linear_decode cuts W's K range, a function of W's shape (and of the device having
// thread-block clusters) alone: `splits` slices of `chunks_per_split` 32-wide chunks (the last
// may be shorter), each slice's chunks interleaved over kLinearDecodeWarps warps. An output is
// ((0 + S_0) + S_1) + ... over the slices (S_0 alone when there is one), S_s being
// ((P_0 + P_1) + P_2) + P_3 over the warps' partial sums, then + bias (or + 0). The persistent
// decode step (persistent_decode.cuh) reproduces this order.
struct LinearDecodeSplit {
  int splits = 1;
  int64_t chunks_per_split = 0;
};
LinearDecodeSplit linear_decode_split(const DeviceMatrix& W);

// What linear_decode needs for this weight and up to n rows (zeros when it needs nothing).
LinearDecodeNeeds linear_decode_needs(const DeviceMatrix& W, int n);

// y rows [0, n), first W.rows columns; bias (W.rows) may be null. n in [0, 65535].
// x_rounded: the producer of x has already written it rounded into ws.x16, element (r, k) of
// the (n, W.cols) input at gemm_x16_index(r, k, W.cols) (an Out16 with gemm_k = W.cols; allowed
// only where linear_decode_reads_x16 says so); the rounding pass is skipped.
// A decode conv step fused into the projection's epilogue: output features [first, first +
// conv.dim) of row r are also the conv's input for slot slots[r] (conv.x is unused), so the
// separate conv1d_step kernel is not needed. f16 / bf16 weights only.
struct FusedConv {
  Conv1dParams conv;
  const int32_t* slots = nullptr;  // device, n entries, all distinct; null: no conv
  int64_t first = 0;
};

// Decode steps of up to 8 rows can do the residual stream's RMSNorm in the two projections
// around it instead of in a kernel of its own (one kernel fewer a layer). out_proj, given a
// ResidualOut, adds its result into y, which is then h, as rmsnorm_residual adds its delta, and
// writes the sum of squares of every 16-feature group of the new h; the next in_proj, given a
// NormIn, takes x = h and those sums and norms each value as it reads it, with
// rmsnorm_residual's arithmetic and sum order (rmsnorm.cuh), so that it multiplies the very bits
// the norm kernel would have given it. Both need n <= 8 and 16-bit weights.
struct ResidualOut {
  float* sumsq = nullptr;  // device, (n, ceil(W.rows / 16)); null: y = x W^T (+ bias) as usual
};
struct NormIn {
  const float* sumsq = nullptr;  // device, (n, ceil(W.cols / 16)) from a ResidualOut; null: none
  const float* w = nullptr;      // device, (W.cols), 16-byte aligned: the norm's weight
  float eps = 0.0f;
};

// y16 (optional, allowed only where linear_decode_reads_x16 says so): a 16-bit copy of y's
// first y16.gemm_k columns (a multiple of 32, at most W.rows), in gemm_x16_index order with
// K = y16.gemm_k, for a next projection that reads them as its x16 (x_rounded); it must not
// overlap ws.x16.
void linear_decode(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                   int64_t ldy, const float* bias, const LinearDecodeWorkspace& ws,
                   cudaStream_t stream, bool x_rounded = false, const Out16& y16 = {},
                   const FusedConv& conv = {}, const NormIn& norm = {},
                   const ResidualOut& res = {});

// Whether linear_decode(W, ..., n, ..., ws) takes its input from ws.x16 (the staged GEMM for
// more than 8 rows of a large 16-bit weight), so that a producer may write x there directly.
bool linear_decode_reads_x16(const DeviceMatrix& W, int n, const LinearDecodeWorkspace& ws);

}  // namespace mamba::cuda
