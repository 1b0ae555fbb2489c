// Weight-streaming patterns for the one-sequence decode projection, measured alone: how the
// bytes of a (M, K) 16-bit matrix are cut into copies decides how close a GEMV gets to the
// copy bandwidth. Each variant reads every weight once through cp.async into a per-warp ring
// in shared memory (as linear_decode's stream kernel does), adds the values so nothing is
// optimised away, and is timed with CUDA events over a rotation of matrices larger than L2.
//
//   nvcc -O3 -arch=sm_90 -std=c++17 scripts/proto/stream_patterns.cu -o /tmp/stream_patterns
//   /tmp/stream_patterns [M K]      (default 8192 2048: mamba-1.4b's in_proj)
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                        \
  do {                                                                               \
    cudaError_t e = (x);                                                             \
    if (e != cudaSuccess) {                                                          \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

__device__ __forceinline__ void cp16(void* dst, const void* src) {
  const unsigned d = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void wait_n() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// A warp owns 16 rows and a K range of `span` values; one unit = 16 rows x UNIT values, copied
// with ROWS_PER_INSN rows per warp instruction (32 lanes x 16 B spread over them), DEPTH units
// in flight. UNIT = 32, ROWS_PER_INSN = 8 is the shipped kernel's pattern (64 B per row).
template <int UNIT, int DEPTH>
__global__ void __launch_bounds__(128) stream_kernel(const __half* __restrict__ W, int64_t M,
                                                     int64_t K, int64_t span, float* out) {
  constexpr int kRowBytes = UNIT * 2;             // bytes of one row in a unit
  constexpr int kLanesPerRow = kRowBytes / 16;    // lanes copying one row
  constexpr int kRowsPerInsn = 32 / kLanesPerRow;  // rows per warp instruction (<= 32)
  constexpr int kInsns = 16 / kRowsPerInsn;        // instructions per unit
  static_assert(kLanesPerRow <= 32 && 16 % kRowsPerInsn == 0, "unit shape");
  extern __shared__ __align__(16) __half smem[];  // [4 warps][DEPTH][16 * UNIT]
  __half(*ring)[DEPTH][16 * UNIT] = reinterpret_cast<__half(*)[DEPTH][16 * UNIT]>(smem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tiles = M / 16;
  const int64_t task = int64_t(blockIdx.x) * 4 + warp;
  const int64_t tile = task % tiles, slice = task / tiles;
  if (slice * span >= K) return;
  const int64_t row0 = tile * 16, k0 = slice * span;
  const int n_units = int(span / UNIT);
  const int lr = lane / kLanesPerRow, lc = lane % kLanesPerRow;
  const auto issue = [&](int u) {
#pragma unroll
    for (int i = 0; i < kInsns; i++) {
      const int r = i * kRowsPerInsn + lr;
      cp16(&ring[warp][u % DEPTH][r * UNIT + lc * 8],
           W + (row0 + r) * K + k0 + int64_t(u) * UNIT + lc * 8);
    }
  };
#pragma unroll
  for (int u = 0; u < DEPTH - 1; u++) {
    if (u < n_units) issue(u);
    commit();
  }
  float acc = 0.0f;
  for (int u = 0; u < n_units; u++) {
    if (u + DEPTH - 1 < n_units) issue(u + DEPTH - 1);
    commit();
    wait_n<DEPTH - 1>();
#pragma unroll
    for (int i = 0; i < kInsns; i++) {  // read back what this lane copied
      const int r = i * kRowsPerInsn + lr;
      const uint4 v = *reinterpret_cast<const uint4*>(&ring[warp][u % DEPTH][r * UNIT + lc * 8]);
      const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
      for (int j = 0; j < 4; j++) acc += __low2float(h[j]) + __high2float(h[j]);
    }
  }
  if (acc == 12345.678f) out[0] = acc;  // keeps the loads
}

template <int UNIT, int DEPTH>
float time_variant(const std::vector<__half*>& mats, int64_t M, int64_t K, int64_t span,
                   float* out) {
  const int64_t tasks = (M / 16) * (K / span);
  const dim3 grid(unsigned((tasks + 3) / 4));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  const int smem = 4 * DEPTH * 16 * UNIT * 2;
  CK(cudaFuncSetAttribute(stream_kernel<UNIT, DEPTH>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          smem));
  std::vector<float> t;
  for (int rep = 0; rep < 24; rep++) {
    const __half* W = mats[rep % mats.size()];
    CK(cudaEventRecord(a));
    stream_kernel<UNIT, DEPTH><<<grid, 128, smem>>>(W, M, K, span, out);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (rep >= 4) t.push_back(ms);
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  const int64_t M = argc > 2 ? std::atoll(argv[1]) : 8192;
  const int64_t K = argc > 2 ? std::atoll(argv[2]) : 2048;
  const size_t bytes = size_t(M) * K * 2;
  std::vector<__half*> mats;
  for (size_t total = 0; total < (size_t(400) << 20); total += bytes) {  // > L2, rotated
    __half* p;
    CK(cudaMalloc(&p, bytes));
    CK(cudaMemset(p, 0x3c, bytes));
    mats.push_back(p);
  }
  float* out;
  CK(cudaMalloc(&out, 4));
  std::printf("M %lld K %lld (%.1f MB), %zu matrices rotated\n", (long long)M, (long long)K,
              bytes / 1e6, mats.size());
  std::printf("%-34s %8s %8s %9s\n", "variant", "span", "us", "TB/s");
  const auto row = [&](const char* name, int64_t span, float ms) {
    std::printf("%-34s %8lld %8.2f %9.2f\n", name, (long long)span, ms * 1e3,
                bytes / (ms * 1e-3) / 1e12);
  };
  for (int64_t span : {K, K / 2, K / 4, K / 8}) {
    if (span < 512) continue;
    row("64 B/row, depth 8 (shipped)", span, time_variant<32, 8>(mats, M, K, span, out));
    row("64 B/row, depth 4", span, time_variant<32, 4>(mats, M, K, span, out));
    row("128 B/row, depth 4", span, time_variant<64, 4>(mats, M, K, span, out));
    row("256 B/row, depth 2", span, time_variant<128, 2>(mats, M, K, span, out));
    row("256 B/row, depth 3", span, time_variant<128, 3>(mats, M, K, span, out));
    row("512 B/row, depth 2", span, time_variant<256, 2>(mats, M, K, span, out));
  }
  // The ceiling: a device-to-device copy of one matrix (read + write counted).
  {
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int rep = 0; rep < 12; rep++) {
      CK(cudaEventRecord(a));
      CK(cudaMemcpyAsync(mats[rep % mats.size()], mats[(rep + 1) % mats.size()], bytes,
                         cudaMemcpyDeviceToDevice));
      CK(cudaEventRecord(b));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      if (rep >= 2) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    const float ms = t[t.size() / 2];
    std::printf("%-34s %8s %8.2f %9.2f (read + write)\n", "cudaMemcpy D2D", "-", ms * 1e3,
                2 * bytes / (ms * 1e-3) / 1e12);
  }
  return 0;
}
