// Whole-model checks of the CPU backend on small random models of every supported kind:
//   (a) logits against an independent double-precision forward written here, token by token,
//       reading the tensors straight from the GGUF file;
//   (b) prefill then decode, and split prefills, against one prefill of everything;
//   (c) bit-identical results for 1, 2 and 3 threads;
//   (d) state slots: save / load / copy / reset, batched decode;
//   (e) loader errors for broken files.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "common/error.h"
#include "common/half.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

using namespace mamba;
namespace fs = std::filesystem;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "cpu_model";

std::string model_file(const std::string& name, const RandomModelOptions& o) {
  return test::write_model_file(kTmp, name + ".gguf", o);
}

std::vector<int32_t> random_ids(size_t n, int64_t n_vocab, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = int32_t(r() % uint64_t(n_vocab));
  return ids;
}

double rel_l2(const float* got, const double* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

double rel_l2(const float* got, const float* want, size_t n) {
  std::vector<double> w(want, want + n);
  return rel_l2(got, w.data(), n);
}

// ---- the reference: a plain double-precision forward pass -------------------------------

// A tensor read straight from the file, every element as double; empty when absent.
std::vector<double> tensor(const gguf::File& f, const std::string& name) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (!t) return {};
  std::vector<double> v(t->n_elements);
  for (size_t i = 0; i < v.size(); i++) {
    if (t->dtype == gguf::DType::F32) {
      float x;
      std::memcpy(&x, t->data + 4 * i, 4);
      v[i] = x;
    } else {
      uint16_t h;
      std::memcpy(&h, t->data + 2 * i, 2);
      v[i] = t->dtype == gguf::DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
  return v;
}

// y = W x (+ b) for a row-major (rows, cols) W.
std::vector<double> linear(const std::vector<double>& W, const std::vector<double>& b,
                           const std::vector<double>& x, size_t rows) {
  const size_t cols = x.size();
  std::vector<double> y(rows);
  for (size_t r = 0; r < rows; r++) {
    double s = b.empty() ? 0.0 : b[r];
    for (size_t c = 0; c < cols; c++) s += W[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

std::vector<double> rms(const std::vector<double>& x, const std::vector<double>& w, double eps) {
  double ms = 0;
  for (double v : x) ms += v * v;
  ms /= double(x.size());
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); i++)
    y[i] = x[i] / std::sqrt(ms + eps) * (w.empty() ? 1.0 : w[i]);
  return y;
}

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double softplus(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

// Logits (T, n_vocab) for `ids` from an empty state.
std::vector<double> reference_logits(const gguf::File& f, const ModelConfig& c,
                                     const std::vector<int32_t>& ids) {
  const size_t DM = size_t(c.d_model), DI = size_t(c.d_inner), N = size_t(c.d_state);
  const size_t K = size_t(c.d_conv), CD = size_t(c.conv_dim()), V = size_t(c.n_vocab);
  const std::vector<double> emb = tensor(f, "token_embd.weight");
  std::vector<double> head = tensor(f, "output.weight");
  if (head.empty()) head = emb;
  const std::vector<double> norm_f = tensor(f, "output_norm.weight");
  // Per layer: the last K - 1 conv inputs (oldest first) and the SSM state.
  std::vector<std::vector<std::vector<double>>> conv(
      size_t(c.n_layer), std::vector<std::vector<double>>(K - 1, std::vector<double>(CD)));
  std::vector<std::vector<double>> ssm(size_t(c.n_layer), std::vector<double>(DI * N));
  std::vector<double> logits;

  for (int32_t id : ids) {
    std::vector<double> h(emb.begin() + long(size_t(id) * DM),
                          emb.begin() + long(size_t(id + 1) * DM));
    for (int64_t il = 0; il < c.n_layer; il++) {
      const std::string p = "blk." + std::to_string(il) + ".";
      const std::vector<double> x = rms(h, tensor(f, p + "attn_norm.weight"), c.norm_eps);
      const std::vector<double> proj =
          linear(tensor(f, p + "ssm_in.weight"), tensor(f, p + "ssm_in.bias"), x,
                 size_t(c.in_proj_rows()));
      // Causal depthwise conv over [conv state, this input], then SiLU.
      const size_t conv_off = c.arch == Arch::Mamba1 ? 0 : DI;  // where xBC starts in proj
      const std::vector<double> cw = tensor(f, p + "ssm_conv1d.weight");  // (CD, K)
      std::vector<double> cb = tensor(f, p + "ssm_conv1d.bias");
      if (cb.empty()) cb.assign(CD, 0.0);
      std::vector<double> xc(CD);
      auto& cs = conv[size_t(il)];
      for (size_t ch = 0; ch < CD; ch++) {
        double s = cb[ch];
        for (size_t k = 0; k < K; k++)
          s += cw[ch * K + k] * (k < K - 1 ? cs[k][ch] : proj[conv_off + ch]);
        xc[ch] = silu(s);
      }
      for (size_t k = 0; k + 1 < K - 1; k++) cs[k] = cs[k + 1];
      for (size_t ch = 0; ch < CD; ch++) cs[K - 2][ch] = proj[conv_off + ch];

      std::vector<double>& S = ssm[size_t(il)];
      const std::vector<double> A = tensor(f, p + "ssm_a"), D = tensor(f, p + "ssm_d");
      std::vector<double> y(DI);
      if (c.arch == Arch::Mamba1) {
        const size_t R = size_t(c.dt_rank);
        std::vector<double> dbl = linear(tensor(f, p + "ssm_x.weight"), {}, xc, R + 2 * N);
        std::vector<double> dtl(dbl.begin(), dbl.begin() + long(R));
        std::vector<double> B(dbl.begin() + long(R), dbl.begin() + long(R + N));
        std::vector<double> C(dbl.begin() + long(R + N), dbl.end());
        if (c.dt_b_c_rms) {
          dtl = rms(dtl, {}, c.mixer_rms_eps);
          B = rms(B, {}, c.mixer_rms_eps);
          C = rms(C, {}, c.mixer_rms_eps);
        }
        std::vector<double> dt =
            linear(tensor(f, p + "ssm_dt.weight"), tensor(f, p + "ssm_dt.bias"), dtl, DI);
        for (size_t ch = 0; ch < DI; ch++) {
          const double d = softplus(dt[ch]);
          double s = 0;
          for (size_t n = 0; n < N; n++) {
            S[ch * N + n] = std::exp(d * A[ch * N + n]) * S[ch * N + n] + d * B[n] * xc[ch];
            s += S[ch * N + n] * C[n];
          }
          y[ch] = (s + D[ch] * xc[ch]) * silu(proj[DI + ch]);
        }
      } else {
        const size_t H = size_t(c.n_heads), P = size_t(c.head_dim), G = size_t(c.n_groups);
        const std::vector<double> dt_bias = tensor(f, p + "ssm_dt.bias");
        for (size_t hh = 0; hh < H; hh++) {
          const size_t g = hh / (H / G);
          const double d = std::clamp(softplus(proj[DI + CD + hh] + dt_bias[hh]), double(c.dt_min),
                                      double(c.dt_max));
          for (size_t pp = 0; pp < P; pp++) {
            const size_t ch = hh * P + pp;
            double s = 0;
            for (size_t n = 0; n < N; n++) {
              double& st = S[ch * N + n];
              st = std::exp(d * A[hh]) * st + d * xc[ch] * xc[DI + g * N + n];
              s += st * xc[DI + G * N + g * N + n];
            }
            y[ch] = s + D[hh] * xc[ch];
          }
        }
        // Gated RMSNorm, each group on its own.
        const std::vector<double> nw = tensor(f, p + "ssm_norm.weight");
        const size_t gs = DI / G;
        for (size_t g = 0; g < G; g++) {
          std::vector<double> part(gs),
              wpart(nw.begin() + long(g * gs), nw.begin() + long((g + 1) * gs));
          for (size_t i = 0; i < gs; i++) part[i] = y[g * gs + i] * silu(proj[g * gs + i]);
          part = rms(part, wpart, c.norm_eps);
          for (size_t i = 0; i < gs; i++) y[g * gs + i] = part[i];
        }
      }
      const std::vector<double> out =
          linear(tensor(f, p + "ssm_out.weight"), tensor(f, p + "ssm_out.bias"), y, DM);
      for (size_t i = 0; i < DM; i++) h[i] += out[i];
    }
    const std::vector<double> l = linear(head, {}, rms(h, norm_f, c.norm_eps), V);
    logits.insert(logits.end(), l.begin(), l.end());
  }
  return logits;
}

// ---- the model zoo ---------------------------------------------------------------------

struct Case {
  std::string name;
  RandomModelOptions o;
};

std::vector<Case> cases() {
  std::vector<Case> v;
  RandomModelOptions base;
  base.d_model = 32;
  base.n_layer = 2;
  base.n_vocab = 97;
  {
    Case k{"m1_tied_f32", base};
    k.o.d_state = 16;
    v.push_back(k);
  }
  {
    Case k{"m1_bias_untied_rank5_f16", base};
    k.o.proj_bias = true;
    k.o.tied = false;
    k.o.dt_rank = 5;
    k.o.dtype = gguf::DType::F16;
    k.o.seed = 2;
    v.push_back(k);
  }
  {
    Case k{"m1_noconvbias_bf16", base};
    k.o.d_model = 40;
    k.o.d_state = 5;
    k.o.conv_bias = false;
    k.o.dtype = gguf::DType::BF16;
    k.o.small_dtype = gguf::DType::BF16;
    k.o.n_layer = 3;
    k.o.seed = 3;
    v.push_back(k);
  }
  {
    Case k{"falcon_f32", base};
    k.o.falcon = true;
    k.o.dt_rank = 4;
    k.o.seed = 4;
    v.push_back(k);
  }
  {
    Case k{"m2_g1_hd16", base};
    k.o.arch = Arch::Mamba2;
    k.o.head_dim = 16;
    k.o.chunk_size = 4;
    k.o.seed = 5;
    v.push_back(k);
  }
  {
    Case k{"m2_g2_hd8_bias_f16_dtlimit", base};
    k.o.arch = Arch::Mamba2;
    k.o.n_groups = 2;
    k.o.head_dim = 8;
    k.o.proj_bias = true;
    k.o.tied = false;
    k.o.dtype = gguf::DType::F16;
    k.o.small_dtype = gguf::DType::F16;
    k.o.dt_min = 0.01f;
    k.o.dt_max = 0.05f;
    k.o.chunk_size = 5;
    k.o.seed = 6;
    v.push_back(k);
  }
  {
    Case k{"m2_g4_hd4_bf16_flat", base};
    k.o.arch = Arch::Mamba2;
    k.o.n_groups = 4;
    k.o.head_dim = 4;
    k.o.d_state = 12;
    k.o.d_conv = 3;
    k.o.dtype = gguf::DType::BF16;
    k.o.flat_vectors = true;
    k.o.chunk_size = 256;
    k.o.seed = 7;
    v.push_back(k);
  }
  return v;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

}  // namespace

TEST_CASE("cpu model: logits match an independent double-precision forward") {
  for (const Case& k : cases()) {
    INFO("model ", k.name);
    const auto model = Model::load(model_file(k.name, k.o));
    const ModelConfig& c = model->config();
    const auto ids = random_ids(12, c.n_vocab, 99);
    const std::vector<double> want = reference_logits(model->gguf(), c, ids);
    for (bool chunked : {false, true}) {
      if (chunked && c.arch != Arch::Mamba2) continue;
      INFO("chunked ", chunked);
      cpu::CpuBackend be(*model, 2, 1, chunked);
      std::vector<float> got;
      be.prefill(0, ids, true, got);
      REQUIRE(got.size() == want.size());
      const size_t V = size_t(c.n_vocab);
      double worst = 0;
      for (size_t t = 0; t < ids.size(); t++)
        worst = std::max(worst, rel_l2(got.data() + t * V, want.data() + t * V, V));
      char msg[200];
      std::snprintf(msg, sizeof msg, "%s%s: worst rel-L2 %.3g", k.name.c_str(),
                    chunked ? " (chunked)" : "", worst);
      MESSAGE(msg);
      CHECK(worst < 1e-5);
    }
  }
}

TEST_CASE("cpu model: prefill then decode, and split prefills, equal one prefill") {
  for (const Case& k : cases()) {
    INFO("model ", k.name);
    const auto model = Model::load(model_file(k.name, k.o));
    const ModelConfig& c = model->config();
    const size_t V = size_t(c.n_vocab);
    const auto ids = random_ids(11, c.n_vocab, 7);
    for (bool chunked : {false, true}) {
      if (chunked && c.arch != Arch::Mamba2) continue;
      cpu::CpuBackend be(*model, 2, 1, chunked);
      std::vector<float> all;
      be.prefill(0, ids, true, all);
      for (size_t k0 : {size_t(1), size_t(4), size_t(10)}) {
        INFO("prefill ", k0, " then decode, chunked ", chunked);
        // Prefill k0 tokens, then decode the rest one by one.
        std::vector<float> got, step;
        be.reset_slot(0);
        be.prefill(0, std::span(ids).first(k0), true, got);
        const int slot[1] = {0};
        for (size_t t = k0; t < ids.size(); t++) {
          be.decode(slot, std::span(ids).subspan(t, 1), step);
          got.insert(got.end(), step.begin(), step.end());
        }
        REQUIRE(got.size() == all.size());
        for (size_t t = 0; t < ids.size(); t++) CHECK(rel_l2(&got[t * V], &all[t * V], V) < 1e-6);
        // Without the chunked scan the arithmetic is the same for any split: same bits.
        if (!chunked) CHECK(bitwise_equal(got, all));
        // Prefill in three pieces.
        std::vector<float> pieces, part;
        be.reset_slot(0);
        for (auto [b, e] :
             {std::pair{size_t(0), k0}, std::pair{k0, k0 + 1}, std::pair{k0 + 1, ids.size()}}) {
          if (b >= e) continue;
          be.prefill(0, std::span(ids).subspan(b, e - b), true, part);
          pieces.insert(pieces.end(), part.begin(), part.end());
        }
        REQUIRE(pieces.size() == all.size());
        for (size_t t = 0; t < ids.size(); t++)
          CHECK(rel_l2(&pieces[t * V], &all[t * V], V) < 1e-6);
      }
      // Last-position logits only.
      std::vector<float> last;
      be.reset_slot(0);
      be.prefill(0, ids, false, last);
      CHECK(last.size() == V);
      CHECK(std::memcmp(last.data(), &all[(ids.size() - 1) * V], V * 4) == 0);
    }
  }
}

TEST_CASE("cpu model: a prompt longer than one batch matches token-by-token decoding") {
  RandomModelOptions o;
  o.d_model = 16;
  o.n_layer = 1;
  o.n_vocab = 50;
  o.d_state = 4;
  for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
    o.arch = arch;
    o.head_dim = 8;
    const auto model = Model::load(model_file(arch == Arch::Mamba1 ? "long1" : "long2", o));
    const auto ids = random_ids(size_t(cpu::kMaxBatchTokens) + 45, o.n_vocab, 3);
    cpu::CpuBackend be(*model, 2, 1);
    std::vector<float> all, step, steps;
    be.prefill(0, ids, true, all);
    be.reset_slot(0);
    const int slot[1] = {0};
    for (size_t t = 0; t < ids.size(); t++) {
      be.decode(slot, std::span(ids).subspan(t, 1), step);
      steps.insert(steps.end(), step.begin(), step.end());
    }
    CHECK(bitwise_equal(all, steps));
  }
}

TEST_CASE("cpu model: results are bit-identical for 1, 2 and 3 threads") {
  for (const Case& k : cases()) {
    INFO("model ", k.name);
    const auto model = Model::load(model_file(k.name, k.o));
    const auto ids = random_ids(9, model->config().n_vocab, 5);
    std::vector<std::vector<float>> pre, dec;
    for (int nt : {1, 2, 3}) {
      cpu::CpuBackend be(*model, nt, 1);
      CHECK(be.n_threads() == nt);
      std::vector<float> l, d;
      be.prefill(0, ids, true, l);
      const int slot[1] = {0};
      be.decode(slot, std::span(ids).first(1), d);
      pre.push_back(l);
      dec.push_back(d);
    }
    CHECK(bitwise_equal(pre[0], pre[1]));
    CHECK(bitwise_equal(pre[0], pre[2]));
    CHECK(bitwise_equal(dec[0], dec[1]));
    CHECK(bitwise_equal(dec[0], dec[2]));
  }
}

TEST_CASE("cpu model: state slots save, load, copy, reset; batched decode") {
  for (const Case& k : {cases()[1], cases()[5]}) {
    INFO("model ", k.name);
    const auto model = Model::load(model_file(k.name, k.o));
    const ModelConfig& c = model->config();
    const size_t V = size_t(c.n_vocab);
    cpu::CpuBackend be(*model, 2, 3);
    CHECK(be.n_slots() == 3);
    CHECK(be.state_bytes() == c.state_bytes());
    const auto a = random_ids(6, c.n_vocab, 1), b = random_ids(4, c.n_vocab, 2);
    std::vector<float> l0, l1, l2;

    // Save slot 0 after a prompt, restore it into slot 1: both continue identically.
    be.prefill(0, a, false, l0);
    std::vector<uint8_t> saved;
    be.save_slot(0, saved);
    CHECK(saved.size() == c.state_bytes());
    be.load_slot(1, saved);
    const int s0[1] = {0}, s1[1] = {1};
    be.decode(s0, std::span(b).first(1), l0);
    be.decode(s1, std::span(b).first(1), l1);
    CHECK(bitwise_equal(l0, l1));

    // copy_slot, then one batched decode of both equals the single decodes.
    be.copy_slot(0, 2);
    const int both[2] = {0, 2};
    const int32_t toks[2] = {b[1], b[1]};
    std::vector<float> batched;
    be.decode(both, toks, batched);
    REQUIRE(batched.size() == 2 * V);
    be.decode(s1, std::span(b).subspan(1, 1), l1);  // slot 1 had the same history as 0 and 2
    CHECK(std::memcmp(batched.data(), l1.data(), V * 4) == 0);
    CHECK(std::memcmp(batched.data() + V, l1.data(), V * 4) == 0);

    // A batch of different sequences equals decoding each alone.
    be.reset_slot(0);
    be.reset_slot(1);
    be.prefill(0, a, false, l0);
    be.prefill(1, b, false, l1);
    std::vector<uint8_t> st0, st1;
    be.save_slot(0, st0);
    be.save_slot(1, st1);
    const int pair[2] = {1, 0};
    const int32_t next[2] = {a[0], b[0]};
    be.decode(pair, next, batched);
    be.load_slot(0, st0);
    be.load_slot(1, st1);
    be.decode(s1, std::span(next, 1), l1);
    be.decode(s0, std::span(next + 1, 1), l0);
    CHECK(std::memcmp(batched.data(), l1.data(), V * 4) == 0);
    CHECK(std::memcmp(batched.data() + V, l0.data(), V * 4) == 0);

    // reset_slot gives the empty state: the same logits as a fresh backend.
    be.reset_slot(2);
    std::vector<uint8_t> zero;
    be.save_slot(2, zero);
    CHECK(std::all_of(zero.begin(), zero.end(), [](uint8_t x) { return x == 0; }));
    be.prefill(2, a, true, l2);
    cpu::CpuBackend fresh(*model, 1, 1);
    fresh.prefill(0, a, true, l0);
    CHECK(bitwise_equal(l0, l2));

    // Misuse is an error, not a crash.
    CHECK_THROWS_AS(be.load_slot(0, std::span(saved).first(saved.size() - 4)), Error);
    CHECK_THROWS_AS(be.reset_slot(3), Error);
    CHECK_THROWS_AS(be.copy_slot(-1, 0), Error);
    CHECK_THROWS_AS(be.prefill(0, std::span<const int32_t>(), false, l0), Error);
    const int32_t bad[1] = {int32_t(c.n_vocab)};
    CHECK_THROWS_AS(be.prefill(0, bad, false, l0), Error);
    const int dup[2] = {0, 0};
    CHECK_THROWS_AS(be.decode(dup, toks, l0), Error);
  }
}

TEST_CASE("cpu model: prefill_batch equals one prefill per prompt, bit for bit") {
  // Lengths that exercise the packing: 300 ids go alone (in pieces, as prefill() cuts them);
  // 1 + 7 + 130 share a pass, 120 does not fit beside them, 5 joins it. Slots out of order,
  // some with a state already.
  const std::vector<size_t> lens = {1, 7, 130, 300, 120, 5};
  const std::vector<int> slots = {3, 0, 5, 1, 2, 4};
  for (const Case& k : cases()) {
    for (bool chunked : {false, true}) {
      if (chunked && k.o.arch != Arch::Mamba2) continue;
      INFO("model ", k.name, chunked ? " (chunked scan)" : "");
      const auto model = Model::load(model_file(k.name, k.o));
      const size_t V = size_t(model->config().n_vocab);
      cpu::CpuBackend packed(*model, 2, 6, chunked), alone(*model, 3, 6, chunked);
      std::vector<std::vector<int32_t>> ids;
      std::vector<std::span<const int32_t>> prompts;
      for (size_t i = 0; i < lens.size(); i++)
        ids.push_back(random_ids(lens[i], model->config().n_vocab, 40 + i));
      for (const auto& v : ids) prompts.push_back(v);
      std::vector<float> got, one, base;
      const auto prefix = random_ids(9, model->config().n_vocab, 39);
      for (int slot : {0, 2}) {  // states to continue
        packed.prefill(slot, prefix, false, one);
        alone.prefill(slot, prefix, false, one);
      }
      packed.prefill_batch(slots, prompts, got);
      REQUIRE(got.size() == lens.size() * V);
      for (size_t i = 0; i < lens.size(); i++) {
        alone.prefill(slots[i], prompts[i], false, one);
        CHECK_MESSAGE(std::memcmp(got.data() + i * V, one.data(), V * 4) == 0, "prompt ", i);
      }
      for (int slot = 0; slot < 6; slot++) {
        std::vector<uint8_t> a, b;
        packed.save_slot(slot, a);
        alone.save_slot(slot, b);
        CHECK_MESSAGE(a == b, "slot ", slot);
      }
      // The default, one prefill() per prompt, from the same starting states (what other
      // backends inherit), gives the same bits too.
      for (int slot = 0; slot < 6; slot++) packed.reset_slot(slot);
      for (int slot : {0, 2}) packed.prefill(slot, prefix, false, one);
      packed.Backend::prefill_batch(slots, prompts, base);
      CHECK(bitwise_equal(base, got));
    }
  }
  // Misuse is an error, not a crash.
  const Case k = cases()[0];
  const auto model = Model::load(model_file(k.name, k.o));
  cpu::CpuBackend be(*model, 1, 2);
  const std::vector<int32_t> a = random_ids(3, model->config().n_vocab, 1);
  const std::span<const int32_t> two[2] = {a, a};
  std::vector<float> out;
  const int dup[2] = {1, 1}, ok[2] = {0, 1}, one_slot[1] = {0}, far[2] = {0, 2};
  CHECK_THROWS_AS(be.prefill_batch(dup, two, out), Error);
  CHECK_THROWS_AS(be.prefill_batch(one_slot, two, out), Error);
  CHECK_THROWS_AS(be.prefill_batch(far, two, out), Error);
  const std::span<const int32_t> with_empty[2] = {a, {}};
  CHECK_THROWS_AS(be.prefill_batch(ok, with_empty, out), Error);
  const int32_t bad[1] = {int32_t(model->config().n_vocab)};
  const std::span<const int32_t> with_bad[2] = {a, bad};
  CHECK_THROWS_AS(be.prefill_batch(ok, with_bad, out), Error);
}

// ---- loader errors ----------------------------------------------------------------------

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Copies a GGUF file, letting the caller drop or reshape one tensor, add one, and override
// metadata. Replaced tensors are filled with zeros.
struct Edit {
  std::string drop;
  std::string reshape;
  std::vector<uint64_t> new_ne;
  std::string add;
  std::function<void(gguf::Writer&)> meta;
};
Edit drop(const std::string& name) {
  Edit e;
  e.drop = name;
  return e;
}
Edit reshape(const std::string& name, std::vector<uint64_t> ne) {
  Edit e;
  e.reshape = name;
  e.new_ne = std::move(ne);
  return e;
}
Edit add(const std::string& name) {
  Edit e;
  e.add = name;
  return e;
}
Edit meta(std::function<void(gguf::Writer&)> f) {
  Edit e;
  e.meta = std::move(f);
  return e;
}

std::string rewrite(const std::string& src, const std::string& name, const Edit& e) {
  const auto f = gguf::File::open(src);
  gguf::Writer w;
  for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
  if (e.meta) e.meta(w);
  for (const gguf::TensorInfo& t : f->tensors()) {
    if (t.name == e.drop) continue;
    if (t.name == e.reshape) {
      w.add_tensor(t.name, t.dtype, e.new_ne,
                   [](uint8_t* out, size_t n) { std::memset(out, 0, n); });
      continue;
    }
    const uint8_t* data = t.data;
    w.add_tensor(t.name, t.dtype, t.ne,
                 [data](uint8_t* out, size_t n) { std::memcpy(out, data, n); });
  }
  if (!e.add.empty())
    w.add_tensor(e.add, gguf::DType::F32, {4},
                 [](uint8_t* out, size_t n) { std::memset(out, 0, n); });
  const std::string path = (kTmp / (name + ".gguf")).string();
  w.write(path);
  return path;
}

}  // namespace

TEST_CASE("cpu model: the loader rejects broken files with one clear line") {
  RandomModelOptions o;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 97;
  o.d_state = 16;  // d_inner 64, dt_rank 2
  const std::string good = model_file("loader_good", o);
  CHECK_NOTHROW(Model::load(good));

  CHECK(error_of([&] { Model::load(rewrite(good, "no_ssm_d", drop("blk.1.ssm_d"))); }) ==
        "missing tensor blk.1.ssm_d");
  CHECK(error_of([&] { Model::load(rewrite(good, "no_norm", drop("output_norm.weight"))); }) ==
        "missing tensor output_norm.weight");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "bad_x", reshape("blk.0.ssm_x.weight", {64, 30})));
        }) == "blk.0.ssm_x.weight has shape [30, 64], expected [34, 64]");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "bad_a", reshape("blk.1.ssm_a", {17, 64})));
        }) == "blk.1.ssm_a has shape [64, 17], expected [64, 16]");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "bad_emb", reshape("token_embd.weight", {31, 97})));
        }) == "token_embd.weight has shape [97, 31], expected [97, 32]");
  CHECK(error_of([&] { Model::load(rewrite(good, "extra", add("blk.0.rope_freqs"))); }) ==
        "unexpected tensor blk.0.rope_freqs in this model");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "vocab",
                              meta([](gguf::Writer& w) { w.set_u32("mamba.vocab_size", 98); })));
        }) == "mamba.vocab_size = 98 does not match token_embd.weight's 97 rows");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "eos", meta([](gguf::Writer& w) {
                                w.set_u32("tokenizer.ggml.eos_token_id", 97);
                              })));
        }) == "tokenizer.ggml.eos_token_id = 97 is out of range (n_vocab = 97)");
  CHECK(error_of([&] {
          Model::load(rewrite(good, "arch", meta([](gguf::Writer& w) {
                                w.set_str("general.architecture", "llama");
                              })));
        }).find("unknown architecture 'llama'") != std::string::npos);

  // The 3-D conv1d weight that PyTorch has, (conv_dim, 1, d_conv), loads like the squeezed one.
  {
    const auto a = Model::load(good);
    const auto f = gguf::File::open(good);
    gguf::Writer w;
    for (const auto& [key, value] : f->metadata()) w.set_value(key, value);
    for (const gguf::TensorInfo& t : f->tensors()) {
      std::vector<uint64_t> ne = t.ne;
      if (t.name.find("ssm_conv1d.weight") != std::string::npos) ne = {ne[0], 1, ne[1]};
      const uint8_t* data = t.data;
      w.add_tensor(t.name, t.dtype, ne,
                   [data](uint8_t* out, size_t n) { std::memcpy(out, data, n); });
    }
    const std::string path = (kTmp / "conv3d.gguf").string();
    w.write(path);
    const auto c3 = Model::load(path);
    CHECK(c3->layers[1].conv_w == a->layers[1].conv_w);
  }

  // An unsupported dtype (a quantised type) patched into the header.
  {
    std::ifstream in(good, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                               std::istreambuf_iterator<char>());
    const std::string name = "blk.0.ssm_d";
    // Tensor info: u64 name length, name, u32 n_dims, u64 ne[n_dims], u32 dtype.
    std::vector<uint8_t> key(8 + name.size());
    const uint64_t len = name.size();
    std::memcpy(key.data(), &len, 8);
    std::memcpy(key.data() + 8, name.data(), name.size());
    const auto it = std::search(bytes.begin(), bytes.end(), key.begin(), key.end());
    REQUIRE(it != bytes.end());
    const size_t at = size_t(it - bytes.begin()) + key.size();
    uint32_t n_dims;
    std::memcpy(&n_dims, &bytes[at], 4);
    const uint32_t q4_0 = 2;
    std::memcpy(&bytes[at + 4 + 8 * n_dims], &q4_0, 4);
    const std::string msg =
        error_of([&] { Model::from_gguf(gguf::File::from_memory(bytes.data(), bytes.size())); });
    CHECK(msg.find("blk.0.ssm_d") != std::string::npos);
    CHECK(msg.find("unsupported") != std::string::npos);
    // Truncated: an error, never a crash.
    CHECK(error_of([&] {
            Model::from_gguf(gguf::File::from_memory(bytes.data(), bytes.size() / 2));
          }) != "<no error>");
  }

  // Mamba-2 shapes: A given the wrong head count.
  RandomModelOptions o2 = o;
  o2.arch = Arch::Mamba2;
  o2.head_dim = 16;  // 4 heads
  const std::string good2 = model_file("loader_good2", o2);
  CHECK_NOTHROW(Model::load(good2));
  CHECK(error_of([&] {
          Model::load(rewrite(good2, "bad_a2", reshape("blk.0.ssm_a", {1, 5})));
        }) == "blk.0.ssm_a has shape [5, 1], expected [4, 1]");
  CHECK(error_of([&] { Model::load(rewrite(good2, "no_norm2", drop("blk.1.ssm_norm.weight"))); }) ==
        "missing tensor blk.1.ssm_norm.weight");
}
