// A thin layer over the CPU's vector instructions: one vector type V of W floats and the
// handful of operations the kernels need. Three builds of the same interface:
//   AVX-512 (W = 16)   when compiled with -mavx512f (e.g. -march=native on Zen 4/5, Xeon)
//   AVX2+FMA (W = 8)   the portable x86-64 build (-mavx2 -mfma -mf16c)
//   scalar (W = 1)     anything else
// Every operation is deterministic, so a kernel gives bit-identical results however the
// work is split between threads. Partial ("_n") loads fill the missing lanes with zeros,
// which adds exactly nothing to a dot product.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// GCC 12's intrinsics start many results from a deliberately undefined vector
// (_mm512_undefined_ps), which its own -Wmaybe-uninitialized then reports at every use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "common/half.h"

namespace mamba::cpu::simd {

#if defined(__AVX512F__)

constexpr int W = 16;
using V = __m512;

inline V zero() { return _mm512_setzero_ps(); }
inline V set1(float a) { return _mm512_set1_ps(a); }
inline __mmask16 mask(int n) { return __mmask16((1u << n) - 1u); }
inline V load(const float* p) { return _mm512_loadu_ps(p); }
inline V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
inline void store(float* p, V a) { _mm512_storeu_ps(p, a); }
inline void store_n(float* p, V a, int n) { _mm512_mask_storeu_ps(p, mask(n), a); }
// f16: the hardware conversion (F16C). bf16: a bf16 is the top half of an f32.
inline V load_f16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline V load_bf16(const uint16_t* p) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
inline V add(V a, V b) { return _mm512_add_ps(a, b); }
inline V sub(V a, V b) { return _mm512_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm512_mul_ps(a, b); }
inline V div(V a, V b) { return _mm512_div_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline V max(V a, V b) { return _mm512_max_ps(a, b); }
inline V min(V a, V b) { return _mm512_min_ps(a, b); }
inline float reduce_add(V a) {  // fixed tree: halves, then quarters, ...
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 e = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(e, _mm_movehdup_ps(e)));
}
inline V select_gt(V a, V b, V x, V y) {  // a > b ? x : y, per lane
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
}
inline V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT); }
inline V scale2(V a, V n) { return _mm512_scalef_ps(a, n); }  // a * 2^n, handles under/overflow
// x = m * 2^e with m in [1, 2): returns m and sets e.
inline V frexp1(V a, V* e) {
  *e = _mm512_getexp_ps(a);
  return _mm512_getmant_ps(a, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
}

#elif defined(__AVX2__)

constexpr int W = 8;
using V = __m256;

inline V zero() { return _mm256_setzero_ps(); }
inline V set1(float a) { return _mm256_set1_ps(a); }
inline V load(const float* p) { return _mm256_loadu_ps(p); }
inline V load_n(const float* p, int n) {
  float t[8] = {};
  std::memcpy(t, p, size_t(n) * 4);
  return _mm256_loadu_ps(t);
}
inline void store(float* p, V a) { _mm256_storeu_ps(p, a); }
inline void store_n(float* p, V a, int n) {
  float t[8];
  _mm256_storeu_ps(t, a);
  std::memcpy(p, t, size_t(n) * 4);
}
inline V load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
inline V load_bf16(const uint16_t* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
inline V add(V a, V b) { return _mm256_add_ps(a, b); }
inline V sub(V a, V b) { return _mm256_sub_ps(a, b); }
inline V mul(V a, V b) { return _mm256_mul_ps(a, b); }
inline V div(V a, V b) { return _mm256_div_ps(a, b); }
inline V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
inline V max(V a, V b) { return _mm256_max_ps(a, b); }
inline V min(V a, V b) { return _mm256_min_ps(a, b); }
inline float reduce_add(V a) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 e = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(e, _mm_movehdup_ps(e)));
}
inline V select_gt(V a, V b, V x, V y) {
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}
inline V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// a * 2^n for integral n in [-252, 254] (in two steps so results down to the
// subnormals are right, as the AVX-512 scalef is).
inline V scale2(V a, V n) {
  const __m256i i = _mm256_cvtps_epi32(n);
  const __m256i h = _mm256_srai_epi32(i, 1);
  const __m256i b1 = _mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23);
  const __m256i b2 =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(i, h), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(_mm256_mul_ps(a, _mm256_castsi256_ps(b1)), _mm256_castsi256_ps(b2));
}
// For positive normal a: a = m * 2^e, m in [1, 2).
inline V frexp1(V a, V* e) {
  const __m256i u = _mm256_castps_si256(a);
  *e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127)));
  return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x007fffff)),
                                             _mm256_set1_epi32(0x3f800000)));
}

#else

constexpr int W = 1;
using V = float;

inline V zero() { return 0.0f; }
inline V set1(float a) { return a; }
inline V load(const float* p) { return *p; }
inline V load_n(const float* p, int n) { return n > 0 ? *p : 0.0f; }
inline void store(float* p, V a) { *p = a; }
inline void store_n(float* p, V a, int n) {
  if (n > 0) *p = a;
}
inline V load_f16(const uint16_t* p) { return f16_to_f32(*p); }
inline V load_bf16(const uint16_t* p) { return bf16_to_f32(*p); }
inline V add(V a, V b) { return a + b; }
inline V sub(V a, V b) { return a - b; }
inline V mul(V a, V b) { return a * b; }
inline V div(V a, V b) { return a / b; }
inline V fmadd(V a, V b, V c) { return std::fma(a, b, c); }
inline V max(V a, V b) { return a > b ? a : b; }
inline V min(V a, V b) { return a < b ? a : b; }
inline float reduce_add(V a) { return a; }
inline V select_gt(V a, V b, V x, V y) { return a > b ? x : y; }
inline V round(V a) { return std::nearbyint(a); }
inline V scale2(V a, V n) { return std::ldexp(a, int(n)); }
inline V frexp1(V a, V* e) {
  int ie;
  const float m = std::frexp(a, &ie);  // [0.5, 1)
  *e = float(ie - 1);
  return 2.0f * m;
}

#endif

// Partial loads of 16-bit weights: copy the tail into a zeroed buffer (used only at the end
// of a row, so its cost does not matter).
inline V load_f16_n(const uint16_t* p, int n) {
  uint16_t t[W] = {};
  std::memcpy(t, p, size_t(n) * 2);
  return load_f16(t);
}
inline V load_bf16_n(const uint16_t* p, int n) {
  uint16_t t[W] = {};
  std::memcpy(t, p, size_t(n) * 2);
  return load_bf16(t);
}

// exp(x), within ~2 ulp of the true value over the whole float range: x = n*ln2 + r with
// |r| <= ln2/2, exp(r) by a degree-7 polynomial (Cephes' expf coefficients), times 2^n.
inline V exp(V x) {
  x = min(max(x, set1(-104.0f)), set1(88.75f));
  const V n = round(mul(x, set1(1.44269504088896341f)));
  V r = fmadd(n, set1(-0.693359375f), x);  // ln2 split in two for an exact r
  r = fmadd(n, set1(2.12194440e-4f), r);
  V p = set1(1.9875691500e-4f);
  p = fmadd(p, r, set1(1.3981999507e-3f));
  p = fmadd(p, r, set1(8.3334519073e-3f));
  p = fmadd(p, r, set1(4.1665795894e-2f));
  p = fmadd(p, r, set1(1.6666665459e-1f));
  p = fmadd(p, r, set1(5.0000001201e-1f));
  p = fmadd(p, mul(r, r), add(r, set1(1.0f)));
  return scale2(p, n);
}

// log(x) for x >= 1 (all the engine needs: softplus takes log(1 + exp(x))). Cephes' logf:
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)), log(m) by a polynomial in m - 1.
inline V log_ge1(V x) {
  V e;
  V m = frexp1(x, &e);  // [1, 2)
  // Move m above sqrt(2) down to [sqrt(1/2), 1) so the polynomial's argument stays small.
  const V big = select_gt(m, set1(1.41421356f), set1(1.0f), zero());
  m = div(m, add(set1(1.0f), big));
  e = add(e, big);
  const V f = sub(m, set1(1.0f));
  const V z = mul(f, f);
  V p = set1(7.0376836292e-2f);
  p = fmadd(p, f, set1(-1.1514610310e-1f));
  p = fmadd(p, f, set1(1.1676998740e-1f));
  p = fmadd(p, f, set1(-1.2420140846e-1f));
  p = fmadd(p, f, set1(1.4249322787e-1f));
  p = fmadd(p, f, set1(-1.6668057665e-1f));
  p = fmadd(p, f, set1(2.0000714765e-1f));
  p = fmadd(p, f, set1(-2.4999993993e-1f));
  p = fmadd(p, f, set1(3.3333331174e-1f));
  V y = mul(mul(p, f), z);
  y = fmadd(e, set1(-2.12194440e-4f), y);
  y = fmadd(z, set1(-0.5f), y);
  return fmadd(e, set1(0.693359375f), add(f, y));
}

// softplus(x) = log(1 + exp(x)), and x itself above 20 (PyTorch's threshold). log1p(u) is
// computed as log(1 + u) plus the rounding error of forming 1 + u, so tiny u stay accurate.
inline V softplus(V x) {
  const V u = exp(x);
  const V w = add(set1(1.0f), u);
  const V lp = add(log_ge1(w), div(sub(u, sub(w, set1(1.0f))), w));
  return select_gt(x, set1(20.0f), x, lp);
}

// silu(x) = x * sigmoid(x) = x / (1 + exp(-x))
inline V silu(V x) { return div(x, add(set1(1.0f), exp(sub(zero(), x)))); }

}  // namespace mamba::cpu::simd
