#include "selective_scan.cuh"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace mamba::cuda {
namespace {

constexpr int kGroup = 16;   // lanes per channel in prefill = time steps per round
constexpr int kThreads = 128;  // 8 channels per block

// Prefill: a group of 16 lanes per (sequence, channel) walks the sequence in order, lane j
// owning the state entries j, j + 16, ... (V of them, d_state <= 16 V). Each step is the exact
// recurrence, in float32, one step after another:
//   h = exp(dt * A) * h + dt * B[t] * x[t];   y[t] = h . C[t] + D * x[t], times silu(z[t])
// Work that is per step rather than per state is shared out over a round of 16 steps: lane j
// computes softplus(dt + dt_bias) and dt * x of step j of the round (the group reads them
// with shuffles), keeps every step's partial h . C over its own entries, and after the round a
// reduce-scatter (each lane sends half of what it holds, four times) leaves step j's full sum
// on lane j, which gates and writes y for that step. So a step costs its V exponentials and
// FMAs plus two shuffles, and 4096 channels x 16 lanes keep every SM busy.
// With V = 1, five blocks per SM (at most 102 registers) hold the 640 blocks of a 5120-channel
// layer in one wave on an H100.
template <int V>
__global__ void __launch_bounds__(kThreads, V == 1 ? 5 : 1)
    selective_scan_prefill_kernel(SelectiveScanParams p, SeqBatch batch) {
  const int lane = int(threadIdx.x) % kGroup;
  const int ch = int(blockIdx.x) * (kThreads / kGroup) + int(threadIdx.x) / kGroup;
  const bool valid = ch < p.d_inner;  // whole groups are valid or not; all lanes shuffle
  const int c = valid ? ch : 0;
  const int seq = int(blockIdx.y), N = p.d_state;
  const int64_t t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - batch.start[seq];
  float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride + int64_t(c) * N;
  float h[V], a[V];
#pragma unroll
  for (int v = 0; v < V; v++) {
    const int n = lane + kGroup * v;
    h[v] = n < N ? st[n] : 0.0f;
    a[v] = n < N ? p.A[int64_t(c) * N + n] : 0.0f;
  }
  const float bias = p.dt_bias[c], Dc = p.D[c];
  // This lane's x, dt and z of the next round, loaded a round ahead: the loads are then in
  // flight while the current round computes.
  float x_next = 0.0f, dt_next = 0.0f, z_next = 0.0f;
  const auto load_round = [&](int t0) {
    if (t0 + lane < len) {
      const int64_t row = t_begin + t0 + lane;
      x_next = p.x[row * p.d_inner + c];
      dt_next = p.dt[row * p.d_inner + c];
      z_next = p.z[row * p.ldz + c];
    }
  };
  // The round's B and C entries of this lane (each step's row, entries lane + 16 v). With
  // V = 1 they are requested a whole round ahead, like x, dt and z, so no round waits on
  // memory; larger V has no registers to spare and requests them as the round starts.
  constexpr bool kAhead = V == 1;
  float Bv[kGroup][V], Cv[kGroup][V];
  const auto load_bc = [&](int t0, float (&Bd)[kGroup][V], float (&Cd)[kGroup][V]) {
    const int64_t r0 = (t_begin + t0) * p.ldbc + lane;  // step 0's row, this lane's entry
    const float* Bp = p.B + r0;
    const float* Cp = p.C + r0;
#pragma unroll
    for (int s = 0; s < kGroup; s++, Bp += p.ldbc, Cp += p.ldbc) {
#pragma unroll
      for (int v = 0; v < V; v++) {
        const bool use = t0 + s < len && lane + kGroup * v < N;
        Bd[s][v] = use ? Bp[kGroup * v] : 0.0f;
        Cd[s][v] = use ? Cp[kGroup * v] : 0.0f;
      }
    }
  };
  load_round(0);
  if constexpr (kAhead) load_bc(0, Bv, Cv);
  for (int t0 = 0; t0 < len; t0 += kGroup) {
    // This lane's step of the round. Steps past the end have dt = 0: exp(0) = 1 and no input,
    // so they leave h as it is.
    const bool mine = t0 + lane < len;
    const int64_t row = t_begin + t0 + lane;
    const float xm = mine ? x_next : 0.0f, zm = z_next;
    // dt = softplus(dt + dt_bias)
    const float dtm = mine ? softplus(dt_next + bias) : 0.0f;
    const float dtxm = dtm * xm;
    load_round(t0 + kGroup);
    float Bn[kGroup][V], Cn[kGroup][V];  // the next round's, when kAhead
    if constexpr (kAhead)
      load_bc(t0 + kGroup, Bn, Cn);
    else
      load_bc(t0, Bv, Cv);
    float yp[kGroup];  // yp[s]: this lane's entries' share of h . C at step s of the round
#pragma unroll
    for (int s = 0; s < kGroup; s++) {
      const float dt = __shfl_sync(0xffffffffu, dtm, s, kGroup);
      const float dtx = __shfl_sync(0xffffffffu, dtxm, s, kGroup);
      float acc = 0.0f;
#pragma unroll
      for (int v = 0; v < V; v++) {
        h[v] = expf(dt * a[v]) * h[v] + dtx * Bv[s][v];
        acc += h[v] * Cv[s][v];
      }
      yp[s] = acc;
    }
    // Reduce-scatter over the group: afterwards yp[0] on lane j is step j's sum over all lanes.
    static_assert(kGroup == 16, "four halvings");
#pragma unroll
    for (int k = 0; k < 4; k++) {  // o = 8, 4, 2, 1; both loops have fixed trip counts, so
      const int o = (kGroup / 2) >> k;  // every yp index is a constant after unrolling
      const bool upper = lane & o;
#pragma unroll
      for (int i = 0; i < kGroup / 2; i++) {
        if (i >= o) break;
        // The empty asm makes lo and hi opaque values, so the choice below stays a register
        // select; otherwise the compiler turns it into a load from a chosen address, which
        // moves yp into local memory.
        float lo = yp[i], hi = yp[i + o];
        asm volatile("" : "+f"(lo), "+f"(hi));
        const float send = upper ? lo : hi;
        const float keep = upper ? hi : lo;
        yp[i] = keep + __shfl_xor_sync(0xffffffffu, send, o, kGroup);
      }
    }
    // y = (h . C + D * x) * silu(z)
    if (valid && mine) {
      const float yv = (yp[0] + Dc * xm) * silu(zm);
      p.y[row * p.d_inner + c] = yv;
      if (p.y16.data) store16(p.y16, row, c, p.d_inner, yv);
    }
    if constexpr (kAhead) {
#pragma unroll
      for (int s = 0; s < kGroup; s++)
#pragma unroll
        for (int v = 0; v < V; v++) Bv[s][v] = Bn[s][v], Cv[s][v] = Cn[s][v];
    }
  }
  if (valid) {
#pragma unroll
    for (int v = 0; v < V; v++) {
      const int n = lane + kGroup * v;
      if (n < N) st[n] = h[v];
    }
  }
}

// A group of L lanes per (row, channel): lane j owns the V consecutive state entries at V*j,
// V*(j + L), ..., so a warp's state loads and stores are contiguous (the state is (d_inner,
// d_state) row-major) and, with V = 4, 16 bytes wide; L is d_state / V rounded up to a power of
// two, at most 32, so a lane has at most two rounds of entries. The C-weighted sum runs over a
// lane's entries in order, then a fixed butterfly over the group. Every row is computed alone,
// whatever else is in the batch.
// At 64 rows the step is bound by issuing instructions, not by its state bytes, so the lane
// split is shifts and masks (L = 1 << log2_L), the rounds are a fixed pair instead of a loop
// whose trip count needs a division, and offsets other than the state's are 32-bit (the host
// checks they fit).
//
// The state is requested into L2 before the wait for dt (Hopper's bulk prefetch; the first n
// blocks take a row each): a decode step starts with the copies of its tokens and slots, which
// wait for all earlier work, and within the step only this kernel writes the layer's SSM
// state, so neither it nor slots depends on the kernels this one may overlap. At 64 rows the
// state is 16.8 MB (mamba-1.4b): the blocks of the first wave alone could not have it in
// flight, and dt_proj before it reads little from HBM.
template <int V>
__global__ void selective_scan_step_kernel(SelectiveScanParams p, const int32_t* __restrict__ slots,
                                           int log2_L) {
  pdl_launch_dependents();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (V == 4 && threadIdx.x == 0) {
    const unsigned id = blockIdx.x + blockIdx.y * gridDim.x;  // the first n blocks: row id
    if (id < gridDim.y) {
      const char* src = reinterpret_cast<const char*>(p.state.base + int64_t(slots[id]) *
                                                                         p.state.slot_stride);
      const int64_t bytes = int64_t(p.d_inner) * p.d_state * 4;  // a multiple of 16 (V == 4)
      constexpr int64_t kPiece = 64 << 10;
      for (int64_t off = 0; off < bytes; off += kPiece)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(src + off),
                     "r"(unsigned(bytes - off < kPiece ? bytes - off : kPiece))
                     : "memory");
    }
  }
#endif
  pdl_wait();
  const int L = 1 << log2_L;
  const int g = int((blockIdx.x * blockDim.x + threadIdx.x) >> log2_L);  // channel
  const int j = int(threadIdx.x) & (L - 1);
  const int row = blockIdx.y;
  const bool valid = g < p.d_inner;  // whole groups are valid or not; all lanes shuffle
  const int c = valid ? g : 0;
  const int N = p.d_state;
  float* st = p.state.base + int64_t(slots[row]) * p.state.slot_stride + c * N;
  const float* A = p.A + c * N;
  const float* B = p.B + row * int(p.ldbc);
  const float* C = p.C + row * int(p.ldbc);
  const int xi = row * p.d_inner + c;  // (row, c) of x, dt and y
  const float x = p.x[xi];
  const float z = p.z[row * int(p.ldz) + c], Dc = p.D[c];  // for the gate, requested early
  // dt = softplus(dt + dt_bias)
  const float dt = softplus(p.dt[xi] + p.dt_bias[c]);
  const float acc = selective_scan_step_lanes<V>(st, A, B, C, N, dt, dt * x, j, log2_L, valid);
  if (valid && j == 0) {
    const float yv = selective_scan_output(acc, Dc, x, z);
    p.y[xi] = yv;
    if (p.y16.data) store16(p.y16, row, c, p.d_inner, yv);
  }
}

void check(const SelectiveScanParams& p, const char* op) {
  require(p.x && p.dt && p.dt_bias && p.A && p.B && p.C && p.D && p.z && p.y && p.state.base,
          op, "null pointer");
  require(p.d_inner > 0 && p.d_state >= 1 && p.d_state <= kMaxScanState, op,
          "d_state out of range 1..64");
  require(p.ldbc >= p.d_state && p.ldz >= p.d_inner, op, "bad ldbc or ldz");
  require(p.state.slot_stride >= int64_t(p.d_inner) * p.d_state, op, "bad state stride");
}

}  // namespace

void selective_scan_prefill(const SelectiveScanParams& p, const SeqBatch& batch,
                            cudaStream_t stream) {
  check(p, "selective_scan_prefill");
  require(batch.start && batch.slots && batch.n_seq >= 0 && batch.n_seq <= 65535,
          "selective_scan_prefill", "bad batch");
  if (batch.n_seq == 0 || batch.max_len == 0) return;
  const dim3 grid(unsigned(ceil_div(p.d_inner, kThreads / kGroup)), unsigned(batch.n_seq));
  if (p.d_state <= kGroup)
    selective_scan_prefill_kernel<1><<<grid, kThreads, 0, stream>>>(p, batch);
  else if (p.d_state <= 2 * kGroup)
    selective_scan_prefill_kernel<2><<<grid, kThreads, 0, stream>>>(p, batch);
  else
    selective_scan_prefill_kernel<4><<<grid, kThreads, 0, stream>>>(p, batch);
  CUDA_CHECK(cudaGetLastError());
}

void selective_scan_step(const SelectiveScanParams& p, int n, const int32_t* slots,
                         cudaStream_t stream) {
  check(p, "selective_scan_step");
  require(slots && n >= 0 && n <= 65535, "selective_scan_step", "bad slots or row count");
  if (n == 0) return;
  require(int64_t(n) * std::max({p.ldbc, p.ldz, int64_t(p.d_inner)}) <= INT32_MAX &&
              int64_t(p.d_inner) * p.d_state <= INT32_MAX,
          "selective_scan_step", "rows or channels too many for 32-bit offsets");
  const int threads = 128;
  // 16-byte state, A, B and C accesses where every row and channel start is 16-byte aligned.
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const int V = p.d_state % 4 == 0 && p.ldbc % 4 == 0 && p.state.slot_stride % 4 == 0 &&
                        aligned(p.state.base) && aligned(p.A) && aligned(p.B) && aligned(p.C)
                    ? 4
                    : 1;
  int log2_L = 0;
  while ((V << log2_L) < p.d_state && log2_L < 5) log2_L++;
  require(int64_t(p.d_inner) << log2_L <= INT32_MAX, "selective_scan_step", "d_inner too large");
  const dim3 grid(unsigned(ceil_div(int64_t(p.d_inner) << log2_L, threads)), unsigned(n));
  if (V == 4)
    launch_pdl(selective_scan_step_kernel<4>, grid, dim3(threads), 0, stream, p, slots, log2_L);
  else
    launch_pdl(selective_scan_step_kernel<1>, grid, dim3(threads), 0, stream, p, slots, log2_L);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
