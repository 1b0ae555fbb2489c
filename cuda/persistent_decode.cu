#include "persistent_decode.cuh"

#include <algorithm>

#include "conv1d.cuh"
#include "mma.cuh"
#include "persistent_schedule.h"
#include "rmsnorm.cuh"
#include "selective_scan.cuh"

namespace mamba::cuda {
namespace {

constexpr int kWarps = 16;  // per block, one block per SM
constexpr int kThreads = kWarps * 32;
constexpr int kRing = 8;     // weight chunks in flight per warp (1 KiB each)
using namespace persistent;
static_assert(kResidues == kLinearDecodeWarps, "units are linear_decode's warps");

struct Params {
  PersistentDecodeConfig cfg;
  PersistentDecodeArgs a;
  Schedule sc;
  int norm_threads = 0;       // rmsnorm_residual's block width for d_model
  int n_groups = 0;           // the norm's 16-value groups, ceil(d_model / 16)
  int xs_pitch = 0;           // 16-bit values per row of the staged activations
  int e_pitch = 0;            // floats per row of dt_low | B | C
  int log2_L = 0;             // scan lanes per channel, as selective_scan_step picks
};

// A warp's weight stream (persistent_schedule.h) through its ring. Lane (g, c) copies the 16
// bytes of rows g and g + 8 of the unit's tile at K = 32 ch + 8c (its own mma fragments, so no
// other lane reads them) into slot s of its warp's ring: [kRing][row half 2][lane 32] x 16 B.
struct Stream {
  Cursor cur;
  uint4* ring = nullptr;  // this warp's kRing * 64 slots
  int issued = 0, taken = 0;

  // Requests the next chunk of the stream into its slot (one commit group, empty at the end).
  template <typename T>
  __device__ void issue(const Params& p, int wid, int lane) {
    if (!cur.done(p.sc)) {
      const ProjShape& s = p.sc.sh[cur.ph];
      const T* W = static_cast<const T*>(p.a.layers[cur.layer].proj[cur.ph]);
      const int g = lane / 4, c = lane % 4;
      const int k = cur.chunk() * kChunk + 8 * c;
      uint4* slot = ring + (issued % kRing) * 64;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int row = cur.unit.tile * 16 + g + 8 * h;
        const bool ok = row < s.M && k < s.K;
        cp_async16(slot + h * 32 + lane, ok ? W + int64_t(row) * s.K + k : W, ok);
      }
      cur.next(p.sc, wid);
    }
    cp_async_commit();
    issued++;
  }
  // The next chunk's fragments: a[0] row g, a[1] row g + 8, 8 K values each as 4 pairs.
  __device__ void take(uint32_t (&a)[2][4], int lane) {
    cp_async_wait<kRing - 1>();
    const uint4* slot = ring + (taken % kRing) * 64;
    const uint4 r0 = slot[lane], r1 = slot[32 + lane];
    a[0][0] = r0.x, a[0][1] = r0.y, a[0][2] = r0.z, a[0][3] = r0.w;
    a[1][0] = r1.x, a[1][1] = r1.y, a[1][2] = r1.z, a[1][3] = r1.w;
    taken++;
  }
};

// The mma of one chunk: acc += W[16 rows, 32 K] x[8 rows, 32 K]^T, as linear_decode's
// one-sequence kernel does it (two k16 steps over a permutation of the chunk's K).
template <typename T>
__device__ __forceinline__ void chunk_mma(float (&acc)[4], const uint32_t (&a)[2][4],
                                          const uint32_t (&b)[4]) {
  mma16816<T>(acc, a[0][0], a[1][0], a[0][1], a[1][1], b[0], b[1]);
  mma16816<T>(acc, a[0][2], a[1][2], a[0][3], a[1][3], b[2], b[3]);
}

// Lane (g, c)'s activation fragment of chunk ch: row g's K values 32 ch + 8c .. + 8, from the
// staged activations (zeros for rows past n).
__device__ __forceinline__ void x_fragment(const uint16_t* xs, int pitch, int n, int g, int c,
                                           int ch, uint32_t (&b)[4]) {
  uint4 v = make_uint4(0, 0, 0, 0);
  if (g < n) v = *reinterpret_cast<const uint4*>(xs + g * pitch + ch * kChunk + 8 * c);
  b[0] = v.x, b[1] = v.y, b[2] = v.z, b[3] = v.w;
}

template <typename T>
__device__ __forceinline__ uint16_t to16(float v) {
  const T h = T(v);  // round to nearest even, as pack2 does
  return *reinterpret_cast<const uint16_t*>(&h);
}

// Rows [0, n) of src (ld floats apart), K values each, rounded to T into the staged
// activations, zeros up to the next multiple of 32. src is written by other blocks: read
// through L2.
template <typename T>
__device__ void stage(uint16_t* xs, int pitch, int n, const float* src, int ld, int K) {
  const int Kp = (K + kChunk - 1) / kChunk * kChunk;
  for (int e = int(threadIdx.x); e < n * Kp; e += kThreads) {
    const int r = e / Kp, k = e % Kp;
    xs[r * pitch + k] = to16<T>(k < K ? __ldcg(src + int64_t(r) * ld + k) : 0.0f);
  }
}

// Output (row, col) of a projection from its units' partial sums, in linear_decode's order:
// per slice ((P0 + P1) + P2) + P3 over the residues; one slice alone, else
// ((0 + S0) + S1) + ...; then + bias (or + 0).
__device__ __forceinline__ float reduce_out(const float* part, const ProjShape& s, int row,
                                            int col, const float* bias) {
  const auto P = [&](int slice, int w) {
    return __ldcg(part + ((int64_t(slice) * kResidues + w) * 8 + col) * s.mpad + row);
  };
  const auto S = [&](int slice) {
    float v = P(slice, 0);
#pragma unroll
    for (int w = 1; w < kResidues; w++) v = v + P(slice, w);
    return v;
  };
  float v;
  if (s.splits == 1) {
    v = S(0);
  } else {
    v = 0.0f;
    for (int sl = 0; sl < s.splits; sl++) v += S(sl);
  }
  return v + (bias ? bias[row] : 0.0f);
}

// Every unit this warp takes of a projection phase (in_proj, x_proj, out_proj): the chunks'
// products from the ring, the unit's partial sums to the workspace, plane (slice, residue).
template <typename T>
__device__ void proj_phase(const Params& p, Stream& st, int ph, int layer, const uint16_t* xs,
                           int wid, int lane) {
  const ProjShape& s = p.sc.sh[ph];
  const int g = lane / 4, c = lane % 4;
  for (int u = p.sc.first_unit(wid, layer, ph); u < s.units; u += p.sc.total_warps) {
    const Unit un = unit_of(s, ph, u);
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < un.count; i++) {
      uint32_t a[2][4], b[4];
      st.take(a, lane);
      x_fragment(xs, p.xs_pitch, p.a.n, g, c, un.ch0 + un.step * i, b);
      chunk_mma<T>(acc, a, b);
      st.issue<T>(p, wid, lane);  // the slot just read, refilled
    }
    // acc = {(r, q), (r, q + 1), (r + 8, q), (r + 8, q + 1)}, feature r = g, batch row q = 2c.
    // Plane (slice, residue) is (8 batch rows, mpad features): a reduction over consecutive
    // features reads consecutive addresses.
    float* out = p.a.part + (int64_t(un.slice) * kResidues + un.w) * 8 * s.mpad + un.tile * 16;
    out[(2 * c) * s.mpad + g] = acc[0];
    out[(2 * c + 1) * s.mpad + g] = acc[1];
    out[(2 * c) * s.mpad + g + 8] = acc[2];
    out[(2 * c + 1) * s.mpad + g + 8] = acc[3];
  }
}

// A barrier across the whole grid (every block resident: one per SM, checked at launch). The
// counter was zeroed before the launch; `target` counts the barriers passed times the grid.
// Writes before it are visible after it to reads through L2 (__ldcg): L1 is not coherent.
__device__ __forceinline__ void grid_barrier(unsigned* count, unsigned& target) {
  __syncthreads();
  target += gridDim.x;
  if (threadIdx.x == 0) {
    // Release: the block's writes (ordered before this thread by the barrier above) are
    // visible to whoever acquires the count that includes this add.
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(count) : "memory");
    unsigned seen = 0, spins = 0;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(count) : "memory");
      // A grid that is not all resident would wait forever: fail the launch instead (about a
      // second of spinning; a barrier normally takes a microsecond).
      if (++spins == (1u << 24)) __trap();
    } while (seen < target);
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads, 1) persistent_decode_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const PersistentDecodeConfig& cfg = p.cfg;
  const PersistentDecodeArgs& a = p.a;
  const int t = int(threadIdx.x), warp = t / 32, lane = t % 32, g = lane / 4, c = lane % 4;
  const int wid = int(blockIdx.x) * kWarps + warp;
  const int gtid = int(blockIdx.x) * kThreads + t, gthreads = int(gridDim.x) * kThreads;
  const int n = a.n, DM = cfg.d_model, DI = cfg.d_inner, N = cfg.d_state, R = cfg.dt_rank;
  const int E = R + 2 * N;

  // Shared memory: the rings, the staged 16-bit activations (n, xs_pitch), dt_low | B | C
  // (n, e_pitch) floats, each warp's dt tile (16 channels x 8 rows), the norm's group sums and
  // total.
  uint4* rings = reinterpret_cast<uint4*>(smem);
  uint16_t* xs = reinterpret_cast<uint16_t*>(rings + kWarps * kRing * 64);
  float* dbl = reinterpret_cast<float*>(xs + n * p.xs_pitch);
  float* dts = dbl + n * p.e_pitch + warp * 16 * 8;
  float* groups = dbl + n * p.e_pitch + kWarps * 16 * 8;  // n_groups + 1

  // The first kRing chunks of this warp's stream are requested before anything else.
  Stream st;
  st.ring = rings + warp * kRing * 64;
  st.cur.start(p.sc, wid);
  for (int s = 0; s < kRing; s++) st.issue<T>(p, wid, lane);

  unsigned target = 0;
  for (int l = 0; l < cfg.n_layer; l++) {
    const PersistentDecodeLayer& lw = a.layers[l];

    // ---- P1: xn = RMSNorm(h) * w, as rmsnorm_residual computes it with norm_threads threads
    // (the residual was added by the previous layer's P6), rounded to T for in_proj.
    const int B = p.norm_threads;
    for (int r = 0; r < n; r++) {
      const float* hr = a.h + int64_t(r) * DM;
      constexpr int kKeep = kRmsNormKeep;
      float keep[kKeep];
      const float scale = rmsnorm_row_scale([&](int j) { return __ldcg(hr + j); }, DM,
                                            cfg.norm_eps, B, keep, groups, groups + p.n_groups);
      if (t < B) {
#pragma unroll
        for (int i = 0; i < kKeep; i++) {
          const int j = t + i * B;
          if (j < DM) xs[r * p.xs_pitch + j] = to16<T>(keep[i] * scale * lw.norm_w[j]);
        }
        for (int j = t + kKeep * B; j < DM; j += B)
          xs[r * p.xs_pitch + j] = to16<T>(__ldcg(hr + j) * scale * lw.norm_w[j]);
      }
      const int Kp = (DM + kChunk - 1) / kChunk * kChunk;
      for (int j = DM + t; j < Kp; j += kThreads) xs[r * p.xs_pitch + j] = 0;
    }
    __syncthreads();
    // xz = xn @ in_proj.T
    proj_phase<T>(p, st, kIn, l, xs, wid, lane);
    grid_barrier(a.sync, target);

    // ---- P2: x, z = xz (+ bias); x = silu(conv1d(conv_state ++ x) + conv_b), state shifted.
    {
      Conv1dParams cp;
      cp.w = lw.conv_w;
      cp.b = lw.conv_b;
      cp.state = lw.conv_state;
      cp.dim = DI;
      cp.d_conv = cfg.d_conv;
      cp.out = a.xc;
      for (int e = gtid; e < n * DI; e += gthreads) {
        const int r = e / DI, ch = e % DI;
        const float x = reduce_out(a.part, p.sc.sh[kIn], ch, r, lw.in_proj_b);
        a.z[e] = reduce_out(a.part, p.sc.sh[kIn], DI + ch, r, lw.in_proj_b);
        conv1d_step_one(cp, a.slots[r], r, ch, x);
      }
    }
    grid_barrier(a.sync, target);

    // ---- P3: dbl = x @ x_proj.T
    stage<T>(xs, p.xs_pitch, n, a.xc, DI, DI);
    __syncthreads();
    proj_phase<T>(p, st, kX, l, xs, wid, lane);
    grid_barrier(a.sync, target);

    // ---- P4: dt_low | B | C, summed by every block for itself; dt_low rounded for dt_proj.
    for (int e = t; e < n * E; e += kThreads) {
      const int r = e / E, i = e % E;
      dbl[r * p.e_pitch + i] = reduce_out(a.part, p.sc.sh[kX], i, r, nullptr);
    }
    __syncthreads();
    {
      const int Kp = (R + kChunk - 1) / kChunk * kChunk;
      for (int e = t; e < n * Kp; e += kThreads) {
        const int r = e / Kp, k = e % Kp;
        xs[r * p.xs_pitch + k] = to16<T>(k < R ? dbl[r * p.e_pitch + k] : 0.0f);
      }
    }
    __syncthreads();
    {
      const ProjShape& s = p.sc.sh[kDt];
      const int L = 1 << p.log2_L, per = 32 >> p.log2_L;  // lanes a channel, channels a pass
      for (int u = p.sc.first_unit(wid, l, kDt); u < s.units; u += p.sc.total_warps) {
        // dt = dt_low @ dt_proj.T for the tile's 16 channels: chunk ch is residue ch % 4's, as
        // in linear_decode's one-sequence kernel; its residues' sums added in order, + 0.
        float acc[kResidues][4] = {};
        for (int ch = 0; ch < s.nch; ch++) {
          uint32_t wa[2][4], b[4];
          st.take(wa, lane);
          x_fragment(xs, p.xs_pitch, n, g, c, ch, b);
          switch (ch % kResidues) {  // (fixed indices: the sums stay in registers)
            case 0: chunk_mma<T>(acc[0], wa, b); break;
            case 1: chunk_mma<T>(acc[1], wa, b); break;
            case 2: chunk_mma<T>(acc[2], wa, b); break;
            default: chunk_mma<T>(acc[3], wa, b); break;
          }
          st.issue<T>(p, wid, lane);
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float v = acc[0][i];
#pragma unroll
          for (int w = 1; w < kResidues; w++) v = v + acc[w][i];
          const int rr = g + (i >= 2 ? 8 : 0), q = 2 * c + (i & 1);
          dts[rr * 8 + q] = v + 0.0f;
        }
        __syncwarp();
        // The scan step of the tile's channels, L lanes a (channel, row), as
        // selective_scan_step does it.
        for (int pair0 = 0; pair0 < 16 * n; pair0 += per) {
          const int pair = pair0 + (lane >> p.log2_L), j = lane & (L - 1);
          const int cl = pair % 16, r = pair / 16, ch = u * 16 + cl;
          const bool valid = pair < 16 * n && ch < DI;
          const int cc = valid ? ch : 0, rr = valid ? r : 0, cli = valid ? cl : 0;
          const int xi = rr * DI + cc;
          const float x = __ldcg(a.xc + xi);
          // dt = softplus(dt + dt_bias)
          const float dt = softplus(dts[cli * 8 + rr] + lw.dt_bias[cc]);
          float* sst = lw.ssm_state.base + int64_t(a.slots[rr]) * lw.ssm_state.slot_stride +
                       int64_t(cc) * N;
          const float* Br = dbl + rr * p.e_pitch + R;
          const float hc = selective_scan_step_lanes<4>(sst, lw.A + int64_t(cc) * N, Br, Br + N,
                                                        N, dt, dt * x, j, p.log2_L, valid);
          if (valid && j == 0)
            a.y[xi] = selective_scan_output(hc, lw.D[cc], x, __ldcg(a.z + xi));
        }
        __syncwarp();  // dts is rewritten by the next tile
      }
    }
    grid_barrier(a.sync, target);

    // ---- P5: out = y @ out_proj.T
    stage<T>(xs, p.xs_pitch, n, a.y, DI, DI);
    __syncthreads();
    proj_phase<T>(p, st, kOut, l, xs, wid, lane);
    grid_barrier(a.sync, target);

    // ---- P6: h += out (+ bias); the last layer's out is left for the final norm to add.
    const bool last = l + 1 == cfg.n_layer;
    for (int e = gtid; e < n * DM; e += gthreads) {
      const int r = e / DM, j = e % DM;
      const float o = reduce_out(a.part, p.sc.sh[kOut], j, r, lw.out_proj_b);
      if (last)
        a.out[e] = o;
      else
        a.h[e] = __ldcg(a.h + e) + o;
    }
    if (!last) grid_barrier(a.sync, target);
  }
  cp_async_wait<0>();  // the stream's empty tail groups
}

Params make_params(const PersistentDecodeConfig& cfg, const PersistentDecodeArgs& a,
                   int total_warps) {
  Params p;
  p.cfg = cfg;
  p.a = a;
  const int DM = cfg.d_model, DI = cfg.d_inner, R = cfg.dt_rank, E = R + 2 * cfg.d_state;
  const auto shape = [&](int M, int K, int ph, bool whole_tiles) {
    return shape_of(M, K, cfg.split[ph].splits, int(cfg.split[ph].chunks_per_split), whole_tiles);
  };
  const ProjShape sh[kPhases] = {shape(2 * DI, DM, kIn, false), shape(E, DI, kX, false),
                                 shape(DI, R, kDt, true), shape(DM, DI, kOut, false)};
  p.sc = make_schedule(cfg.n_layer, sh, total_warps);
  p.norm_threads = rmsnorm_threads(DM);
  p.n_groups = int(ceil_div(DM, 16));
  const int kmax = int(ceil_div(std::max({DM, DI, R}), kChunk) * kChunk);
  p.xs_pitch = kmax + 32;  // rows 64 bytes apart mod 128: lanes g and g + 1 on other banks
  p.e_pitch = int(ceil_div(E, 4) * 4);
  while ((4 << p.log2_L) < cfg.d_state && p.log2_L < 5) p.log2_L++;
  return p;
}

size_t smem_bytes(const Params& p, int n) {
  return size_t(kWarps) * kRing * 1024 + size_t(n) * p.xs_pitch * 2 +
         size_t(n) * p.e_pitch * 4 + size_t(kWarps) * 16 * 8 * 4 + size_t(p.n_groups + 1) * 4;
}

// Raises the kernel's dynamic shared-memory limit to at least `bytes` (never lowers it: models
// of several sizes may share the process).
template <typename T>
void set_smem_limit(size_t bytes) {
  static size_t set = 0;
  if (bytes <= set) return;
  CUDA_CHECK(cudaFuncSetAttribute(persistent_decode_kernel<T>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  set = bytes;
}

// Blocks of the kernel that fit on one SM with `bytes` of shared memory.
template <typename T>
int blocks_per_sm(size_t bytes) {
  int dev = 0, optin = 0, nb = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (bytes > size_t(optin)) return 0;
  set_smem_limit<T>(bytes);
  CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, persistent_decode_kernel<T>, kThreads,
                                                    bytes));
  return nb;
}

}  // namespace

std::string persistent_decode_unsupported(const PersistentDecodeConfig& cfg) {
  if (cfg.n_layer < 1 || cfg.d_model < 1 || cfg.d_inner < 1 || cfg.dt_rank < 1)
    return "empty shape";
  for (int K : {cfg.d_model, cfg.d_inner, cfg.dt_rank})
    if (K % 8 != 0) return "a projection's K is not a multiple of 8";
  if (cfg.split[kDt].splits != 1) return "dt_proj's K is cut into slices";
  if (cfg.d_state % 4 != 0 || cfg.d_state > kMaxScanState || cfg.dt_rank % 4 != 0)
    return "d_state or dt_rank not a multiple of 4, or d_state above 64";
  if (cfg.d_conv < 1 || cfg.d_conv > kMaxConvWidth) return "d_conv out of range";
  const int64_t widest = std::max<int64_t>(2 * int64_t(cfg.d_inner), cfg.d_model);
  if (widest * kPersistentMaxRows * 8 >= (int64_t(1) << 31)) return "too wide";
  const Params p = make_params(cfg, PersistentDecodeArgs{}, 1);
  const size_t bytes = smem_bytes(p, kPersistentMaxRows);
  const int nb = cfg.bf16 ? blocks_per_sm<__nv_bfloat16>(bytes) : blocks_per_sm<__half>(bytes);
  if (nb < 1) return "its shared memory does not fit on an SM";
  return "";
}

size_t persistent_decode_part_floats(const PersistentDecodeConfig& cfg) {
  const Params p = make_params(cfg, PersistentDecodeArgs{}, 1);
  size_t most = 0;
  for (int ph : {kIn, kX, kOut})
    most = std::max(most, size_t(p.sc.sh[ph].splits) * kResidues * p.sc.sh[ph].mpad * 8);
  return most;
}

void persistent_decode(const PersistentDecodeConfig& cfg, const PersistentDecodeArgs& a,
                       cudaStream_t stream) {
  require(a.layers && a.slots && a.h && a.out && a.xc && a.z && a.y && a.part && a.sync,
          "persistent_decode", "null pointer");
  require(a.n >= 1 && a.n <= kPersistentMaxRows, "persistent_decode", "rows out of range 1..8");
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const Params p = make_params(cfg, a, sms * kWarps);
  const size_t bytes = smem_bytes(p, a.n);  // persistent_decode_unsupported checked 8 rows fit
  if (cfg.bf16)
    set_smem_limit<__nv_bfloat16>(bytes);
  else
    set_smem_limit<__half>(bytes);
  CUDA_CHECK(cudaMemsetAsync(a.sync, 0, sizeof(unsigned), stream));
  if (cfg.bf16)
    persistent_decode_kernel<__nv_bfloat16><<<sms, kThreads, bytes, stream>>>(p);
  else
    persistent_decode_kernel<__half><<<sms, kThreads, bytes, stream>>>(p);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
