#include "conv1d.cuh"

namespace mamba::cuda {
namespace {

constexpr int kThreads = 128;    // channels per block
constexpr int kTimeTile = 16;    // time steps per block in prefill

// Output of every (t, c): fully parallel; reads the old state, so the state update runs
// afterwards in its own kernel. Thread (channel, tile of kTimeTile steps) requests the tile's
// inputs and the d_conv - 1 before it all at once, then slides the window over them, so each
// input is read once per tile rather than d_conv times, and the reads overlap.
__global__ void conv1d_prefill_kernel(Conv1dParams p, SeqBatch batch) {
  const int c = blockIdx.x * kThreads + threadIdx.x;
  const int seq = blockIdx.z;
  if (c >= p.dim) return;
  const int t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - t_begin;
  const int K = p.d_conv;
  const int t0 = blockIdx.y * kTimeTile;
  if (t0 >= len) return;
  const float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride;
  // in[j] = input at time t0 - (K - 1) + j; times before 0 come from the state, times past
  // the end of the sequence are never used.
  constexpr int kSpan = kMaxConvWidth - 1 + kTimeTile;
  float in[kSpan];
#pragma unroll
  for (int j = 0; j < kSpan; j++) {
    const int src = t0 - (K - 1) + j;
    in[j] = src < len && j < K - 1 + kTimeTile
                ? (src >= 0 ? p.x[int64_t(t_begin + src) * p.ldx + c]
                            : st[int64_t(K - 1 + src) * p.dim + c])
                : 0.0f;
  }
  float w[kMaxConvWidth];
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) w[k] = k < K ? p.w[int64_t(c) * K + k] : 0.0f;
  const float bias = p.b ? p.b[c] : 0.0f;
#pragma unroll
  for (int i = 0; i < kTimeTile; i++) {
    const int t = t0 + i;
    if (t >= len) break;
    float acc = bias;
#pragma unroll
    for (int k = 0; k < kMaxConvWidth; k++)
      if (k < K) acc += w[k] * in[i + k];  // input at t - (K - 1) + k
    const float v = silu(acc);
    p.out[int64_t(t_begin + t) * p.dim + c] = v;
    if (p.out16.data) store16(p.out16, t_begin + t, c, p.dim, v);
  }
}

// New state = the last d_conv - 1 inputs of (old state ++ chunk). Entry j moves from
// old[j + len] while that is inside the old state; reading index j + len > j before writing
// index j keeps the in-place shift correct.
__global__ void conv1d_state_kernel(Conv1dParams p, SeqBatch batch) {
  const int c = blockIdx.x * kThreads + threadIdx.x;
  const int seq = blockIdx.y;
  if (c >= p.dim) return;
  const int t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - t_begin;
  const int S = p.d_conv - 1;
  float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride;
  for (int j = 0; j < S; j++) {
    const int src = j + len;  // position in (old state ++ chunk)
    st[int64_t(j) * p.dim + c] =
        src < S ? st[int64_t(src) * p.dim + c] : p.x[int64_t(t_begin + src - S) * p.ldx + c];
  }
}

// Thread (channel, row). Every load (the state's d_conv - 1 entries, the weights, the input)
// is requested before any store: a loop that shifted the state entry by entry could not move
// a load above the previous store to the same array, and waited for d_conv - 1 round trips.
// Offsets other than the state slot's are 32-bit (the host checks they fit).
__global__ void conv1d_step_kernel(Conv1dParams p, const int32_t* __restrict__ slots) {
  pdl_start();
  const int c = blockIdx.x * kThreads + threadIdx.x;
  const int row = blockIdx.y;
  if (c >= p.dim) return;
  const int K = p.d_conv, dim = p.dim;
  float* st = p.state.base + int64_t(slots[row]) * p.state.slot_stride + c;  // column c
  const float* w = p.w + c * K;
  const float xin = p.x[row * int(p.ldx) + c];
  float v[kMaxConvWidth], wk[kMaxConvWidth];
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) v[k] = k < K - 1 ? st[k * dim] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) wk[k] = k < K ? w[k] : 0.0f;
  // out = silu(b + sum_k w[k] * in[k]), in = (state ++ x), in order of k
  float acc = p.b ? p.b[c] : 0.0f;
#pragma unroll
  for (int k = 0; k < kMaxConvWidth; k++) {  // (fixed indices: the arrays stay in registers)
    if (k < K - 1) acc += wk[k] * v[k];
    if (k == K - 1) acc += wk[k] * xin;
  }
  // state = (state ++ x)[1:]
#pragma unroll
  for (int k = 1; k < kMaxConvWidth - 1; k++)
    if (k < K - 1) st[(k - 1) * dim] = v[k];
  if (K > 1) st[(K - 2) * dim] = xin;
  const float y = silu(acc);
  p.out[row * dim + c] = y;
  if (p.out16.data) store16(p.out16, row, c, dim, y);
}

void check(const Conv1dParams& p, const char* op) {
  require(p.x && p.w && p.out, op, "null pointer");
  require(p.dim > 0 && p.ldx >= p.dim, op, "bad dim or ldx");
  require(p.d_conv >= 1 && p.d_conv <= kMaxConvWidth, op, "d_conv out of range 1..8");
  require(p.d_conv == 1 || (p.state.base && p.state.slot_stride >= int64_t(p.d_conv - 1) * p.dim),
          op, "bad state");
}

}  // namespace

void conv1d_prefill(const Conv1dParams& p, const SeqBatch& batch, cudaStream_t stream) {
  check(p, "conv1d_prefill");
  require(batch.start && batch.slots && batch.n_seq >= 0 && batch.max_len >= 0,
          "conv1d_prefill", "bad batch");
  require(batch.n_seq <= 65535 && ceil_div(batch.max_len, kTimeTile) <= 65535, "conv1d_prefill",
          "batch too large for one launch");
  if (batch.n_seq == 0 || batch.max_len == 0) return;
  const unsigned cblocks = unsigned(ceil_div(p.dim, kThreads));
  conv1d_prefill_kernel<<<dim3(cblocks, unsigned(ceil_div(batch.max_len, kTimeTile)),
                               unsigned(batch.n_seq)),
                          kThreads, 0, stream>>>(p, batch);
  CUDA_CHECK(cudaGetLastError());
  if (p.d_conv > 1) {
    conv1d_state_kernel<<<dim3(cblocks, unsigned(batch.n_seq)), kThreads, 0, stream>>>(p, batch);
    CUDA_CHECK(cudaGetLastError());
  }
}

void conv1d_step(const Conv1dParams& p, int n, const int32_t* slots, cudaStream_t stream) {
  check(p, "conv1d_step");
  require(slots && n >= 0 && n <= 65535, "conv1d_step", "bad slots or row count");
  if (n == 0) return;
  require(int64_t(n) * p.ldx <= INT32_MAX && int64_t(p.dim) * p.d_conv <= INT32_MAX,
          "conv1d_step", "rows or channels too many for 32-bit offsets");
  launch_pdl(conv1d_step_kernel, dim3(unsigned(ceil_div(p.dim, kThreads)), unsigned(n)),
             dim3(kThreads), 0, stream, p, slots);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
