// Helpers shared by the CUDA tests: the skip rule, fresh random inputs, device round trips,
// the rel-L2 metric and the RESULT lines that scripts/gpu_test.sh turns into a table.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "common.cuh"

namespace cuda_test {

using mamba::cuda::DeviceBuffer;

// On a machine without a usable GPU every CUDA test case returns early through this, and
// ctest reports the test as skipped on the message.
inline bool no_device() {
  if (mamba::cuda::device_available()) return false;
  MESSAGE("no CUDA device: skipped");
  std::printf("no CUDA device: skipped\n");
  return true;
}

// MAMBA_CUDA_TEST_QUICK=1 keeps one real shape per op and the small ones: for runs under
// compute-sanitizer, which slows kernels down by orders of magnitude.
inline bool quick() {
  const char* q = std::getenv("MAMBA_CUDA_TEST_QUICK");
  return q && *q && *q != '0';
}

// Fresh inputs on every run; the seed is printed so a failure can be replayed with
// MAMBA_TEST_SEED=<seed>.
inline std::mt19937_64& rng() {
  static std::mt19937_64 g = [] {
    uint64_t seed = std::random_device{}();
    if (const char* s = std::getenv("MAMBA_TEST_SEED")) seed = std::strtoull(s, nullptr, 10);
    std::printf("random seed %llu\n", static_cast<unsigned long long>(seed));
    return std::mt19937_64(seed);
  }();
  return g;
}

inline std::vector<float> randn(size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

inline std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

template <typename T>
DeviceBuffer to_device(const std::vector<T>& v, const char* what = "test input") {
  DeviceBuffer b(v.size() * sizeof(T), what);
  if (!v.empty())
    CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

template <typename T>
std::vector<T> to_host(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  if (n) CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// ||got - ref|| / ||ref|| (0 when both are zero).
template <typename A, typename B>
double rel_l2(const std::vector<A>& got, const std::vector<B>& ref) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double d = double(got[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// One line per comparison, collected by scripts/gpu_test.sh:
//   RESULT <what> | <shape> | <rel-L2> | <tolerance>
inline void report(const std::string& what, const std::string& shape, double rel, double tol) {
  std::printf("RESULT %s | %s | %.3e | %.0e\n", what.c_str(), shape.c_str(), rel, tol);
  std::fflush(stdout);
  INFO(what, " ", shape, " rel-L2 ", rel, " tolerance ", tol);
  CHECK(rel <= tol);
}

inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

}  // namespace cuda_test
