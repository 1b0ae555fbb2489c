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

// Thread (channel, row). The state and the weights are requested before the wait for x: a
// decode step starts with the copies of its tokens and slots, which wait for all earlier work,
// and within the step only this kernel writes the layer's conv state, so neither it nor slots
// depends on the kernels this one may overlap.
__global__ void conv1d_step_kernel(Conv1dParams p, const int32_t* __restrict__ slots) {
  pdl_launch_dependents();
  const int c = blockIdx.x * kThreads + threadIdx.x;
  const int row = blockIdx.y;
  const int slot = slots[row];
  ConvStepLoads l;
  if (c < p.dim) l = conv1d_step_load(p, slot, c);
  pdl_wait();
  if (c >= p.dim) return;
  conv1d_step_finish(p, l, slot, row, c, p.x[row * int(p.ldx) + c]);
}

// What every conv needs but its input: weights, output, shape and state.
void check_common(const Conv1dParams& p, const char* op) {
  require(p.w && p.out, op, "null pointer");
  require(p.dim > 0, op, "bad dim");
  require(p.d_conv >= 1 && p.d_conv <= kMaxConvWidth, op, "d_conv out of range 1..8");
  require(p.d_conv == 1 || (p.state.base && p.state.slot_stride >= int64_t(p.d_conv - 1) * p.dim),
          op, "bad state");
}

// ... and its input.
void check(const Conv1dParams& p, const char* op) {
  check_common(p, op);
  require(p.x && p.ldx >= p.dim, op, "null input or bad ldx");
}

// A decode step's rows and slots.
void check_step_rows(const Conv1dParams& p, int n, const int32_t* slots, const char* op) {
  require(slots && n >= 0 && n <= 65535, op, "bad slots or row count");
  require(int64_t(n) * p.dim <= INT32_MAX && int64_t(p.dim) * p.d_conv <= INT32_MAX, op,
          "rows or channels too many for 32-bit offsets");
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

void conv1d_step_check(const Conv1dParams& p, int n, const int32_t* slots, const char* op) {
  check_common(p, op);
  check_step_rows(p, n, slots, op);
}

void conv1d_step(const Conv1dParams& p, int n, const int32_t* slots, cudaStream_t stream) {
  check(p, "conv1d_step");
  check_step_rows(p, n, slots, "conv1d_step");
  if (n == 0) return;
  require(int64_t(n) * p.ldx <= INT32_MAX, "conv1d_step", "rows too many for 32-bit offsets");
  launch_pdl(conv1d_step_kernel, dim3(unsigned(ceil_div(p.dim, kThreads)), unsigned(n)),
             dim3(kThreads), 0, stream, p, slots);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
