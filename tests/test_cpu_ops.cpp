// The CPU kernels against straightforward double-precision loops, on fresh random inputs at
// awkward sizes (not multiples of the vector width, one token, many tokens).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "backend/cpu/ops.h"
#include "backend/cpu/simd.h"
#include "common/half.h"

using namespace mamba;
using namespace mamba::cpu;

namespace {

std::mt19937_64 rng(12345);

std::vector<float> randn(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ||got - want|| / ||want||
double rel_l2(const float* got, const double* want, size_t n, size_t stride_got = 1) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = double(got[i * stride_got]) - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  return rel_l2(got.data(), want.data(), got.size());
}

double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }
double softplus_ref(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

}  // namespace

TEST_CASE("cpu ops: thread pool covers every item exactly once, call after call") {
  for (int nt : {1, 2, 3, 8}) {
    ThreadPool pool(nt);
    CHECK(pool.size() == nt);
    std::vector<std::atomic<int>> hits(1000);
    std::atomic<bool> bad_part{false};
    for (int rep = 0; rep < 2000; rep++) {
      const int64_t n = 1 + rep % 997, grain = 1 + rep % 7;
      pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
        if (b % grain != 0 || b >= e || e > n) bad_part = true;
        for (int64_t i = b; i < e; i++) hits[size_t(i)]++;
      });
      bool once = true;
      for (int64_t i = 0; i < int64_t(hits.size()); i++) {
        once &= hits[size_t(i)].exchange(0) == (i < n ? 1 : 0);
      }
      CHECK(once);
    }
    CHECK(!bad_part);
    // Up to `grain` items run on the calling thread.
    const auto caller = std::this_thread::get_id();
    pool.parallel_for(5, 8, [&](int64_t b, int64_t e) {
      CHECK(std::this_thread::get_id() == caller);
      CHECK((b == 0 && e == 5));
    });
  }
}

TEST_CASE("cpu ops: matmul for f32/f16/bf16 weights at odd sizes, 1 and 2 threads") {
  ThreadPool pool1(1), pool2(2);
  for (gguf::DType dt : {gguf::DType::F32, gguf::DType::F16, gguf::DType::BF16}) {
    for (int64_t K : {1, 7, 16, 17, 48, 100}) {
      for (int64_t N : {1, 3, 4, 5, 17, 33}) {
        for (int64_t T = 1; T <= 9; T++) {
          const bool with_bias = (K + N + T) % 2 == 0, accumulate = (K + T) % 3 == 0;
          INFO("dtype ", gguf::dtype_name(dt), " K ", K, " N ", N, " T ", T);
          // Weights as stored, and the exact values they stand for.
          const std::vector<float> wf = randn(size_t(N * K));
          std::vector<uint16_t> w16(wf.size());
          std::vector<double> wv(wf.size());
          for (size_t i = 0; i < wf.size(); i++) {
            if (dt == gguf::DType::F16) {
              w16[i] = f32_to_f16(wf[i]);
              wv[i] = f16_to_f32(w16[i]);
            } else if (dt == gguf::DType::BF16) {
              w16[i] = f32_to_bf16(wf[i]);
              wv[i] = bf16_to_f32(w16[i]);
            } else {
              wv[i] = wf[i];
            }
          }
          const Matrix w{dt == gguf::DType::F32 ? static_cast<const void*>(wf.data()) : w16.data(),
                         dt, N, K};
          // x and y live inside wider buffers (row strides ldx > K, ldy > N).
          const int64_t ldx = K + 3, ldy = N + 2;
          const std::vector<float> x = randn(size_t(T * ldx));
          const std::vector<float> bias = randn(size_t(N));
          const std::vector<float> y0 = randn(size_t(T * ldy));
          std::vector<double> want(static_cast<size_t>(T * N));
          for (int64_t t = 0; t < T; t++)
            for (int64_t n = 0; n < N; n++) {
              double s = 0;
              for (int64_t k = 0; k < K; k++)
                s += double(x[size_t(t * ldx + k)]) * wv[size_t(n * K + k)];
              if (with_bias) s += bias[size_t(n)];
              if (accumulate) s += y0[size_t(t * ldy + n)];
              want[size_t(t * N + n)] = s;
            }
          std::vector<float> y1 = y0, y2 = y0;
          matmul(pool1, w, x.data(), ldx, T, y1.data(), ldy, with_bias ? bias.data() : nullptr,
                 accumulate);
          matmul(pool2, w, x.data(), ldx, T, y2.data(), ldy, with_bias ? bias.data() : nullptr,
                 accumulate);
          CHECK(bitwise_equal(y1, y2));
          std::vector<float> got(static_cast<size_t>(T * N));
          for (int64_t t = 0; t < T; t++) {
            for (int64_t n = 0; n < N; n++) got[size_t(t * N + n)] = y1[size_t(t * ldy + n)];
            for (int64_t n = N; n < ldy; n++)  // the padding is untouched
              CHECK(y1[size_t(t * ldy + n)] == y0[size_t(t * ldy + n)]);
          }
          CHECK(rel_l2(got, want) < 2e-6);
        }
      }
    }
  }
}

TEST_CASE("cpu ops: matmul rows agree whether computed alone or in a batch") {
  // Decode (one token) and prefill (many; 16-bit weights are then widened per row block)
  // must produce the same bits for the same row.
  ThreadPool pool(2);
  const int64_t K = 75, N = 29, T = 11;
  const std::vector<float> wf = randn(size_t(N * K)), x = randn(size_t(T * K));
  std::vector<uint16_t> wh(wf.size()), wb(wf.size());
  for (size_t i = 0; i < wf.size(); i++) {
    wh[i] = f32_to_f16(wf[i]);
    wb[i] = f32_to_bf16(wf[i]);
  }
  for (const Matrix& w :
       {Matrix{wf.data(), gguf::DType::F32, N, K}, Matrix{wh.data(), gguf::DType::F16, N, K},
        Matrix{wb.data(), gguf::DType::BF16, N, K}}) {
    INFO("dtype ", gguf::dtype_name(w.dtype));
    std::vector<float> all(static_cast<size_t>(T * N)), one(static_cast<size_t>(N));
    matmul(pool, w, x.data(), K, T, all.data(), N);
    for (int64_t t = 0; t < T; t++) {
      matmul(pool, w, x.data() + t * K, K, 1, one.data(), N);
      CHECK(std::memcmp(one.data(), all.data() + t * N, size_t(N) * 4) == 0);
    }
  }
}

TEST_CASE("cpu ops: rmsnorm with and without weight") {
  for (int64_t n : {1, 7, 16, 33, 100}) {
    const std::vector<float> x = randn(size_t(n), 3.0f), w = randn(size_t(n));
    for (bool weighted : {true, false}) {
      const float eps = 1e-5f;
      double ms = 0;
      for (float v : x) ms += double(v) * v;
      ms /= double(n);
      std::vector<double> want(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; i++)
        want[size_t(i)] = x[size_t(i)] / std::sqrt(ms + eps) * (weighted ? w[size_t(i)] : 1.0);
      std::vector<float> got(static_cast<size_t>(n));
      rmsnorm(x.data(), n, weighted ? w.data() : nullptr, eps, got.data());
      CHECK(rel_l2(got, want) < 1e-6);
    }
  }
}

TEST_CASE("cpu ops: exp, softplus and silu, including edge values") {
  std::vector<float> xs = {-104.f, -100.f, -87.f, -30.f, -20.f, -10.f, -1.f, -1e-3f, -1e-7f, 0.f,
                           1e-7f,  1e-3f,  0.5f,  1.f,   10.f,  19.9f, 20.f, 20.1f,  30.f,   80.f};
  const std::vector<float> more = uniform(1000, -80.0f, 80.0f);
  xs.insert(xs.end(), more.begin(), more.end());
  for (float x : xs) {
    INFO("x = ", x);
    float e, sp, si;
    simd::store_n(&e, simd::exp(simd::set1(x)), 1);
    simd::store_n(&sp, simd::softplus(simd::set1(x)), 1);
    simd::store_n(&si, simd::silu(simd::set1(x)), 1);
    const double ee = std::exp(double(x));
    if (ee > 1e-37)
      CHECK(std::fabs(e - ee) <= 4e-7 * ee);  // about 2 ulp
    else
      CHECK(std::fabs(e - ee) <= 1e-37);
    CHECK(std::fabs(sp - softplus_ref(x)) <= 4e-7 * std::max(softplus_ref(x), 1e-30));
    CHECK(std::fabs(si - silu_ref(x)) <= 4e-7 * std::fabs(silu_ref(x)) + 1e-37);
  }
  // dt_softplus adds the bias, applies softplus and clamps, over a vector with a ragged end.
  const int64_t n = 37;
  const std::vector<float> dt0 = uniform(size_t(n), -30.0f, 30.0f), bias = randn(size_t(n));
  for (auto [lo, hi] : {std::pair{0.0f, INFINITY}, std::pair{0.01f, 5.0f}}) {
    std::vector<float> dt = dt0;
    dt_softplus(dt.data(), bias.data(), n, lo, hi);
    std::vector<double> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++)
      want[size_t(i)] = std::clamp(softplus_ref(double(dt0[size_t(i)] + bias[size_t(i)])),
                                   double(lo), double(hi));
    CHECK(rel_l2(dt, want) < 1e-6);
  }
}

TEST_CASE("cpu ops: conv1d + silu, all at once and step by step") {
  const int64_t C = 37;
  for (int64_t d_conv : {2, 3, 4}) {
    for (int64_t T : {1, 2, 5, 9}) {
      INFO("d_conv ", d_conv, " T ", T);
      const int64_t S = d_conv - 1, ldx = C + 5;
      const std::vector<float> x = randn(size_t(T * ldx)), w_t = randn(size_t(d_conv * C));
      const std::vector<float> bias = randn(size_t(C)), state0 = randn(size_t(S * C));
      // Reference: the window is the old state followed by the inputs.
      std::vector<double> want(static_cast<size_t>(T * C)), want_state(size_t(S * C));
      auto win = [&](int64_t i, int64_t c) {
        return i < S ? double(state0[size_t(i * C + c)]) : double(x[size_t((i - S) * ldx + c)]);
      };
      for (int64_t c = 0; c < C; c++) {
        for (int64_t t = 0; t < T; t++) {
          double s = bias[size_t(c)];
          for (int64_t k = 0; k < d_conv; k++) s += double(w_t[size_t(k * C + c)]) * win(t + k, c);
          want[size_t(t * C + c)] = silu_ref(s);
        }
        for (int64_t j = 0; j < S; j++) want_state[size_t(j * C + c)] = win(T + j, c);
      }
      // All tokens at once, the channels in two ranges as two threads would.
      std::vector<float> state = state0, out(size_t(T * C));
      conv1d_silu(x.data(), ldx, T, 0, 16, w_t.data(), bias.data(), d_conv, C, state.data(),
                  out.data(), C);
      conv1d_silu(x.data(), ldx, T, 16, C, w_t.data(), bias.data(), d_conv, C, state.data(),
                  out.data(), C);
      CHECK(rel_l2(out, want) < 1e-6);
      CHECK(rel_l2(state, want_state) == 0.0);
      // One token at a time gives the same bits.
      std::vector<float> state_s = state0, out_s(size_t(T * C));
      for (int64_t t = 0; t < T; t++)
        conv1d_silu(x.data() + t * ldx, ldx, 1, 0, C, w_t.data(), bias.data(), d_conv, C,
                    state_s.data(), out_s.data() + t * C, C);
      CHECK(bitwise_equal(out_s, out));
      CHECK(bitwise_equal(state_s, state));
    }
  }
}

TEST_CASE("cpu ops: gated RMSNorm per group") {
  for (int64_t G : {1, 2, 4}) {
    const int64_t n = 24 * G + 8 * G;  // groups of 32
    const std::vector<float> y0 = randn(size_t(n), 2.0f), z = randn(size_t(n)),
                             w = randn(size_t(n));
    const float eps = 1e-5f;
    const int64_t gs = n / G;
    std::vector<double> want(static_cast<size_t>(n));
    for (int64_t g = 0; g < G; g++) {
      double ms = 0;
      for (int64_t i = g * gs; i < (g + 1) * gs; i++) {
        want[size_t(i)] = y0[size_t(i)] * silu_ref(z[size_t(i)]);
        ms += want[size_t(i)] * want[size_t(i)];
      }
      ms /= double(gs);
      for (int64_t i = g * gs; i < (g + 1) * gs; i++)
        want[size_t(i)] = want[size_t(i)] / std::sqrt(ms + eps) * w[size_t(i)];
    }
    std::vector<float> y = y0;
    gated_rmsnorm(y.data(), z.data(), w.data(), n, G, eps);
    CHECK(rel_l2(y, want) < 1e-6);
  }
}

TEST_CASE("cpu ops: Mamba-1 selective scan") {
  const int64_t C = 21;
  for (int64_t N : {1, 5, 16, 17, 40, 130}) {
    for (int64_t T : {1, 7}) {
      INFO("N ", N, " T ", T);
      const int64_t ldbc = 2 * N + 3;
      const std::vector<float> x = randn(size_t(T * C)), dt = uniform(size_t(T * C), 0.001f, 0.5f);
      const std::vector<float> bc = randn(size_t(T * ldbc)),
                               A = uniform(size_t(C * N), -8.0f, -0.5f);
      const std::vector<float> D = randn(size_t(C)), state0 = randn(size_t(C * N));
      std::vector<double> s(state0.begin(), state0.end()), want(size_t(T * C));
      for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < C; c++) {
          const double d = dt[size_t(t * C + c)], xv = x[size_t(t * C + c)];
          double yv = 0;
          for (int64_t n = 0; n < N; n++) {
            double& st = s[size_t(c * N + n)];
            st = std::exp(d * A[size_t(c * N + n)]) * st + d * bc[size_t(t * ldbc + n)] * xv;
            yv += st * bc[size_t(t * ldbc + N + n)];
          }
          want[size_t(t * C + c)] = yv + D[size_t(c)] * xv;
        }
      std::vector<float> state = state0, y(size_t(T * C));
      // Tokens [t0, t0 + len) of the inputs.
      auto args = [&](int64_t t0, int64_t len, float* state, float* y_out) {
        return Mamba1ScanArgs{.T = len,
                              .N = N,
                              .x = x.data() + t0 * C,
                              .ldx = C,
                              .dt = dt.data() + t0 * C,
                              .lddt = C,
                              .B = bc.data() + t0 * ldbc,
                              .C = bc.data() + t0 * ldbc + N,
                              .ldbc = ldbc,
                              .A = A.data(),
                              .D = D.data(),
                              .state = state,
                              .y = y_out + t0 * C,
                              .ldy = C};
      };
      const Mamba1ScanArgs a = args(0, T, state.data(), y.data());
      mamba1_scan(a, 0, 10);  // two channel ranges, as two threads
      mamba1_scan(a, 10, C);
      CHECK(rel_l2(y, want) < 2e-6);
      CHECK(rel_l2(state, s) < 2e-6);
      // Token by token gives the same bits.
      std::vector<float> state_s = state0, y_s(size_t(T * C));
      for (int64_t t = 0; t < T; t++) {
        const Mamba1ScanArgs b = args(t, 1, state_s.data(), y_s.data());
        mamba1_scan(b, 0, C);
      }
      CHECK(bitwise_equal(y_s, y));
      CHECK(bitwise_equal(state_s, state));
    }
  }
}

TEST_CASE("cpu ops: Mamba-2 scan, sequential and chunked") {
  const int64_t H = 4, P = 3;
  for (int64_t G : {1, 2, 4}) {
    for (int64_t N : {5, 16, 130}) {
      for (int64_t T : {1, 5, 16, 37}) {
        INFO("G ", G, " N ", N, " T ", T);
        const int64_t ldx = H * P + 1, lddt = H + 2, ldbc = 2 * G * N;
        const std::vector<float> x = randn(size_t(T * ldx));
        const std::vector<float> dt = uniform(size_t(T * lddt), 0.001f, 0.3f);
        const std::vector<float> bc = randn(size_t(T * ldbc), 0.5f);
        const std::vector<float> A = uniform(size_t(H), -6.0f, -0.5f), D = randn(size_t(H));
        const std::vector<float> state0 = randn(size_t(H * P * N));
        std::vector<double> s(state0.begin(), state0.end()), want(size_t(T * H * P));
        for (int64_t t = 0; t < T; t++)
          for (int64_t h = 0; h < H; h++) {
            const int64_t g = h / (H / G);
            const double d = dt[size_t(t * lddt + h)], dA = std::exp(d * A[size_t(h)]);
            for (int64_t p = 0; p < P; p++) {
              const double xv = x[size_t(t * ldx + h * P + p)];
              double yv = 0;
              for (int64_t n = 0; n < N; n++) {
                double& st = s[size_t((h * P + p) * N + n)];
                st = dA * st + d * xv * bc[size_t(t * ldbc + g * N + n)];
                yv += st * bc[size_t(t * ldbc + G * N + g * N + n)];
              }
              want[size_t(t * H * P + h * P + p)] = yv + D[size_t(h)] * xv;
            }
          }
        auto args = [&](float* state, float* y) {
          return Mamba2ScanArgs{.T = T,
                                .H = H,
                                .P = P,
                                .G = G,
                                .N = N,
                                .x = x.data(),
                                .ldx = ldx,
                                .dt = dt.data(),
                                .lddt = lddt,
                                .B = bc.data(),
                                .C = bc.data() + G * N,
                                .ldbc = ldbc,
                                .A = A.data(),
                                .D = D.data(),
                                .state = state,
                                .y = y,
                                .ldy = H * P};
        };
        std::vector<float> state = state0, y(size_t(T * H * P));
        mamba2_scan(args(state.data(), y.data()), 0, 1);  // two head ranges
        mamba2_scan(args(state.data(), y.data()), 1, H);
        CHECK(rel_l2(y, want) < 2e-6);
        CHECK(rel_l2(state, s) < 2e-6);
        for (int64_t chunk : {1, 4, 16, 256}) {
          INFO("chunk ", chunk);
          std::vector<float> state_c = state0, y_c(size_t(T * H * P));
          mamba2_scan_chunked(args(state_c.data(), y_c.data()), 0, H, chunk);
          CHECK(rel_l2(y_c, want) < 1e-5);
          CHECK(rel_l2(state_c, s) < 1e-5);
        }
      }
    }
  }
}
