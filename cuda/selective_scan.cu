#include "selective_scan.cuh"

#include <cstdint>
#include <type_traits>

namespace mamba::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kItems = 2;                    // consecutive time steps per thread
constexpr int kChunk = kThreads * kItems;    // time steps per block iteration

// The recurrence h -> a * h + b. Applying `first` then `second` is again such a map, which
// makes the pairs scannable in parallel.
struct Affine {
  float a, b;
};
__device__ __forceinline__ Affine then(Affine first, Affine second) {
  return {first.a * second.a, second.a * first.b + second.b};
}

// Block-wide scan of one Affine per thread (in thread order). Returns the composition of
// all threads before this one in *excl and of all threads in *total. `warp_tot` is shared
// memory for kThreads / 32 entries; the call synchronises the block twice.
__device__ __forceinline__ void block_scan(Affine v, Affine* warp_tot, Affine* excl,
                                           Affine* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  Affine inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const Affine prev = {__shfl_up_sync(0xffffffffu, inc.a, o),
                         __shfl_up_sync(0xffffffffu, inc.b, o)};
    if (lane >= o) inc = then(prev, inc);
  }
  Affine wex = {__shfl_up_sync(0xffffffffu, inc.a, 1), __shfl_up_sync(0xffffffffu, inc.b, 1)};
  if (lane == 0) wex = {1.0f, 0.0f};
  if (lane == 31) warp_tot[warp] = inc;
  __syncthreads();
  Affine pre = {1.0f, 0.0f}, all = {1.0f, 0.0f};
#pragma unroll
  for (int w = 0; w < kThreads / 32; w++) {
    if (w < warp) pre = then(pre, warp_tot[w]);
    all = then(all, warp_tot[w]);
  }
  *excl = then(pre, wex);
  *total = all;
  __syncthreads();  // warp_tot is rewritten by the next call
}

// Block (channel c, sequence). Walks the sequence in chunks of kChunk steps; inside a chunk
// each thread owns kItems consecutive steps. For every state index n the chunk is one
// parallel scan of (exp(dt*A), dt*B*x) pairs seeded with the state carried from the previous
// chunk.
__global__ void __launch_bounds__(kThreads)
    selective_scan_prefill_kernel(SelectiveScanParams p, SeqBatch batch) {
  extern __shared__ float smem[];  // Bs (kChunk, N), Cs (kChunk, N)
  __shared__ Affine warp_tot[kThreads / 32];
  __shared__ float carry[2][kMaxScanState];  // state at the chunk start; ping-pong by chunk

  const int c = blockIdx.x, seq = blockIdx.y, tid = threadIdx.x;
  const int N = p.d_state;
  const int t_begin = batch.start[seq];
  const int len = batch.start[seq + 1] - t_begin;
  float* st = p.state.base + int64_t(batch.slots[seq]) * p.state.slot_stride + int64_t(c) * N;
  float* Bs = smem;
  float* Cs = smem + kChunk * N;
  for (int n = tid; n < N; n += kThreads) carry[0][n] = st[n];
  const float bias = p.dt_bias[c], Dc = p.D[c];
  const float* Ac = p.A + int64_t(c) * N;

  int par = 0;
  for (int c0 = 0; c0 < len; c0 += kChunk, par ^= 1) {
    const int n_valid = min(kChunk, len - c0);
    __syncthreads();  // the previous chunk is done with Bs, Cs and carry[par]
    for (int i = tid; i < n_valid * N; i += kThreads) {
      const int64_t row = t_begin + c0 + i / N;
      Bs[i] = p.B[row * p.ldbc + i % N];
      Cs[i] = p.C[row * p.ldbc + i % N];
    }
    float xv[kItems], dv[kItems], yv[kItems];
#pragma unroll
    for (int i = 0; i < kItems; i++) {
      const int local = tid * kItems + i;
      const int64_t row = t_begin + c0 + local;
      const bool valid = local < n_valid;
      xv[i] = valid ? p.x[row * p.d_inner + c] : 0.0f;
      dv[i] = valid ? softplus(p.dt[row * p.d_inner + c] + bias) : 0.0f;
      yv[i] = 0.0f;
    }
    __syncthreads();
    for (int n = 0; n < N; n++) {
      const float a = Ac[n];
      Affine loc[kItems];
      Affine run = {1.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < kItems; i++) {
        const int local = tid * kItems + i;
        // Padding steps past the end are the identity map, so the chunk total is the state
        // after the last real step.
        const Affine e = local < n_valid ? Affine{expf(dv[i] * a), dv[i] * Bs[local * N + n] * xv[i]}
                                         : Affine{1.0f, 0.0f};
        run = then(run, e);
        loc[i] = run;
      }
      Affine excl, total;
      block_scan(run, warp_tot, &excl, &total);
      const float h_in = carry[par][n];
      const float h0 = excl.a * h_in + excl.b;  // state before this thread's first step
#pragma unroll
      for (int i = 0; i < kItems; i++) {
        const int local = tid * kItems + i;
        if (local < n_valid) yv[i] += (loc[i].a * h0 + loc[i].b) * Cs[local * N + n];
      }
      if (tid == 0) carry[par ^ 1][n] = total.a * h_in + total.b;
    }
#pragma unroll
    for (int i = 0; i < kItems; i++) {
      const int local = tid * kItems + i;
      if (local < n_valid) {
        const int64_t row = t_begin + c0 + local;
        p.y[row * p.d_inner + c] = (yv[i] + Dc * xv[i]) * silu(p.z[row * p.ldz + c]);
      }
    }
  }
  __syncthreads();
  for (int n = tid; n < N; n += kThreads) st[n] = carry[par][n];
}

// A group of L lanes per (row, channel): lane j owns the V consecutive state entries at V*j,
// V*(j + L), ..., so a warp's state loads and stores are contiguous (the state is (d_inner,
// d_state) row-major) and, with V = 4, 16 bytes wide; L is d_state / V rounded up to a power of
// two, at most 32. The C-weighted sum runs over a lane's entries in order, then a fixed
// butterfly over the group. Every row is computed alone, whatever else is in the batch.
template <int V>
__global__ void selective_scan_step_kernel(SelectiveScanParams p, const int32_t* __restrict__ slots,
                                           int L) {
  pdl_start();
  using Vec = std::conditional_t<V == 4, float4, float>;
  const int g = int((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / L);  // channel
  const int j = int(threadIdx.x) % L;
  const int row = blockIdx.y;
  const bool valid = g < p.d_inner;  // whole groups are valid or not; all lanes shuffle
  const int c = valid ? g : 0;
  const int N = p.d_state;
  float* st = p.state.base + int64_t(slots[row]) * p.state.slot_stride + int64_t(c) * N;
  const float* A = p.A + int64_t(c) * N;
  const float* B = p.B + int64_t(row) * p.ldbc;
  const float* C = p.C + int64_t(row) * p.ldbc;
  const float x = p.x[int64_t(row) * p.d_inner + c];
  const float dt = softplus(p.dt[int64_t(row) * p.d_inner + c] + p.dt_bias[c]);
  const float dtx = dt * x;
  float acc = 0.0f;
  for (int n = V * j; n < N; n += V * L) {
    Vec s = *reinterpret_cast<const Vec*>(st + n);
    const Vec a = *reinterpret_cast<const Vec*>(A + n);
    const Vec b = *reinterpret_cast<const Vec*>(B + n);
    const Vec cc = *reinterpret_cast<const Vec*>(C + n);
    float* sv = reinterpret_cast<float*>(&s);
    const float* av = reinterpret_cast<const float*>(&a);
    const float* bv = reinterpret_cast<const float*>(&b);
    const float* cv = reinterpret_cast<const float*>(&cc);
#pragma unroll
    for (int i = 0; i < V; i++) {
      // h = exp(dt * A) * h + dt * B * x;  y += h . C
      sv[i] = expf(dt * av[i]) * sv[i] + dtx * bv[i];
      acc += sv[i] * cv[i];
    }
    if (valid) *reinterpret_cast<Vec*>(st + n) = s;
  }
  for (int o = L / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (valid && j == 0)
    p.y[int64_t(row) * p.d_inner + c] = (acc + p.D[c] * x) * silu(p.z[int64_t(row) * p.ldz + c]);
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
  const size_t smem = size_t(2) * kChunk * p.d_state * sizeof(float);
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(selective_scan_prefill_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  selective_scan_prefill_kernel<<<dim3(unsigned(p.d_inner), unsigned(batch.n_seq)), kThreads,
                                  smem, stream>>>(p, batch);
  CUDA_CHECK(cudaGetLastError());
}

void selective_scan_step(const SelectiveScanParams& p, int n, const int32_t* slots,
                         cudaStream_t stream) {
  check(p, "selective_scan_step");
  require(slots && n >= 0 && n <= 65535, "selective_scan_step", "bad slots or row count");
  if (n == 0) return;
  const int threads = 128;
  // 16-byte state, A, B and C accesses where every row and channel start is 16-byte aligned.
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  const int V = p.d_state % 4 == 0 && p.ldbc % 4 == 0 && p.state.slot_stride % 4 == 0 &&
                        aligned(p.state.base) && aligned(p.A) && aligned(p.B) && aligned(p.C)
                    ? 4
                    : 1;
  int L = 1;
  while (L * V < p.d_state && L < 32) L *= 2;
  const dim3 grid(unsigned(ceil_div(int64_t(p.d_inner) * L, threads)), unsigned(n));
  if (V == 4)
    launch_pdl(selective_scan_step_kernel<4>, grid, dim3(threads), 0, stream, p, slots, L);
  else
    launch_pdl(selective_scan_step_kernel<1>, grid, dim3(threads), 0, stream, p, slots, L);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
