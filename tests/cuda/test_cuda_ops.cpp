// Every CUDA op against a straightforward double-precision reference, on fresh random inputs,
// at the shapes of real checkpoints (mamba-130m, mamba-2.8b, mamba2-2.7b, Mamba-Codestral-7B,
// Falcon-Mamba-7B) and the small shapes of the test fixtures, plus the edge cases: one token,
// lengths that are not a multiple of any chunk, and several sequences of different lengths
// continuing different state slots in one call.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <random>

#include "argmax.cuh"
#include "conv1d.cuh"
#include "cuda_test_util.h"
#include "engine/sampler.h"
#include "embedding.cuh"
#include "falcon_rms.cuh"
#include "gated_rmsnorm.cuh"
#include "linear.cuh"
#include "linear_decode.cuh"
#include "common/half.h"
#include "rmsnorm.cuh"
#include "selective_scan.cuh"
#include "ssd.cuh"

using namespace cuda_test;
using mamba::cuda::DeviceBuffer;
using mamba::gguf::DType;

namespace {

constexpr int kSlots = 8;

std::string join(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); i++) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// A packed batch of sequences of the given lengths, continuing the given slots.
struct Batch {
  std::vector<int> lens, slots;
  std::vector<int32_t> start;
  DeviceBuffer d_start, d_slots;
  mamba::cuda::SeqBatch view;
  Batch(std::vector<int> l, std::vector<int> s) : lens(std::move(l)), slots(std::move(s)) {
    start.push_back(0);
    for (int n : lens) start.push_back(start.back() + n);
    d_start = to_device(start);
    d_slots = to_device(std::vector<int32_t>(slots.begin(), slots.end()));
    view.n_seq = int(lens.size());
    view.n_tok = start.back();
    view.max_len = *std::max_element(lens.begin(), lens.end());
    view.start = d_start.as<int32_t>();
    view.slots = d_slots.as<int32_t>();
  }
  int n_tok() const { return start.back(); }
  std::string name() const { return "lens " + join(lens); }
};

// Per-slot state with a padded slot stride, so that a kernel using the wrong stride shows (the
// default odd pad also keeps the kernels off their 16-byte paths).
struct States {
  int64_t size, stride;
  std::vector<float> host;
  DeviceBuffer dev;
  explicit States(int64_t per_slot, int64_t pad = 5) : size(per_slot), stride(per_slot + pad) {
    host = randn(size_t(kSlots * stride), 0.5f);
    dev = to_device(host);
  }
  mamba::cuda::StateRef ref() { return {dev.as<float>(), stride}; }
  std::vector<double> ref_copy() const { return {host.begin(), host.end()}; }
  std::vector<float> result() const { return to_host<float>(dev, host.size()); }
};

// ---- embedding ---------------------------------------------------------------------------

std::vector<uint16_t> to_16(const std::vector<float>& v, DType t) {
  std::vector<uint16_t> o(v.size());
  for (size_t i = 0; i < v.size(); i++)
    o[i] = t == DType::F16 ? mamba::f32_to_f16(v[i]) : mamba::f32_to_bf16(v[i]);
  return o;
}
float from_16(uint16_t h, DType t) {
  return t == DType::F16 ? mamba::f16_to_f32(h) : mamba::bf16_to_f32(h);
}

// 1 when the 16-bit copy `got16` is not exactly the float32 values `f32` rounded to t, else 0:
// an Out16 output must equal the rounding pass it replaces, bit for bit.
double rounding_mismatch(const std::vector<uint16_t>& got16, const std::vector<float>& f32,
                         DType t) {
  return got16 == to_16(f32, t) ? 0.0 : 1.0;
}

// The 16-bit row-major (n, K) values `rm` in linear_decode's GEMM order (gemm_x16_index), for
// n rounded up to 16 rows; the rows past n hold `pad` (a NaN pattern shows that no output
// reads them).
std::vector<uint16_t> to_gemm_order(const std::vector<uint16_t>& rm, int64_t n, int64_t K,
                                    uint16_t pad) {
  const int64_t rows = (n + 15) / 16 * 16;
  std::vector<uint16_t> o(size_t(rows * K), pad);
  for (int64_t r = 0; r < n; r++)
    for (int64_t k = 0; k < K; k++)
      o[size_t(mamba::cuda::gemm_x16_index(r, k, K))] = rm[size_t(r * K + k)];
  return o;
}

// A weight in the given dtype on the device, and the float values it holds.
struct Weight {
  DeviceBuffer dev;
  std::vector<float> values;
  Weight(const std::vector<float>& v, DType t) {
    if (t == DType::F32) {
      values = v;
      dev = to_device(v);
    } else {
      const auto h = to_16(v, t);
      values.resize(v.size());
      for (size_t i = 0; i < v.size(); i++) values[i] = from_16(h[i], t);
      dev = to_device(h);
    }
  }
};

const char* dname(DType t) { return mamba::gguf::dtype_name(t); }

TEST_CASE("embedding: rows of the table in every dtype") {
  if (no_device()) return;
  for (int64_t d_model : {768, 2560, 4096}) {
    if (quick() && d_model > 768) continue;
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      const int64_t n_vocab = 1000;
      Weight table(randn(size_t(n_vocab * d_model)), t);
      const std::vector<int32_t> ids = {0, 999, 17, 17, 512, 3, 998};
      DeviceBuffer d_ids = to_device(ids);
      DeviceBuffer out(ids.size() * d_model * 4, "out");
      mamba::cuda::embedding(table.dev.data(), t, n_vocab, d_model, d_ids.as<int32_t>(),
                             int(ids.size()), out.as<float>(), nullptr);
      std::vector<float> ref;
      for (int32_t id : ids)
        ref.insert(ref.end(), table.values.begin() + id * d_model,
                   table.values.begin() + (id + 1) * d_model);
      report(std::string("embedding ") + dname(t), "d_model " + std::to_string(d_model),
             rel_l2(to_host<float>(out, ref.size()), ref), 0.0);
    }
  }
}

// ---- RMSNorm + residual ------------------------------------------------------------------

TEST_CASE("rmsnorm_residual: residual add and norm") {
  if (no_device()) return;
  for (int d : {768, 2560, 4096}) {
    for (bool with_delta : {false, true}) {
      const int n = 5;
      const float eps = 1e-5f;
      auto h = randn(size_t(n) * d), delta = randn(size_t(n) * d), w = randn(d, 0.2f, 1.0f);
      DeviceBuffer dh = to_device(h), ddelta = to_device(delta), dw = to_device(w);
      DeviceBuffer out(size_t(n) * d * 4, "out"), out16(size_t(n) * d * 2, "out16");
      // The 16-bit copy in both types, one per delta setting.
      const DType t16 = with_delta ? DType::BF16 : DType::F16;
      mamba::cuda::rmsnorm_residual(dh.as<float>(), with_delta ? ddelta.as<float>() : nullptr,
                                    dw.as<float>(), n, d, eps, out.as<float>(),
                                    {out16.data(), t16 == DType::BF16}, nullptr);
      std::vector<double> h_ref(h.begin(), h.end()), o_ref(h.size());
      for (int r = 0; r < n; r++) {
        double ss = 0;
        for (int j = 0; j < d; j++) {
          if (with_delta) h_ref[r * d + j] += delta[r * d + j];
          ss += h_ref[r * d + j] * h_ref[r * d + j];
        }
        const double s = 1.0 / std::sqrt(ss / d + eps);
        for (int j = 0; j < d; j++) o_ref[r * d + j] = h_ref[r * d + j] * s * w[j];
      }
      const std::string shape = "(5, " + std::to_string(d) + ")" + (with_delta ? " +delta" : "");
      report("rmsnorm_residual out", shape, rel_l2(to_host<float>(out, o_ref.size()), o_ref),
             1e-5);
      report("rmsnorm_residual h", shape, rel_l2(to_host<float>(dh, h_ref.size()), h_ref), 1e-6);
      report(std::string("rmsnorm_residual out16 ") + dname(t16), shape,
             rounding_mismatch(to_host<uint16_t>(out16, o_ref.size()),
                               to_host<float>(out, o_ref.size()), t16),
             0.0);
      if (!with_delta) {
        // The same copy in the decode GEMM's operand order (h is left as it was without delta).
        const auto rm = to_16(to_host<float>(out, o_ref.size()), t16);
        const auto want = to_gemm_order(rm, n, d, 0x7e00);
        DeviceBuffer g16 = to_device(std::vector<uint16_t>(want.size(), 0x7e00));
        mamba::cuda::rmsnorm_residual(dh.as<float>(), nullptr, dw.as<float>(), n, d, eps,
                                      out.as<float>(), {g16.data(), false, d}, nullptr);
        report("rmsnorm_residual out16 gemm order", shape,
               to_host<uint16_t>(g16, want.size()) == want ? 0.0 : 1.0, 0.0);
      }
    }
  }
}

// ---- conv1d ------------------------------------------------------------------------------

// Prefill (or, with step = true and every length 1, the decode step) against the reference.
void conv_case(int dim, int K, const Batch& b, bool step) {
  const int64_t ldx = dim + 7;  // the conv input is a column range of a wider row
  const int n_tok = b.n_tok();
  auto x = randn(size_t(n_tok) * ldx), w = randn(size_t(dim) * K, 0.5f), bias = randn(dim, 0.5f);
  States st(int64_t(K - 1) * dim);
  DeviceBuffer dx = to_device(x), dw = to_device(w), db = to_device(bias);
  DeviceBuffer out(size_t(n_tok) * dim * 4, "out");
  mamba::cuda::Conv1dParams p;
  p.x = dx.as<float>();
  p.ldx = ldx;
  p.w = dw.as<float>();
  p.b = db.as<float>();
  p.state = st.ref();
  p.dim = dim;
  p.d_conv = K;
  p.out = out.as<float>();
  // The 16-bit copy of out (what a following 16-bit projection reads), f16 for the step.
  const DType t16 = step ? DType::F16 : DType::BF16;
  DeviceBuffer out16(size_t(n_tok) * dim * 2, "out16");
  p.out16 = {out16.data(), t16 == DType::BF16};
  if (step)
    mamba::cuda::conv1d_step(p, n_tok, b.view.slots, nullptr);
  else
    mamba::cuda::conv1d_prefill(p, b.view, nullptr);

  std::vector<double> s_ref = st.ref_copy(), o_ref(size_t(n_tok) * dim);
  for (size_t s = 0; s < b.lens.size(); s++) {
    double* sp = s_ref.data() + b.slots[s] * st.stride;
    for (int c = 0; c < dim; c++) {
      std::vector<double> win;  // old state ++ inputs
      for (int j = 0; j < K - 1; j++) win.push_back(sp[j * dim + c]);
      for (int t = 0; t < b.lens[s]; t++) win.push_back(x[(b.start[s] + t) * ldx + c]);
      for (int t = 0; t < b.lens[s]; t++) {
        double acc = bias[c];
        for (int k = 0; k < K; k++) acc += w[c * K + k] * win[t + k];
        o_ref[size_t(b.start[s] + t) * dim + c] = silu(acc);
      }
      for (int j = 0; j < K - 1; j++) sp[j * dim + c] = win[win.size() - (K - 1) + j];
    }
  }
  const std::string op = step ? "conv1d_step" : "conv1d_prefill";
  const std::string shape = "dim " + std::to_string(dim) + " K " + std::to_string(K) + " " +
                            (step ? "slots " + join(b.slots) : b.name());
  const auto got = to_host<float>(out, o_ref.size());
  report(op + " out", shape, rel_l2(got, o_ref), 1e-5);
  report(op + " state", shape, rel_l2(st.result(), s_ref), 1e-6);
  report(op + " out16 " + dname(t16), shape,
         rounding_mismatch(to_host<uint16_t>(out16, o_ref.size()), got, t16), 0.0);
}

TEST_CASE("conv1d: prefill and step at real and fixture shapes") {
  if (no_device()) return;
  // mamba-130m d_inner, mamba2-2.7b conv_dim, Codestral conv_dim, a tiny fixture with K = 3
  for (int dim : {1536, 5376, 10240, 48}) {
    if (quick() && dim > 1536 && dim != 48) continue;
    const int K = dim == 48 ? 3 : 4;
    conv_case(dim, K, Batch({1}, {2}), false);
    conv_case(dim, K, Batch({2}, {1}), false);  // shorter than the state
    conv_case(dim, K, Batch({37}, {0}), false);
    conv_case(dim, K, Batch({5, 1, 70}, {3, 0, 1}), false);
    conv_case(dim, K, Batch({1, 1, 1}, {2, 0, 3}), true);
  }
  // The widths at the ends of the supported range: no state (1), and the widest window (8),
  // whose inputs of a 16-step tile start seven steps back.
  for (int K : {1, 2, 8}) {
    conv_case(40, K, Batch({5, 1, 70}, {3, 0, 1}), false);
    conv_case(40, K, Batch({1, 1, 1}, {2, 0, 3}), true);
  }
}

// ---- Mamba-1 selective scan --------------------------------------------------------------

// pad: the state's slot stride is d_inner * N + pad floats; a multiple of 4 lets the step take
// its 16-byte path where the shape allows it.
void scan_case(int d_inner, int N, int R, const Batch& b, bool step, int64_t pad = 5) {
  const int n_tok = b.n_tok();
  const int64_t ldbc = R + 2 * N, ldz = 2 * int64_t(d_inner);
  auto x = randn(size_t(n_tok) * d_inner);
  auto dt = randn(size_t(n_tok) * d_inner, 0.5f);
  auto dt_init = uniform(d_inner, 1e-3f, 1e-1f);
  std::vector<float> dt_bias(d_inner);
  for (int c = 0; c < d_inner; c++) dt_bias[c] = std::log(std::expm1(dt_init[c]));
  auto A = uniform(size_t(d_inner) * N, -16.0f, -1.0f);
  auto xdbl = randn(size_t(n_tok) * ldbc);  // [dt_low | B | C] per row
  auto D = randn(d_inner, 0.5f, 1.0f);
  auto xz = randn(size_t(n_tok) * ldz);  // [x_in | z] per row
  States st(int64_t(d_inner) * N, pad);
  DeviceBuffer dx = to_device(x), ddt = to_device(dt), dbias = to_device(dt_bias),
               dA = to_device(A), dxdbl = to_device(xdbl), dD = to_device(D), dxz = to_device(xz);
  DeviceBuffer y(size_t(n_tok) * d_inner * 4, "y");
  mamba::cuda::SelectiveScanParams p;
  p.x = dx.as<float>();
  p.dt = ddt.as<float>();
  p.dt_bias = dbias.as<float>();
  p.A = dA.as<float>();
  p.B = dxdbl.as<float>() + R;
  p.C = dxdbl.as<float>() + R + N;
  p.ldbc = ldbc;
  p.D = dD.as<float>();
  p.z = dxz.as<float>() + d_inner;
  p.ldz = ldz;
  p.state = st.ref();
  p.d_inner = d_inner;
  p.d_state = N;
  p.y = y.as<float>();
  // The 16-bit copy of y (what a following 16-bit projection reads), bf16 for the step.
  const DType t16 = step ? DType::BF16 : DType::F16;
  DeviceBuffer y16(size_t(n_tok) * d_inner * 2, "y16");
  p.y16 = {y16.data(), t16 == DType::BF16};
  if (step)
    mamba::cuda::selective_scan_step(p, n_tok, b.view.slots, nullptr);
  else
    mamba::cuda::selective_scan_prefill(p, b.view, nullptr);

  std::vector<double> s_ref = st.ref_copy(), y_ref(size_t(n_tok) * d_inner);
  for (size_t s = 0; s < b.lens.size(); s++) {
    for (int t = b.start[s]; t < b.start[s + 1]; t++) {
      const float* B = &xdbl[size_t(t) * ldbc + R];
      const float* C = B + N;
      for (int c = 0; c < d_inner; c++) {
        double* h = s_ref.data() + b.slots[s] * st.stride + int64_t(c) * N;
        const double d = softplus(double(dt[size_t(t) * d_inner + c]) + dt_bias[c]);
        const double xv = x[size_t(t) * d_inner + c];
        double acc = 0;
        for (int n = 0; n < N; n++) {
          h[n] = std::exp(d * A[size_t(c) * N + n]) * h[n] + d * B[n] * xv;
          acc += h[n] * C[n];
        }
        y_ref[size_t(t) * d_inner + c] = (acc + D[c] * xv) * silu(xz[size_t(t) * ldz + d_inner + c]);
      }
    }
  }
  const std::string op = step ? "selective_scan_step" : "selective_scan_prefill";
  const std::string shape = "d_inner " + std::to_string(d_inner) + " N " + std::to_string(N) +
                            " " + (step ? "slots " + join(b.slots) : b.name()) +
                            (pad % 4 == 0 ? " stride%4=0" : "");
  const auto got_y = to_host<float>(y, y_ref.size());
  report(op + " y", shape, rel_l2(got_y, y_ref), 2e-5);
  report(op + " state", shape, rel_l2(st.result(), s_ref), 2e-5);
  report(op + " y16 " + dname(t16), shape,
         rounding_mismatch(to_host<uint16_t>(y16, y_ref.size()), got_y, t16), 0.0);
}

TEST_CASE("selective scan (Mamba-1): prefill and step") {
  if (no_device()) return;
  // mamba-130m, mamba-2.8b, the fixtures' tiny shapes (N = 8, N = 4), and the widest state
  // (N = 64: several lanes per channel on both step paths)
  for (auto [d_inner, N, R] : std::vector<std::array<int, 3>>{
           {1536, 16, 48}, {5120, 16, 160}, {32, 8, 1}, {48, 4, 5}, {40, 64, 4}}) {
    if (quick() && d_inner == 5120) continue;
    scan_case(d_inner, N, R, Batch({1}, {1}), false);
    scan_case(d_inner, N, R, Batch({300}, {2}), false);  // crosses a 256-step chunk
    scan_case(d_inner, N, R, Batch({3, 257, 64}, {3, 0, 1}), false);
    scan_case(d_inner, N, R, Batch({1, 1, 1}, {2, 0, 3}), true);
    scan_case(d_inner, N, R, Batch({1, 1, 1, 1, 1}, {4, 2, 0, 7, 3}), true, /*pad=*/4);
  }
}

// ---- Falcon B/C/dt RMS -------------------------------------------------------------------

TEST_CASE("falcon_bcdt_rms: weightless norm of dt_low, B and C") {
  if (no_device()) return;
  // Falcon-Mamba-7B (dt_rank 256, N 16), mamba-2.8b-like, the fixture (dt_rank 1, N 8)
  for (auto [R, N] : std::vector<std::array<int, 2>>{{256, 16}, {160, 16}, {1, 8}}) {
    const int n = 6;
    const int64_t ld = R + 2 * N;
    const float eps = 1e-6f;
    auto v = randn(size_t(n) * ld, 2.0f);
    DeviceBuffer d = to_device(v);
    mamba::cuda::falcon_bcdt_rms(d.as<float>(), ld, n, R, N, eps, nullptr);
    std::vector<double> ref(v.begin(), v.end());
    for (int r = 0; r < n; r++) {
      for (auto [b, w] : std::vector<std::array<int, 2>>{{0, R}, {R, N}, {R + N, N}}) {
        double ss = 0;
        for (int j = 0; j < w; j++) ss += ref[r * ld + b + j] * ref[r * ld + b + j];
        const double s = 1.0 / std::sqrt(ss / w + eps);
        for (int j = 0; j < w; j++) ref[r * ld + b + j] *= s;
      }
    }
    report("falcon_bcdt_rms", "dt_rank " + std::to_string(R) + " N " + std::to_string(N),
           rel_l2(to_host<float>(d, ref.size()), ref), 1e-6);
  }
}

// ---- Mamba-2 SSD -------------------------------------------------------------------------

struct SsdShape {
  int H, P, N, G;
  float dt_min, dt_max;
};

void ssd_case(const SsdShape& sh, const Batch& b, bool step) {
  const int H = sh.H, P = sh.P, N = sh.N, G = sh.G;
  const int n_tok = b.n_tok();
  const int d_inner = H * P;
  const int64_t conv_dim = d_inner + 2 * int64_t(G) * N, lddt = H + 3;
  auto xbc = randn(size_t(n_tok) * conv_dim);  // [x | B | C] per row, as the conv writes it
  auto dt = randn(size_t(n_tok) * lddt, 0.5f);
  auto dt_init = uniform(H, 1e-3f, 1e-1f);
  std::vector<float> dt_bias(H);
  for (int h = 0; h < H; h++) dt_bias[h] = std::log(std::expm1(dt_init[h]));
  auto A = uniform(H, -16.0f, -1.0f);
  auto D = randn(H, 0.5f, 1.0f);
  States st(int64_t(H) * P * N);
  DeviceBuffer dxbc = to_device(xbc), ddt = to_device(dt), dbias = to_device(dt_bias),
               dA = to_device(A), dD = to_device(D);
  DeviceBuffer y(size_t(n_tok) * d_inner * 4, "y");
  mamba::cuda::SsdParams p;
  p.x = dxbc.as<float>();
  p.ldx = conv_dim;
  p.B = dxbc.as<float>() + d_inner;
  p.C = dxbc.as<float>() + d_inner + G * N;
  p.ldbc = conv_dim;
  p.dt = ddt.as<float>();
  p.lddt = lddt;
  p.dt_bias = dbias.as<float>();
  p.A = dA.as<float>();
  p.D = dD.as<float>();
  p.dt_min = sh.dt_min;
  p.dt_max = sh.dt_max;
  p.state = st.ref();
  p.n_heads = H;
  p.head_dim = P;
  p.d_state = N;
  p.n_groups = G;
  p.y = y.as<float>();
  if (step) {
    mamba::cuda::ssd_step(p, n_tok, b.view.slots, nullptr);
  } else {
    const size_t ws_bytes = mamba::cuda::ssd_workspace_bytes(p, b.view);
    DeviceBuffer ws(ws_bytes, "ssd workspace");
    mamba::cuda::ssd_prefill(p, b.view, ws.data(), ws_bytes, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
  }

  std::vector<double> s_ref = st.ref_copy(), y_ref(size_t(n_tok) * d_inner);
  for (size_t s = 0; s < b.lens.size(); s++) {
    for (int t = b.start[s]; t < b.start[s + 1]; t++) {
      const float* row = &xbc[size_t(t) * conv_dim];
      for (int h = 0; h < H; h++) {
        const int g = h / (H / G);
        double d = softplus(double(dt[size_t(t) * lddt + h]) + dt_bias[h]);
        d = std::min<double>(std::max<double>(d, sh.dt_min), sh.dt_max);
        const double dA = std::exp(d * A[h]);
        const float* B = row + d_inner + g * N;
        const float* C = row + d_inner + G * N + g * N;
        for (int j = 0; j < P; j++) {
          double* hs = s_ref.data() + b.slots[s] * st.stride + (int64_t(h) * P + j) * N;
          const double xv = row[h * P + j];
          double acc = 0;
          for (int n = 0; n < N; n++) {
            hs[n] = dA * hs[n] + d * xv * B[n];
            acc += hs[n] * C[n];
          }
          y_ref[size_t(t) * d_inner + h * P + j] = acc + D[h] * xv;
        }
      }
    }
  }
  const std::string op = step ? "ssd_step" : "ssd_prefill";
  char shape[160];
  std::snprintf(shape, sizeof shape, "H %d P %d N %d G %d%s %s", H, P, N, G,
                std::isinf(sh.dt_max) ? "" : " clamp", (step ? "slots " + join(b.slots) : b.name()).c_str());
  report(op + " y", shape, rel_l2(to_host<float>(y, y_ref.size()), y_ref), 2e-5);
  report(op + " state", shape, rel_l2(st.result(), s_ref), 2e-5);
}

TEST_CASE("SSD (Mamba-2): chunked prefill and step") {
  if (no_device()) return;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<SsdShape> shapes = {
      {80, 64, 128, 1, 0.0f, inf},    // mamba2-2.7b
      {128, 64, 128, 8, 0.0f, inf},   // Mamba-Codestral-7B
      {16, 4, 8, 2, 0.0f, 0.3f},      // fixture mamba2_g2_bias_bf16 (dt clamp)
      {8, 16, 16, 4, 0.01f, inf},     // fixture mamba2_g4_f16, with a dt floor
      {4, 72, 36, 2, 0.0f, inf},      // head_dim over one 64-wide slice, d_state not a tile multiple
      {3, 5, 7, 1, 0.0f, inf},        // odd row strides: the 4-byte copy path
  };
  // Under a sanitizer: the same head geometry with fewer heads.
  const std::vector<SsdShape> quick_shapes = {
      {4, 64, 128, 1, 0.0f, inf}, {16, 64, 128, 8, 0.0f, inf}, shapes[2], shapes[3], shapes[4],
      shapes[5]};
  for (const auto& sh : quick() ? quick_shapes : shapes) {
    ssd_case(sh, Batch({1}, {1}), false);
    ssd_case(sh, Batch({100}, {2}), false);  // one full chunk and a partial one
    ssd_case(sh, Batch({3, 130, 64}, {3, 0, 1}), false);
    ssd_case(sh, Batch({1, 1, 1}, {2, 0, 3}), true);
  }
  // The decode step holds 128 state entries a warp at once: d_state 200 takes a second, partial
  // batch of them.
  ssd_case({2, 8, 200, 2, 0.0f, inf}, Batch({1, 1, 1}, {2, 0, 3}), true);
}

// ---- gated RMSNorm -----------------------------------------------------------------------

TEST_CASE("gated_rmsnorm: per-group norm of y * SiLU(z)") {
  if (no_device()) return;
  // Groups held in registers by 512, 256 and 32 threads, and one too large for that (16384).
  for (auto [d_inner, G] :
       std::vector<std::array<int, 2>>{{5120, 1}, {8192, 8}, {64, 2}, {16384, 1}}) {
    for (bool in_place : {false, true}) {
      const int n = 4;
      const int64_t ldz = 2 * int64_t(d_inner) + 9;
      const float eps = 1e-5f;
      auto y = randn(size_t(n) * d_inner), z = randn(size_t(n) * ldz),
           w = randn(d_inner, 0.2f, 1.0f);
      DeviceBuffer dy = to_device(y), dz = to_device(z), dw = to_device(w);
      DeviceBuffer dout(size_t(n) * d_inner * 4, "out");
      float* out = in_place ? dy.as<float>() : dout.as<float>();
      // The 16-bit copy alone (the prefill's form) must equal the float32 output rounded.
      const DType t16 = in_place ? DType::F16 : DType::BF16;
      DeviceBuffer out16(size_t(n) * d_inner * 2, "out16");
      mamba::cuda::gated_rmsnorm(dy.as<float>(), dz.as<float>(), ldz, dw.as<float>(), n, d_inner,
                                 G, eps, nullptr, {out16.data(), t16 == DType::BF16}, nullptr);
      mamba::cuda::gated_rmsnorm(dy.as<float>(), dz.as<float>(), ldz, dw.as<float>(), n, d_inner,
                                 G, eps, out, {}, nullptr);
      std::vector<double> ref(y.size());
      const int gs = d_inner / G;
      for (int r = 0; r < n; r++) {
        for (int g = 0; g < G; g++) {
          double ss = 0;
          for (int j = g * gs; j < (g + 1) * gs; j++) {
            ref[r * d_inner + j] = y[r * d_inner + j] * silu(z[r * ldz + j]);
            ss += ref[r * d_inner + j] * ref[r * d_inner + j];
          }
          const double s = 1.0 / std::sqrt(ss / gs + eps);
          for (int j = g * gs; j < (g + 1) * gs; j++) ref[r * d_inner + j] *= s * w[j];
        }
      }
      const std::string shape = "d_inner " + std::to_string(d_inner) + " G " +
                                std::to_string(G) + (in_place ? " in place" : "");
      const auto got = to_host<float>(in_place ? dy : dout, ref.size());
      report("gated_rmsnorm", shape, rel_l2(got, ref), 1e-5);
      report(std::string("gated_rmsnorm out16 only ") + dname(t16), shape,
             rounding_mismatch(to_host<uint16_t>(out16, ref.size()), got, t16), 0.0);
    }
  }
}

// ---- linear (cuBLAS) ---------------------------------------------------------------------

TEST_CASE("linear: projections in f32, f16 and bf16") {
  if (no_device()) return;
  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  struct Case {
    int rows, cols;
    const char* what;
  };
  const std::vector<Case> cases = {
      {3072, 768, "mamba-130m in_proj"},  {80, 1536, "mamba-130m x_proj"},
      {1536, 48, "mamba-130m dt_proj"},   {2560, 5120, "mamba-2.8b out_proj"},
      {10576, 2560, "mamba2-2.7b in_proj"}, {1000, 768, "LM head slice"},
      {24, 37, "odd width (element-wise input rounding)"},
  };
  for (const auto& c : cases) {
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      for (int n : {1, 7, 64}) {
        if (n == 64 && int64_t(c.rows) * c.cols > (int64_t(3) << 20)) continue;  // host time
        if (quick() && (n == 64 || int64_t(c.rows) * c.cols > (int64_t(3) << 20))) continue;
        const bool bias = n == 7;
        const int64_t ldx = c.cols + (n == 64 ? 5 : 0), ldy = c.rows + (n == 64 ? 3 : 0);
        Weight W(randn(size_t(c.rows) * c.cols, 1.0f / std::sqrt(float(c.cols))), t);
        auto x = randn(size_t(n) * ldx), b = randn(c.rows);
        DeviceBuffer dx = to_device(x), db = to_device(b);
        DeviceBuffer y(size_t(n) * ldy * 4, "y");
        const mamba::cuda::DeviceMatrix dm{W.dev.data(), t, c.rows, c.cols};
        DeviceBuffer scratch(std::max<size_t>(mamba::cuda::linear_scratch_bytes(dm, n), 1), "scratch");
        mamba::cuda::linear(handle, dm, dx.as<float>(), ldx, n, y.as<float>(), ldy,
                            bias ? db.as<float>() : nullptr, {scratch.data(), scratch.bytes()},
                            nullptr);
        const auto got_all = to_host<float>(y, size_t(n) * ldy);
        std::vector<float> got;
        std::vector<double> ref;
        for (int r = 0; r < n; r++) {
          for (int i = 0; i < c.rows; i++) {
            double acc = bias ? b[i] : 0.0;
            for (int j = 0; j < c.cols; j++)
              acc += double(W.values[size_t(i) * c.cols + j]) * x[size_t(r) * ldx + j];
            ref.push_back(acc);
            got.push_back(got_all[size_t(r) * ldy + i]);
          }
        }
        // 16-bit weights also round the activations to 16 bits before the product.
        const double tol = t == DType::F32 ? 1e-5 : t == DType::F16 ? 1e-3 : 1e-2;
        char shape[128];
        std::snprintf(shape, sizeof shape, "%s (%d, %d) n %d%s", c.what, c.rows, c.cols, n,
                      bias ? " +bias" : "");
        report(std::string("linear ") + dname(t), shape, rel_l2(got, ref), tol);
        if (t != DType::F32) {
          // x already rounded by its producer (an Out16 in the scratch): the same bits, and x
          // itself is not read.
          std::vector<float> packed;
          for (int r = 0; r < n; r++)
            packed.insert(packed.end(), x.begin() + size_t(r) * ldx,
                          x.begin() + size_t(r) * ldx + c.cols);
          DeviceBuffer x16 = to_device(to_16(packed, t));
          DeviceBuffer y2(size_t(n) * ldy * 4, "y2");
          mamba::cuda::linear(handle, dm, nullptr, ldx, n, y2.as<float>(), ldy,
                              bias ? db.as<float>() : nullptr, {x16.data(), x16.bytes()},
                              nullptr, /*x_rounded=*/true);
          const auto got2 = to_host<float>(y2, size_t(n) * ldy);
          bool same = true;
          for (int r = 0; r < n; r++)
            for (int i = 0; i < c.rows; i++)
              same = same && got2[size_t(r) * ldy + i] == got_all[size_t(r) * ldy + i];
          report(std::string("linear ") + dname(t) + " x_rounded", shape, same ? 0.0 : 1.0, 0.0);
        }
      }
    }
  }
  CUBLAS_CHECK(cublasDestroy(handle));
}

// ---- linear_decode (batch-invariant decode projections) ------------------------------------

TEST_CASE("linear_decode: accurate, and each row's result independent of the batch") {
  if (no_device()) return;
  struct Case {
    int rows, cols;
    const char* what;
  };
  const std::vector<Case> cases = {
      {3072, 768, "mamba-130m in_proj"},    {80, 1536, "mamba-130m x_proj"},
      {1536, 48, "mamba-130m dt_proj"},     {768, 1536, "mamba-130m out_proj"},
      {3352, 768, "mamba2-130m in_proj"},   {77, 45, "odd shape"},
      {8192, 2048, "mamba-1.4b in_proj"},   {160, 4096, "mamba-1.4b x_proj"},
      {4096, 128, "mamba-1.4b dt_proj"},
      {2048, 4096, "mamba-1.4b out_proj"}, {50280, 768, "mamba-130m LM head"},
      {768, 3072, "split-K GEMM"},
  };
  for (const auto& c : cases) {
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      if (quick() && c.rows * int64_t(c.cols) > (int64_t(3) << 20)) continue;
      Weight W(randn(size_t(c.rows) * c.cols, 1.0f / std::sqrt(float(c.cols))), t);
      const mamba::cuda::DeviceMatrix dm{W.dev.data(), t, c.rows, c.cols};
      const auto b = randn(c.rows);
      DeviceBuffer db = to_device(b);
      // The largest batch first; smaller batches are its leading rows. Odd leading dimensions
      // take the unvectorised load paths.
      const int n_max = 200;
      const auto need = mamba::cuda::linear_decode_needs(dm, n_max);
      DeviceBuffer x16(std::max<size_t>(need.x16_elems, 1) * 2, "x16");
      const mamba::cuda::LinearDecodeWorkspace ws{x16.data(), need.x16_elems};
      for (int ld_pad : {0, 3}) {
        const int64_t ldx = c.cols + ld_pad, ldy = c.rows + ld_pad;
        const auto x = randn(size_t(n_max) * ldx);
        DeviceBuffer dx = to_device(x);
        std::vector<float> alone;  // (n_max, rows): every row computed in a batch of 1
        {
          DeviceBuffer y(size_t(ldy) * 4, "y");
          for (int r = 0; r < n_max; r++) {
            mamba::cuda::linear_decode(dm, dx.as<float>() + r * ldx, ldx, 1, y.as<float>(), ldy,
                                       db.as<float>(), ws, nullptr);
            const auto row = to_host<float>(y, size_t(c.rows));
            alone.insert(alone.end(), row.begin(), row.end());
          }
        }
        // Accuracy against double precision on the rows computed alone.
        std::vector<double> ref;
        std::vector<float> got;
        for (int r = 0; r < 9; r++)
          for (int i = 0; i < c.rows; i++) {
            double acc = b[size_t(i)];
            for (int j = 0; j < c.cols; j++)
              acc += double(W.values[size_t(i) * c.cols + j]) * x[size_t(r) * ldx + j];
            ref.push_back(acc);
            got.push_back(alone[size_t(r) * c.rows + i]);
          }
        const double tol = t == DType::F32 ? 1e-5 : t == DType::F16 ? 1e-3 : 1e-2;
        char shape[160];
        std::snprintf(shape, sizeof shape, "%s (%d, %d) ld+%d", c.what, c.rows, c.cols, ld_pad);
        report(std::string("linear_decode ") + dname(t), shape, rel_l2(got, ref), tol);
        // Batch invariance: each tile shape (n <= 8, 16, 32, > 32, several passes) gives
        // every row bit for bit what it got alone.
        for (int n : {2, 8, 9, 16, 17, 33, 64, 65, 200}) {
          if (quick() && n > 17) continue;
          DeviceBuffer y(size_t(n) * ldy * 4, "y");
          mamba::cuda::linear_decode(dm, dx.as<float>(), ldx, n, y.as<float>(), ldy,
                                     db.as<float>(), ws, nullptr);
          const auto all = to_host<float>(y, size_t(n) * ldy);
          int64_t differ = 0;
          for (int r = 0; r < n; r++)
            for (int i = 0; i < c.rows; i++)
              differ += std::memcmp(&all[size_t(r) * ldy + i], &alone[size_t(r) * c.rows + i], 4) != 0;
          INFO(c.what, " ", dname(t), " n ", n, " ld+", ld_pad);
          CHECK(differ == 0);
          // Where the staged GEMM reads x16, x written there by its producer (rounded on the
          // host here) gives the same bits without the rounding pass.
          if (mamba::cuda::linear_decode_reads_x16(dm, n, ws)) {
            std::vector<float> packed;
            for (int r = 0; r < n; r++)
              packed.insert(packed.end(), x.begin() + size_t(r) * ldx,
                            x.begin() + size_t(r) * ldx + c.cols);
            // In the GEMM's operand order, rows past n holding NaNs.
            const auto h16 = to_gemm_order(to_16(packed, t), n, c.cols, 0x7fff);
            CUDA_CHECK(cudaMemcpy(x16.data(), h16.data(), h16.size() * 2, cudaMemcpyHostToDevice));
            DeviceBuffer y2(size_t(n) * ldy * 4, "y2");
            mamba::cuda::linear_decode(dm, dx.as<float>(), ldx, n, y2.as<float>(), ldy,
                                       db.as<float>(), ws, nullptr, /*x_rounded=*/true);
            const auto all2 = to_host<float>(y2, size_t(n) * ldy);
            int64_t differ2 = 0;
            for (int r = 0; r < n; r++)
              for (int i = 0; i < c.rows; i++)
                differ2 += std::memcmp(&all2[size_t(r) * ldy + i], &all[size_t(r) * ldy + i], 4) != 0;
            CHECK(differ2 == 0);
            // y16: the staged GEMM's 16-bit copy of y's first columns (for the next
            // projection) is y rounded, bit for bit, and y itself does not change.
            const int64_t gk = c.rows / 32 * 32;
            if (gk > 0) {
              DeviceBuffer y16(size_t((n + 15) / 16 * 16 * gk) * 2, "y16");
              DeviceBuffer y3(size_t(n) * ldy * 4, "y3");
              mamba::cuda::linear_decode(dm, dx.as<float>(), ldx, n, y3.as<float>(), ldy,
                                         db.as<float>(), ws, nullptr, false,
                                         {y16.data(), t == DType::BF16, gk});
              const auto all3 = to_host<float>(y3, size_t(n) * ldy);
              const auto got16 = to_host<uint16_t>(y16, size_t((n + 15) / 16 * 16 * gk));
              std::vector<float> first;
              for (int r = 0; r < n; r++)
                first.insert(first.end(), all.begin() + size_t(r) * ldy,
                             all.begin() + size_t(r) * ldy + gk);
              const auto want16 = to_16(first, t);
              int64_t differ3 = 0;
              for (int r = 0; r < n; r++) {
                for (int i = 0; i < c.rows; i++)
                  differ3 += std::memcmp(&all3[size_t(r) * ldy + i], &all[size_t(r) * ldy + i], 4) != 0;
                for (int64_t k = 0; k < gk; k++)
                  differ3 += got16[size_t(mamba::cuda::gemm_x16_index(r, k, gk))] !=
                             want16[size_t(r * gk + k)];
              }
              CHECK(differ3 == 0);
            }
          } else {
            // x_rounded is refused where x16 is not read.
            DeviceBuffer y2(size_t(n) * ldy * 4, "y2");
            CHECK_THROWS_AS(mamba::cuda::linear_decode(dm, dx.as<float>(), ldx, n, y2.as<float>(),
                                                       ldy, db.as<float>(), ws, nullptr, true),
                            mamba::Error);
          }
        }
      }
    }
  }
}

// The conv step fused into a decode projection's epilogue (what the backend runs for in_proj):
// bit for bit what the projection followed by the conv kernel gives, for the outputs, the
// 16-bit copy (in the next GEMM's order above 8 rows) and the state, at one row, one pass of
// the staged GEMM and several.
TEST_CASE("linear_decode: the fused conv step equals the conv kernel after the projection") {
  if (no_device()) return;
  struct Case {
    int rows, cols, first, dim;
    const char* what;
  };
  const std::vector<Case> cases = {{8192, 2048, 0, 4096, "mamba-1.4b in_proj, x"},
                                   {3352, 768, 1536, 1792, "mamba2-130m in_proj, xBC"}};
  const int K = 4, n_slots = 80;
  for (const auto& c : cases) {
    for (DType t : {DType::F16, DType::BF16}) {
      Weight W(randn(size_t(c.rows) * c.cols, 1.0f / std::sqrt(float(c.cols))), t);
      const mamba::cuda::DeviceMatrix dm{W.dev.data(), t, c.rows, c.cols};
      const auto need = mamba::cuda::linear_decode_needs(dm, 64);
      DeviceBuffer x16(std::max<size_t>(need.x16_elems, 1) * 2, "x16");
      const mamba::cuda::LinearDecodeWorkspace ws{x16.data(), need.x16_elems};
      DeviceBuffer dcw = to_device(randn(size_t(c.dim) * K, 0.5f));
      DeviceBuffer dcb = to_device(randn(c.dim, 0.5f));
      const int64_t stride = int64_t(K - 1) * c.dim + 3;
      const auto st0 = randn(size_t(n_slots * stride), 0.5f);
      for (int n : {1, 9, 64}) {
        const auto x = randn(size_t(n) * c.cols);
        DeviceBuffer dx = to_device(x);
        std::vector<int32_t> slots;
        for (int r = 0; r < n; r++) slots.push_back((r * 37 + 11) % n_slots);  // distinct
        DeviceBuffer dslots = to_device(slots);
        const int64_t rows16 = (n + 15) / 16 * 16;
        std::vector<float> y[2], out[2], st[2];
        std::vector<uint16_t> out16[2];
        for (int fused = 0; fused < 2; fused++) {
          DeviceBuffer dy(size_t(n) * c.rows * 4, "y"), dout(size_t(n) * c.dim * 4, "out");
          DeviceBuffer dout16(size_t(rows16) * c.dim * 2, "out16");
          DeviceBuffer dst = to_device(st0);
          mamba::cuda::Conv1dParams cp;
          cp.w = dcw.as<float>();
          cp.b = dcb.as<float>();
          cp.state = {dst.as<float>(), stride};
          cp.dim = c.dim;
          cp.d_conv = K;
          cp.out = dout.as<float>();
          cp.out16 = {dout16.data(), t == DType::BF16, n > 8 ? int64_t(c.dim) : 0};
          if (fused) {
            mamba::cuda::linear_decode(dm, dx.as<float>(), c.cols, n, dy.as<float>(), c.rows,
                                       nullptr, ws, nullptr, false, {},
                                       {cp, dslots.as<int32_t>(), c.first});
          } else {
            mamba::cuda::linear_decode(dm, dx.as<float>(), c.cols, n, dy.as<float>(), c.rows,
                                       nullptr, ws, nullptr);
            cp.x = dy.as<float>() + c.first;
            cp.ldx = c.rows;
            mamba::cuda::conv1d_step(cp, n, dslots.as<int32_t>(), nullptr);
          }
          y[fused] = to_host<float>(dy, size_t(n) * c.rows);
          out[fused] = to_host<float>(dout, size_t(n) * c.dim);
          st[fused] = to_host<float>(dst, st0.size());
          out16[fused] = to_host<uint16_t>(dout16, size_t(rows16) * c.dim);
          if (n > 8) {  // only rows below n are written: compare those
            std::vector<uint16_t> used;
            for (int r = 0; r < n; r++)
              for (int k = 0; k < c.dim; k++)
                used.push_back(out16[fused][size_t(mamba::cuda::gemm_x16_index(r, k, c.dim))]);
            out16[fused] = used;
          } else {
            out16[fused].resize(size_t(n) * c.dim);
          }
        }
        INFO(c.what, " ", dname(t), " n ", n);
        CHECK(std::memcmp(y[0].data(), y[1].data(), y[0].size() * 4) == 0);
        CHECK(std::memcmp(out[0].data(), out[1].data(), out[0].size() * 4) == 0);
        CHECK(std::memcmp(st[0].data(), st[1].data(), st[0].size() * 4) == 0);
        CHECK(out16[0] == out16[1]);
        CHECK(st[1] != st0);  // the conv did run
      }
    }
  }
}

// ---- errors ------------------------------------------------------------------------------

TEST_CASE("errors: out of memory names the allocation; preconditions are checked") {
  if (no_device()) return;
  try {
    DeviceBuffer huge(size_t(1) << 50, "weights blk.0.ssm_in.weight");
    FAIL("a 1 PiB allocation succeeded");
  } catch (const mamba::Error& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of GPU memory allocating weights blk.0.ssm_in.weight (") == 0);
    CHECK(msg.find(" free)") != std::string::npos);
  }
  // The device stays usable after the failed allocation.
  DeviceBuffer small(1024, "small");
  CHECK(small.data() != nullptr);

  mamba::cuda::Conv1dParams p;
  float dummy_host = 0;
  p.x = p.w = &dummy_host;
  p.out = &dummy_host;
  p.dim = 4;
  p.ldx = 4;
  p.d_conv = 9;
  CHECK_THROWS_AS(mamba::cuda::conv1d_step(p, 1, reinterpret_cast<const int32_t*>(&dummy_host),
                                           nullptr),
                  mamba::Error);
  mamba::cuda::SsdParams s;
  s.x = s.B = s.C = s.dt = s.dt_bias = s.A = s.D = &dummy_host;
  s.y = &dummy_host;
  s.state = {&dummy_host, 1 << 20};
  s.n_heads = 6;
  s.n_groups = 4;  // heads must divide into groups
  s.head_dim = 4;
  s.d_state = 4;
  s.ldx = s.ldbc = s.lddt = 64;
  CHECK_THROWS_AS(mamba::cuda::ssd_step(s, 1, reinterpret_cast<const int32_t*>(&dummy_host),
                                        nullptr),
                  mamba::Error);
}

}  // namespace

// The residual stream's RMSNorm done by the projections around it (decode steps of up to 8
// rows): out_proj with a ResidualOut adds into h and writes the groups' sums of squares, and
// in_proj with a NormIn norms h as it reads it. Bit for bit what out_proj, rmsnorm_residual and
// in_proj give one after another, for h and for in_proj's output; the shapes of mamba-1.4b, and
// a width that is not a multiple of 16 (a partial last group) with a bias on out_proj.
TEST_CASE("linear_decode: the norm in the projections equals the norm kernel between them") {
  if (no_device()) return;
  struct Case {
    int d, d_inner, in_rows;
    bool bias;
    const char* what;
  };
  const std::vector<Case> cases = {{2048, 4096, 8192, false, "mamba-1.4b"},
                                   {200, 96, 77, true, "odd width, bias"}};
  const float eps = 1e-5f;
  for (const auto& c : cases) {
    for (DType t : {DType::F16, DType::BF16}) {
      Weight Wo(randn(size_t(c.d) * c.d_inner, 1.0f / std::sqrt(float(c.d_inner))), t);
      Weight Wi(randn(size_t(c.in_rows) * c.d, 1.0f / std::sqrt(float(c.d))), t);
      const mamba::cuda::DeviceMatrix out_proj{Wo.dev.data(), t, c.d, c.d_inner};
      const mamba::cuda::DeviceMatrix in_proj{Wi.dev.data(), t, c.in_rows, c.d};
      const mamba::cuda::LinearDecodeWorkspace ws{};
      DeviceBuffer dw = to_device(randn(c.d, 0.2f, 1.0f));
      DeviceBuffer db = to_device(randn(c.d, 0.1f));
      const float* bias = c.bias ? db.as<float>() : nullptr;
      for (int n : {1, 3, 8}) {
        const auto h0 = randn(size_t(n) * c.d), y = randn(size_t(n) * c.d_inner);
        DeviceBuffer dy = to_device(y);
        std::vector<float> h[2], z[2];
        for (int fused = 0; fused < 2; fused++) {
          DeviceBuffer dh = to_device(h0), dz(size_t(n) * c.in_rows * 4, "z");
          DeviceBuffer dsum(size_t(n) * ((c.d + 15) / 16) * 4, "sumsq");
          if (fused) {
            mamba::cuda::linear_decode(out_proj, dy.as<float>(), c.d_inner, n, dh.as<float>(),
                                       c.d, bias, ws, nullptr, false, {}, {}, {},
                                       {dsum.as<float>()});
            mamba::cuda::linear_decode(in_proj, dh.as<float>(), c.d, n, dz.as<float>(),
                                       c.in_rows, nullptr, ws, nullptr, false, {}, {},
                                       {dsum.as<float>(), dw.as<float>(), eps});
          } else {
            DeviceBuffer dout(size_t(n) * c.d * 4, "out"), dxn(size_t(n) * c.d * 4, "xn");
            mamba::cuda::linear_decode(out_proj, dy.as<float>(), c.d_inner, n, dout.as<float>(),
                                       c.d, bias, ws, nullptr);
            mamba::cuda::rmsnorm_residual(dh.as<float>(), dout.as<float>(), dw.as<float>(), n,
                                          c.d, eps, dxn.as<float>(), {}, nullptr);
            mamba::cuda::linear_decode(in_proj, dxn.as<float>(), c.d, n, dz.as<float>(),
                                       c.in_rows, nullptr, ws, nullptr);
          }
          h[fused] = to_host<float>(dh, h0.size());
          z[fused] = to_host<float>(dz, size_t(n) * c.in_rows);
        }
        INFO(c.what, " ", dname(t), " n ", n);
        CHECK(std::memcmp(h[0].data(), h[1].data(), h[0].size() * 4) == 0);
        CHECK(std::memcmp(z[0].data(), z[1].data(), z[0].size() * 4) == 0);
        // And the result is a real projection of the normed h (not, say, all zeros).
        double zz = 0;
        for (float v : z[1]) zz += double(v) * v;
        CHECK(zz > 0.1 * double(z[1].size()));
      }
      // Misuse is refused: more than 8 rows, and a NormIn with x_rounded.
      DeviceBuffer dh(size_t(9) * c.d * 4, "h"), dsum(size_t(9) * ((c.d + 15) / 16) * 4, "s");
      DeviceBuffer dz(size_t(9) * c.in_rows * 4, "z");
      CHECK_THROWS_AS(mamba::cuda::linear_decode(in_proj, dh.as<float>(), c.d, 9, dz.as<float>(),
                                                 c.in_rows, nullptr, ws, nullptr, false, {}, {},
                                                 {dsum.as<float>(), dw.as<float>(), eps}),
                      mamba::Error);
    }
  }
}

// ---- argmax_rows (greedy picks on the device) ---------------------------------------------

// Each row's pick is greedy_argmax's (sampler.h), the Sampler's greedy pick: rows with ties,
// NaNs, infinities, a banned id at the maximum, no finite value at all, and signed zeros.
TEST_CASE("argmax_rows: each row's pick is greedy_argmax's") {
  if (no_device()) return;
  std::mt19937_64 g(5);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int V : {1, 7, 1025, 50280}) {
    const int n = 64, ld = V + 3;
    std::vector<float> x(size_t(n) * ld, 1e30f);  // padding past V must be ignored
    std::vector<int32_t> banned(n, -1);
    for (int r = 0; r < n; r++) {
      float* row = x.data() + size_t(r) * ld;
      for (int i = 0; i < V; i++)
        row[i] = r % 4 == 1 ? float(int(g() % 5)) : float(int64_t(g() % 2001) - 1000) * 1e-3f;
      if (r % 5 == 0) row[g() % V] = nan;
      if (r % 7 == 0) row[g() % V] = inf;
      if (r % 9 == 0) row[g() % V] = -inf;
      if (r % 11 == 0) std::fill(row, row + V, -inf);
      if (r % 13 == 0) std::fill(row, row + V, nan);
      if (r % 17 == 0) std::fill(row, row + V, r % 2 ? 0.0f : -0.0f);
      if (r % 3 == 0) banned[size_t(r)] = int32_t(g() % V);
      if (r % 6 == 0)  // the maximum itself
        banned[size_t(r)] = mamba::greedy_argmax(std::span<const float>(row, size_t(V)), -1);
    }
    DeviceBuffer dx = to_device(x), db = to_device(banned), ids(size_t(n) * 4, "ids");
    for (const bool with_bans : {true, false}) {
      mamba::cuda::argmax_rows(dx.as<float>(), ld, n, V, with_bans ? db.as<int32_t>() : nullptr,
                               ids.as<int32_t>(), nullptr);
      const auto got = to_host<int32_t>(ids, size_t(n));
      int64_t differ = 0;
      for (int r = 0; r < n; r++)
        differ += got[size_t(r)] !=
                  mamba::greedy_argmax(std::span<const float>(x.data() + size_t(r) * ld, size_t(V)),
                                       with_bans ? banned[size_t(r)] : -1);
      INFO("V ", V, " bans ", with_bans);
      CHECK(differ == 0);
    }
  }
  DeviceBuffer ids(4, "ids");
  CHECK_THROWS_AS(mamba::cuda::argmax_rows(nullptr, 8, 1, 8, nullptr, ids.as<int32_t>(), nullptr),
                  mamba::Error);
}
