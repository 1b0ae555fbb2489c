// Do Hopper's warpgroup MMA (wgmma, m64n8k16) and the warp MMA the decode kernels use
// (mma.sync m16n8k16) give the same bits for the same 16 products a step?
//
// If they do, a wgmma GEMM can keep linear_decode's batch invariance: every output's sum is
// then made of the same k16 steps, in the same order, whichever instruction runs them. Each
// block below is one trial: a 64 x (16 S) f16 (or bf16) matrix A, a (16 S) x 8 matrix B, a
// float32 C, and D = C + A B accumulated over S k16 steps, once with mma.sync (4 warps, 16 rows
// each) and once with wgmma (the warpgroup; A from the same registers, B from shared memory
// through a matrix descriptor). Inputs span 2^-12 .. 2^12 with random signs, so that the
// products' alignment inside a step matters. The host counts outputs whose bits differ, and
// checks both against a double-precision sum (a layout mistake shows there, not as a rounding
// difference).
//
// Build and run on the GPU machine (wgmma needs sm_90a):
//   nvcc -O2 -std=c++17 -arch=sm_90a scripts/proto/wgmma_vs_mma.cu -o /tmp/wgmma_vs_mma && \
//     /tmp/wgmma_vs_mma
#include "../../cuda/mma.cuh"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#define CHECK(x)                                                                         \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));   \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

constexpr int kMaxSteps = 8;

// Two 16-bit values (element k, k + 1 of a row) packed as mma operands want them.
__device__ uint32_t pack(const uint16_t* p) { return uint32_t(p[0]) | (uint32_t(p[1]) << 16); }

// D (64 x 8) += A (64 x 16, registers) B (16 x 8, shared memory), one warpgroup. T is
// __half or __nv_bfloat16, as for the decode kernels' mma16816 (cuda/mma.cuh), which the
// mma.sync side of the test calls.
#define MAMBA_WGMMA_M64N8K16(TYPE)                                                            \
  asm volatile(                                                                               \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"                                             \
      "wgmma.mma_async.sync.aligned.m64n8k16.f32." TYPE "." TYPE                              \
      " {%0,%1,%2,%3}, {%4,%5,%6,%7}, %8, p, 1, 1, 0;\n}\n"                                    \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                        \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1)                         \
      : "memory")
template <typename T>
__device__ void wgmma(float (&d)[4], const uint32_t (&a)[4], uint64_t desc) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    MAMBA_WGMMA_M64N8K16("bf16");
  else
    MAMBA_WGMMA_M64N8K16("f16");
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#else
  asm volatile("trap;");
#endif
}

// Shared-memory matrix descriptor, no swizzle: start address, leading-dimension byte offset
// (between the two 8 x 8 core matrices along K) and stride byte offset (between core matrices
// along N; one here), each >> 4.
__device__ uint64_t descriptor(const void* smem, uint32_t lbo, uint32_t sbo) {
  const uint64_t addr = uint64_t(__cvta_generic_to_shared(smem));
  return ((addr & 0x3FFFF) >> 4) | (uint64_t((lbo & 0x3FFFF) >> 4) << 16) |
         (uint64_t((sbo & 0x3FFFF) >> 4) << 32);
}

// Block t: trial t. A (64, 16 S) and B^T (8, 16 S) row-major 16-bit patterns, C (64, 8).
// out_mma and out_wg: (64, 8) each.
template <bool kBf16, typename T = std::conditional_t<kBf16, __nv_bfloat16, __half>>
__global__ void __launch_bounds__(128) trial_kernel(const uint16_t* A, const uint16_t* Bt,
                                                    const float* C, int S, float* out_mma,
                                                    float* out_wg) {
  const int t = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4, K = 16 * S;
  A += int64_t(t) * 64 * K;
  Bt += int64_t(t) * 8 * K;
  C += int64_t(t) * 64 * 8;
  // B of one step in the canonical no-swizzle K-major layout: core matrix kk (K values
  // 8 kk .. 8 kk + 7) at 128 kk bytes, its row n (16 bytes) at 16 n.
  __shared__ __align__(128) uint16_t bs[kMaxSteps][2 * 64];
  for (int e = threadIdx.x; e < S * 128; e += 128) {
    const int s = e / 128, kk = (e % 128) / 64, n = (e % 64) / 8, k8 = e % 8;
    bs[s][kk * 64 + n * 8 + k8] = Bt[n * K + 16 * s + 8 * kk + k8];
  }
  __syncthreads();
  const int r0 = 16 * warp + g;  // this lane's rows r0 and r0 + 8, columns 2c and 2c + 1
  float dm[4] = {C[r0 * 8 + 2 * c], C[r0 * 8 + 2 * c + 1], C[(r0 + 8) * 8 + 2 * c],
                 C[(r0 + 8) * 8 + 2 * c + 1]};
  float dw[4] = {dm[0], dm[1], dm[2], dm[3]};
  for (int s = 0; s < S; s++) {
    const int k0 = 16 * s;
    const uint32_t a[4] = {pack(A + r0 * K + k0 + 2 * c), pack(A + (r0 + 8) * K + k0 + 2 * c),
                           pack(A + r0 * K + k0 + 2 * c + 8),
                           pack(A + (r0 + 8) * K + k0 + 2 * c + 8)};
    const uint32_t b0 = pack(Bt + g * K + k0 + 2 * c), b1 = pack(Bt + g * K + k0 + 2 * c + 8);
    mamba::cuda::mma16816<T>(dm, a[0], a[1], a[2], a[3], b0, b1);
    wgmma<T>(dw, a, descriptor(bs[s], 128, 256));
  }
  const int o[4] = {r0 * 8 + 2 * c, r0 * 8 + 2 * c + 1, (r0 + 8) * 8 + 2 * c,
                    (r0 + 8) * 8 + 2 * c + 1};
  for (int i = 0; i < 4; i++) {
    out_mma[int64_t(t) * 512 + o[i]] = dm[i];
    out_wg[int64_t(t) * 512 + o[i]] = dw[i];
  }
}

float half_bits_to_float(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  return __half2float(__half_raw{h});
}

uint16_t float_to_bits(float v, bool bf16) {
  if (bf16) return __nv_bfloat16_raw(__float2bfloat16_rn(v)).x;
  return __half_raw(__float2half_rn(v)).x;
}

// Returns the number of outputs whose bits differ.
template <bool kBf16>
long run(int S, int trials, std::mt19937& rng) {
  const int K = 16 * S;
  std::uniform_real_distribution<float> mant(1.0f, 2.0f), expo(-12.0f, 12.0f);
  std::bernoulli_distribution sign(0.5);
  const auto value = [&](float range) {
    const float v = mant(rng) * std::exp2(std::floor(expo(rng) * range / 12.0f));
    return sign(rng) ? -v : v;
  };
  std::vector<uint16_t> A(size_t(trials) * 64 * K), Bt(size_t(trials) * 8 * K);
  std::vector<float> C(size_t(trials) * 512);
  // f16 has a narrow exponent range: keep the products inside it (2^-6 .. 2^6 each side).
  const float range = kBf16 ? 12.0f : 6.0f;
  for (auto& v : A) v = float_to_bits(value(range), kBf16);
  for (auto& v : Bt) v = float_to_bits(value(range), kBf16);
  for (auto& v : C) v = value(12.0f);
  uint16_t *dA, *dB;
  float *dC, *dm, *dw;
  CHECK(cudaMalloc(&dA, A.size() * 2));
  CHECK(cudaMalloc(&dB, Bt.size() * 2));
  CHECK(cudaMalloc(&dC, C.size() * 4));
  CHECK(cudaMalloc(&dm, C.size() * 4));
  CHECK(cudaMalloc(&dw, C.size() * 4));
  CHECK(cudaMemcpy(dA, A.data(), A.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dB, Bt.data(), Bt.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice));
  trial_kernel<kBf16><<<trials, 128>>>(dA, dB, dC, S, dm, dw);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());
  std::vector<float> om(C.size()), ow(C.size());
  CHECK(cudaMemcpy(om.data(), dm, om.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(ow.data(), dw, ow.size() * 4, cudaMemcpyDeviceToHost));
  long differ = 0;
  double worst_m = 0, worst_w = 0;
  for (int t = 0; t < trials; t++)
    for (int r = 0; r < 64; r++)
      for (int n = 0; n < 8; n++) {
        const size_t i = size_t(t) * 512 + r * 8 + n;
        double ref = C[i], mag = std::fabs(C[i]);
        for (int k = 0; k < K; k++) {
          const double p = double(half_bits_to_float(A[(size_t(t) * 64 + r) * K + k], kBf16)) *
                           half_bits_to_float(Bt[(size_t(t) * 8 + n) * K + k], kBf16);
          ref += p;
          mag += std::fabs(p);
        }
        worst_m = std::max(worst_m, std::fabs(om[i] - ref) / mag);
        worst_w = std::max(worst_w, std::fabs(ow[i] - ref) / mag);
        uint32_t bm, bw;
        std::memcpy(&bm, &om[i], 4);
        std::memcpy(&bw, &ow[i], 4);
        differ += bm != bw;
      }
  std::printf("%s, %d k16 step(s), %d trials: %ld of %d outputs differ in their bits; "
              "worst error / sum of |terms|: mma.sync %.2e, wgmma %.2e\n",
              kBf16 ? "bf16" : "f16 ", S, trials, differ, trials * 512, worst_m, worst_w);
  CHECK(cudaFree(dA));
  CHECK(cudaFree(dB));
  CHECK(cudaFree(dC));
  CHECK(cudaFree(dm));
  CHECK(cudaFree(dw));
  return differ;
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  std::mt19937 rng(1234);
  long differ = 0;
  for (int S : {1, 2, 8}) {
    differ += run<false>(S, 2000, rng);
    differ += run<true>(S, 2000, rng);
  }
  std::printf(differ == 0 ? "same bits everywhere\n" : "the two instructions differ\n");
  return differ == 0 ? 0 : 1;
}
