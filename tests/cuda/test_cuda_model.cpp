// Whole models on the CUDA backend against the CPU backend (and, for the fixtures, against
// transformers' float64 logits): prefill logits of every position, decode logits of every
// step, greedy ids, CUDA-graph replay against plain launches, and the state slots.
//
// Tolerances (rel-L2 per logits row, worst row): 1e-4 with f32 weights; 2e-2 with f16/bf16
// weights, whose matmuls also round the activations to 16 bits on the GPU.
#include <sys/wait.h>

#include <algorithm>
#include <random>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "cuda_backend.h"
#include "cuda_test_util.h"
#include "engine/generate.h"
#include "model/model.h"
#include "model/random_model.h"

using namespace cuda_test;
namespace fs = std::filesystem;
using mamba::Arch;
using mamba::Backend;
using mamba::BackendOptions;
using mamba::gguf::DType;
using nlohmann::json;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "cuda_model";

double tol_for(DType t) { return t == DType::F32 ? 1e-4 : 2e-2; }

std::unique_ptr<Backend> backend(const mamba::Model& m, const std::string& device, int n_slots,
                                 const mamba::CudaOptions& co = {}) {
  BackendOptions o;
  o.device = device;
  o.n_slots = n_slots;
  o.n_threads = 0;
  if (device == "cuda" && (!co.graphs || co.max_prefill_tokens != 512 || co.persistent_decode))
    return mamba::make_cuda_backend(m, o, co);
  return mamba::make_backend(m, o);
}

// Worst rel-L2 over the rows of two (rows, n_vocab) logit arrays.
template <typename R>
double worst_row(const std::vector<float>& got, const std::vector<R>& ref, size_t V) {
  REQUIRE(got.size() == ref.size());
  double worst = 0;
  for (size_t r = 0; r < got.size() / V; r++) {
    std::vector<float> g(got.begin() + r * V, got.begin() + (r + 1) * V);
    std::vector<R> f(ref.begin() + r * V, ref.begin() + (r + 1) * V);
    worst = std::max(worst, rel_l2(g, f));
  }
  return worst;
}

std::vector<int32_t> random_tokens(int n, int64_t n_vocab) {
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& t : v) t = d(rng());
  return v;
}

// Prefills slots 0 .. n-1 with random prompts of 1 .. max_len tokens, so that every slot holds
// a different state, and returns the states as save_slot gives them.
std::vector<std::vector<uint8_t>> distinct_states(mamba::Backend& gpu, int n, int max_len,
                                                  int64_t n_vocab) {
  std::vector<std::vector<uint8_t>> states(static_cast<size_t>(n));
  std::vector<float> logits;
  for (int s = 0; s < n; s++) {
    gpu.prefill(s, random_tokens(1 + s % max_len, n_vocab), false, logits);
    gpu.save_slot(s, states[size_t(s)]);
  }
  return states;
}

// Gap between the largest and the second largest logit.
double top2_margin(const float* l, size_t V) {
  float a = -INFINITY, b = -INFINITY;
  for (size_t i = 0; i < V; i++) {
    if (l[i] > a) {
      b = a;
      a = l[i];
    } else if (l[i] > b) {
      b = l[i];
    }
  }
  return double(a) - double(b);
}

double rms(const float* l, size_t V) {
  double s = 0;
  for (size_t i = 0; i < V; i++) s += double(l[i]) * l[i];
  return std::sqrt(s / double(V));
}

struct Variant {
  std::string name;
  mamba::RandomModelOptions o;
};

std::vector<Variant> variants() {
  std::vector<Variant> v;
  auto add = [&](std::string name, auto edit) {
    mamba::RandomModelOptions o;
    o.seed = rng()();
    edit(o);
    v.push_back({std::move(name), o});
  };
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    const std::string s = t == DType::F32 ? " f32" : t == DType::F16 ? " f16" : " bf16";
    add("mamba1" + s, [&](auto& o) { o.dtype = t; });
    add("falcon" + s, [&](auto& o) {
      o.dtype = t;
      o.falcon = true;
    });
    add("mamba2 G2 clamp bias untied" + s, [&](auto& o) {
      o.dtype = t;
      o.arch = Arch::Mamba2;
      o.n_groups = 2;
      o.head_dim = 16;
      o.chunk_size = 16;
      o.dt_min = 0.001f;
      o.dt_max = 0.1f;
      o.proj_bias = true;
      o.tied = false;
    });
  }
  add("mamba1 d_conv 3 bias untied no-conv-bias f32", [](auto& o) {
    o.d_conv = 3;
    o.proj_bias = true;
    o.tied = false;
    o.conv_bias = false;
    o.d_state = 4;
  });
  add("mamba2 G1 f32", [](auto& o) {
    o.arch = Arch::Mamba2;
    o.d_state = 32;
  });
  add("mamba2 G4 P8 N8 f32", [](auto& o) {
    o.arch = Arch::Mamba2;
    o.n_groups = 4;
    o.head_dim = 8;
    o.d_state = 8;
  });
  // Real layer widths: mamba-130m's (d_model 768, d_inner 1536, N 16, dt_rank 48) and a
  // Mamba-2 layer with mamba2-2.7b's heads (P 64, N 128).
  add("mamba1 d_model 768 f32", [](auto& o) {
    o.d_model = 768;
    o.n_vocab = 1024;
  });
  // Mamba-1 with 16-bit weights whose shapes the persistent decode step takes (every K a
  // multiple of 8): dt_rank 8; mamba-130m's widths with biases; mamba-1.4b's widths.
  add("mamba1 d_model 128 f16", [](auto& o) {
    o.d_model = 128;
    o.dtype = DType::F16;
  });
  add("mamba1 d_model 768 bias untied bf16", [](auto& o) {
    o.d_model = 768;
    o.n_vocab = 1024;
    o.proj_bias = true;
    o.tied = false;
    o.dtype = DType::BF16;
  });
  add("mamba1 d_model 2048 f16", [](auto& o) {
    o.d_model = 2048;
    o.n_vocab = 1024;
    o.dtype = DType::F16;
  });
  add("mamba2 d_model 512 P64 N128 f32", [](auto& o) {
    o.arch = Arch::Mamba2;
    o.d_model = 512;
    o.head_dim = 64;
    o.d_state = 128;
    o.n_vocab = 1024;
  });
  add("mamba2 d_model 512 P64 N128 bf16", [](auto& o) {
    o.arch = Arch::Mamba2;
    o.d_model = 512;
    o.head_dim = 64;
    o.d_state = 128;
    o.n_vocab = 1024;
    o.dtype = DType::BF16;
  });
  return v;
}

std::unique_ptr<mamba::Model> write_and_load(const Variant& v) {
  fs::create_directories(kTmp);
  std::string file = v.name;
  std::replace(file.begin(), file.end(), ' ', '_');
  const fs::path path = kTmp / (file + ".gguf");
  mamba::write_random_model(v.o, path.string());
  return mamba::Model::load(path.string());
}

// Greedy decoding from a prompt on both backends, each feeding back its own picks. Returns
// the worst rel-L2 of the logits over the prefill rows and the decode steps; checks the ids.
struct Compared {
  double prefill = 0, decode = 0;
};
Compared compare_greedy(Backend& cpu, Backend& gpu, const std::vector<int32_t>& prompt,
                        int n_steps, double tol, const std::string& what) {
  const size_t V = size_t(cpu.config().n_vocab);
  Compared r;
  std::vector<float> lc, lg;
  cpu.reset_slot(0);
  gpu.reset_slot(0);
  cpu.prefill(0, prompt, true, lc);
  gpu.prefill(0, prompt, true, lg);
  r.prefill = worst_row(lg, lc, V);
  std::vector<float> last_c(lc.end() - std::ptrdiff_t(V), lc.end());
  std::vector<float> last_g(lg.end() - std::ptrdiff_t(V), lg.end());
  const int slots[1] = {0};
  for (int i = 0; i < n_steps; i++) {
    const int32_t idc = mamba::argmax(last_c), idg = mamba::argmax(last_g);
    if (idc != idg) {
      // Only a near tie may flip under the tolerance; anything else is a failure.
      const double margin = top2_margin(last_c.data(), V), scale = rms(last_c.data(), V);
      INFO(what, ": greedy ids differ at step ", i, " (cpu ", idc, ", cuda ", idg,
           "), cpu top-2 margin ", margin, ", logits rms ", scale);
      CHECK(margin < 4 * tol * scale);
      MESSAGE(what, ": greedy ids part at a near tie at step ", i);
      break;
    }
    cpu.decode(slots, std::span<const int32_t>(&idc, 1), last_c);
    gpu.decode(slots, std::span<const int32_t>(&idg, 1), last_g);
    r.decode = std::max(r.decode, rel_l2(last_g, last_c));
  }
  return r;
}

}  // namespace

TEST_CASE("random models: CUDA logits match the CPU backend, prefill and decode") {
  if (no_device()) return;
  for (const Variant& v : variants()) {
    if (quick() && v.o.d_model > 64) continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    auto cpu = backend(*model, "cpu", 1);
    auto gpu = backend(*model, "cuda", 1);
    const double tol = tol_for(v.o.dtype);
    // 150 tokens: SSD chunks of 64 with a partial one, and more than one conv window.
    const auto prompt = random_tokens(150, model->config().n_vocab);
    const Compared c = compare_greedy(*cpu, *gpu, prompt, 8, tol, v.name);
    report("model prefill logits", v.name, c.prefill, tol);
    report("model decode logits", v.name, c.decode, tol);

    // Prompts of one token, and prompts longer than one forward pass (pieces of 48 rows).
    auto gpu_small = backend(*model, "cuda", 1, mamba::CudaOptions{true, 48});
    const Compared one = compare_greedy(*cpu, *gpu, random_tokens(1, model->config().n_vocab), 3,
                                        tol, v.name + " T=1");
    report("model prefill logits T=1", v.name, one.prefill, tol);
    const Compared pieces = compare_greedy(*cpu, *gpu_small, prompt, 2, tol, v.name + " pieces");
    report("model prefill logits in 48-row pieces", v.name, pieces.prefill, tol);
  }
}

TEST_CASE("decode graphs: replay equals the uncaptured step, bit for bit") {
  if (no_device()) return;
  for (const Variant& v : variants()) {
    if (v.name != "mamba1 f32" && v.name != "falcon bf16" && v.name != "mamba2 G1 f32" &&
        v.name != "mamba2 G2 clamp bias untied bf16")
      continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    auto graphs = backend(*model, "cuda", 4);
    auto plain = backend(*model, "cuda", 4, mamba::CudaOptions{false, 512});
    const int64_t V = model->config().n_vocab;
    std::vector<float> lg, lp;
    for (int s = 0; s < 3; s++) {
      const auto p = random_tokens(5 + 40 * s, V);
      graphs->prefill(s, p, false, lg);
      plain->prefill(s, p, false, lp);
      REQUIRE(lg == lp);
    }
    bool all_equal = true;
    // Batch sizes 3, 1, 3, 4, 3, 1: a size's first step runs as plain launches, its second
    // captures its graph (steps 2 and 5) and its third replays it (step 4).
    const std::vector<std::vector<int>> batches = {{2, 0, 1}, {3}, {1, 2, 0}, {0, 1, 2, 3}};
    for (int step = 0; step < 6; step++) {
      const auto& slots = batches[size_t(step) % batches.size()];
      const auto toks = random_tokens(int(slots.size()), V);
      graphs->decode(slots, toks, lg);
      plain->decode(slots, toks, lp);
      all_equal = all_equal && lg == lp;
    }
    for (int s = 0; s < 4; s++) {
      std::vector<uint8_t> a, b;
      graphs->save_slot(s, a);
      plain->save_slot(s, b);
      all_equal = all_equal && a == b;
    }
    report("graph replay vs plain step", v.name, all_equal ? 0.0 : 1.0, 0.0);
  }
}

TEST_CASE("state slots: reset, copy, save/load, batched decode, CPU interchange") {
  if (no_device()) return;
  for (const Variant& v : variants()) {
    if (v.name != "mamba1 f32" && v.name != "mamba2 G2 clamp bias untied f32") continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    auto gpu = backend(*model, "cuda", 3);
    auto cpu = backend(*model, "cpu", 3);
    const int64_t V = model->config().n_vocab;
    const auto prompt = random_tokens(70, V);
    const auto tok = random_tokens(1, V);
    std::vector<float> first, again, l0, l1, both;

    gpu->prefill(0, prompt, false, first);
    std::vector<uint8_t> saved;
    gpu->save_slot(0, saved);
    REQUIRE(saved.size() == gpu->state_bytes());
    gpu->copy_slot(0, 1);
    gpu->load_slot(2, saved);
    // Three copies of one state step identically, alone or batched.
    const int s0[1] = {0}, s2[1] = {2}, s12[2] = {1, 2};
    gpu->decode(s0, tok, l0);
    gpu->decode(s12, std::vector<int32_t>{tok[0], tok[0]}, both);
    gpu->load_slot(2, saved);
    gpu->decode(s2, tok, l1);
    report("slot copy: batched row vs alone", v.name,
           rel_l2(std::vector<float>(both.begin(), both.begin() + V), l0), 1e-6);
    report("slot load: batched row vs alone", v.name,
           rel_l2(std::vector<float>(both.begin() + V, both.end()), l0), 1e-6);
    report("slot load: replay of the same step", v.name, rel_l2(l1, l0), 0.0);
    // Reset gives an empty sequence again.
    gpu->reset_slot(0);
    gpu->prefill(0, prompt, false, again);
    report("slot reset: prefill again", v.name, rel_l2(again, first), 0.0);

    // The state itself matches the CPU's, and states move between the backends.
    std::vector<float> lc;
    cpu->prefill(0, prompt, false, lc);
    std::vector<uint8_t> cpu_state;
    cpu->save_slot(0, cpu_state);
    std::vector<float> a(saved.size() / 4), b(saved.size() / 4);
    std::memcpy(a.data(), saved.data(), saved.size());
    std::memcpy(b.data(), cpu_state.data(), cpu_state.size());
    report("slot state vs CPU after prefill", v.name, rel_l2(a, b), 1e-4);
    gpu->load_slot(1, cpu_state);
    const int s1[1] = {1};
    gpu->decode(s1, tok, l1);
    cpu->decode(s0, tok, lc);
    report("CPU state loaded on the GPU, one step", v.name, rel_l2(l1, lc), 1e-4);
    CHECK_THROWS_AS(gpu->load_slot(0, std::span<const uint8_t>(saved.data(), saved.size() - 4)),
                    mamba::Error);
    CHECK_THROWS_AS(gpu->decode(std::vector<int>{0, 0}, std::vector<int32_t>{1, 1}, l0),
                    mamba::Error);
    CHECK_THROWS_AS(gpu->prefill(0, std::vector<int32_t>{int32_t(V)}, false, l0), mamba::Error);
  }
}

// Batch invariance: a sequence's decode logits are bit-identical whether it steps alone or
// beside others, for every batch size the scheduler may form (each tile shape of the decode
// projections, and several graph sizes), with every variant's weights.
TEST_CASE("batch invariance: every row of a batched decode equals the same step alone") {
  if (no_device()) return;
  for (const Variant& v : variants()) {
    if (quick() && v.name != "mamba1 f16" && v.name != "mamba1 d_model 128 f16") continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    const int kSeq = 70;
    auto gpu = backend(*model, "cuda", kSeq);
    const int64_t V = model->config().n_vocab;
    const auto states = distinct_states(*gpu, kSeq, 9, V);
    std::vector<float> logits;
    const auto toks = random_tokens(kSeq, V);
    // Alone: each slot's step on its own.
    std::vector<float> alone(size_t(kSeq) * size_t(V));
    for (int s = 0; s < kSeq; s++) {
      const int slot[1] = {s};
      gpu->decode(slot, std::span<const int32_t>(&toks[size_t(s)], 1), logits);
      std::memcpy(alone.data() + size_t(s) * V, logits.data(), size_t(V) * 4);
      gpu->load_slot(s, states[size_t(s)]);
    }
    // 64 three times: its first step runs as plain launches, its second captures the graph
    // and its third replays it. 17 rows take the 32-row GEMM tile, 33 and more the 64-row one.
    for (int n : {2, 8, 9, 17, 33, 64, 64, 64, 70}) {
      // Slots in a shuffled order, so a sequence sits at a different row than alone.
      std::vector<int> slots(static_cast<size_t>(n));
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (int i = 0; i < n; i++) slots[size_t(i)] = (i * 37 + n) % kSeq;
      std::sort(slots.begin(), slots.end());
      slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
      std::shuffle(slots.begin(), slots.end(), rng());
      for (size_t i = 0; i < slots.size(); i++) ids[i] = toks[size_t(slots[i])];
      ids.resize(slots.size());
      gpu->decode(slots, ids, logits);
      int64_t differ = 0;
      for (size_t i = 0; i < slots.size(); i++) {
        differ += std::memcmp(logits.data() + i * V, alone.data() + size_t(slots[i]) * V,
                              size_t(V) * 4) != 0;
        gpu->load_slot(slots[i], states[size_t(slots[i])]);
      }
      INFO("batch of ", slots.size());
      CHECK(differ == 0);
    }
  }
}

// Packed prefill: prompts of up to 64 tokens share forward passes through the decode
// projections; the result must be what one prefill per prompt gives, bit for bit (logits and
// states), whatever the packing: groups cut by the prompt count (70 prompts) and by the rows a
// pass holds (max_prefill_tokens 100), prompts over 64 tokens (alone, in pieces), slots out of
// order, some continuing a state.
TEST_CASE("prefill_batch: packed short prompts equal one prefill per prompt, bit for bit") {
  if (no_device()) return;
  std::vector<size_t> lens = {1, 7, 64, 65, 300, 16, 9, 64, 3, 40, 2};
  for (size_t i = 0; i < 59; i++) lens.push_back(1 + i % 8);  // 70 prompts
  const int n = int(lens.size());
  for (const Variant& v : variants()) {
    if (quick() && v.name != "mamba1 f16" && v.name != "mamba2 G2 clamp bias untied bf16")
      continue;
    const auto model = write_and_load(v);
    const int64_t V = model->config().n_vocab;
    for (int rows : {512, 100}) {
      INFO("model ", v.name, ", max_prefill_tokens ", rows);
      mamba::CudaOptions co;
      co.max_prefill_tokens = rows;
      auto packed = backend(*model, "cuda", n, co), alone = backend(*model, "cuda", n, co);
      std::vector<std::vector<int32_t>> ids;
      std::vector<std::span<const int32_t>> prompts;
      for (size_t len : lens) ids.push_back(random_tokens(int(len), V));
      for (const auto& p : ids) prompts.push_back(p);
      std::vector<int> slots(static_cast<size_t>(n));
      for (int i = 0; i < n; i++) slots[size_t(i)] = (i * 37 + 5) % n;  // 37 is prime to 70
      std::vector<float> got, one;
      const auto prefix = random_tokens(9, V);
      for (int slot : {0, 5, 11}) {  // states to continue
        packed->prefill(slot, prefix, false, one);
        alone->prefill(slot, prefix, false, one);
      }
      packed->prefill_batch(slots, prompts, got);
      REQUIRE(got.size() == size_t(n) * size_t(V));
      int differ = 0;
      for (int i = 0; i < n; i++) {
        alone->prefill(slots[size_t(i)], prompts[size_t(i)], false, one);
        differ += std::memcmp(got.data() + size_t(i) * V, one.data(), size_t(V) * 4) != 0;
      }
      CHECK(differ == 0);
      int states_differ = 0;
      for (int slot = 0; slot < n; slot++) {
        std::vector<uint8_t> a, b;
        packed->save_slot(slot, a);
        alone->save_slot(slot, b);
        states_differ += a != b;
      }
      CHECK(states_differ == 0);
    }
  }
}

// The persistent decode step (every layer in one kernel, up to 8 rows) against the per-kernel
// layers: the same logits and states, bit for bit, plain steps and graph replays, at every
// row count it takes, rows in shuffled slots.
TEST_CASE("persistent decode: the same bits as the per-kernel layers") {
  if (no_device()) return;
  int ran = 0;
  for (const Variant& v : variants()) {
    if (v.o.arch != Arch::Mamba1 || v.o.falcon || v.o.dtype == DType::F32) continue;
    if (quick() && v.name != "mamba1 d_model 128 f16") continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    const int kSlots = 12;
    auto fused = backend(*model, "cuda", kSlots, mamba::CudaOptions{true, 512, true});
    auto layered = backend(*model, "cuda", kSlots);
    REQUIRE_FALSE(mamba::cuda_persistent_decode(*layered));
    if (!mamba::cuda_persistent_decode(*fused)) {
      MESSAGE(v.name, ": the persistent step does not take this shape");
      continue;
    }
    ran++;
    const int64_t V = model->config().n_vocab;
    std::vector<float> lf, ll;
    for (int s = 0; s < kSlots; s++) {
      const auto p = random_tokens(1 + 7 * s, V);
      fused->prefill(s, p, false, lf);
      layered->prefill(s, p, false, ll);
      REQUIRE(lf == ll);
    }
    int64_t differ = 0;
    // Each size three times: plain launches, the graph's capture, a replay.
    for (int n : {1, 1, 1, 3, 3, 3, 8, 8, 8, 5, 2}) {
      std::vector<int> slots(kSlots);
      for (int i = 0; i < kSlots; i++) slots[size_t(i)] = i;
      std::shuffle(slots.begin(), slots.end(), rng());
      slots.resize(size_t(n));
      const auto toks = random_tokens(n, V);
      fused->decode(slots, toks, lf);
      layered->decode(slots, toks, ll);
      differ += lf != ll;
    }
    for (int s = 0; s < kSlots; s++) {
      std::vector<uint8_t> a, b;
      fused->save_slot(s, a);
      layered->save_slot(s, b);
      differ += a != b;
    }
    report("persistent decode vs per-kernel layers", v.name, differ == 0 ? 0.0 : 1.0, 0.0);
  }
  CHECK(ran > 0);
}

// Greedy steps picked on the device: decode_greedy's ids are greedy_argmax of the logits that
// decode_view gives for the same step from the same states (banned ids included), and the
// states it leaves are the same; the scheduler's all-greedy batches then equal generate().
// Both decode paths (the per-kernel layers and, where it takes the model, the persistent
// step) with graphs and with plain launches: each size comes twice, so that a view's plain
// step or graph replay meets a greedy step's graph capture or replay.
TEST_CASE("decode_greedy: device picks equal the host's picks from the same step's logits") {
  if (no_device()) return;
  int persistent_ran = 0;
  for (const Variant& v : variants()) {
    if (quick() && v.name != "mamba1 f16" && v.name != "mamba1 d_model 128 f16") continue;
    INFO("model ", v.name);
    const auto model = write_and_load(v);
    const int kSeq = 12;
    for (const bool persistent : {false, true}) {
      for (const bool graphs : {true, false}) {
        INFO("persistent ", persistent, " graphs ", graphs);
        auto gpu = backend(*model, "cuda", kSeq, mamba::CudaOptions{graphs, 512, persistent});
        CHECK(gpu->picks_on_device());
        if (persistent && !mamba::cuda_persistent_decode(*gpu)) continue;
        persistent_ran += mamba::cuda_persistent_decode(*gpu);
        const int64_t V = model->config().n_vocab;
        const auto states = distinct_states(*gpu, kSeq, 5, V);
        for (int n : {1, 8, 9, 12, 1, 8, 9, 12}) {
          std::vector<int> slots(static_cast<size_t>(n));
          std::vector<int32_t> banned(static_cast<size_t>(n), -1);
          for (int i = 0; i < n; i++) slots[size_t(i)] = (i * 5 + n) % kSeq;
          std::sort(slots.begin(), slots.end());
          slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
          banned.resize(slots.size());
          const auto toks = random_tokens(int(slots.size()), V);
          const auto view = gpu->decode_view(slots, toks);
          const std::vector<float> rows(view.begin(), view.end());
          std::vector<std::vector<uint8_t>> after(slots.size());
          for (size_t i = 0; i < slots.size(); i++) {
            gpu->save_slot(slots[i], after[i]);
            gpu->load_slot(slots[i], states[size_t(slots[i])]);
            const auto row = std::span<const float>(rows).subspan(i * size_t(V), size_t(V));
            // Even rows ban their best, so that the next best wins.
            if (i % 2 == 0) banned[i] = mamba::greedy_argmax(row, -1);
          }
          const auto ids = gpu->decode_greedy(slots, toks, banned);
          REQUIRE(ids.size() == slots.size());
          for (size_t i = 0; i < slots.size(); i++) {
            INFO("batch of ", slots.size(), " row ", i);
            const auto row = std::span<const float>(rows).subspan(i * size_t(V), size_t(V));
            CHECK(ids[i] == mamba::greedy_argmax(row, banned[i]));
            std::vector<uint8_t> st;
            gpu->save_slot(slots[i], st);
            CHECK(st == after[i]);
            gpu->load_slot(slots[i], states[size_t(slots[i])]);
          }
        }
      }
    }
  }
  CHECK(persistent_ran > 0);
}

// ---- fixtures: checkpoints converted with mamba-convert ------------------------------------

namespace {

int run_cmd(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (fread(buf, 1, sizeof buf, p) > 0) {
  }
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<double> read_f64(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::vector<double> v(fs::file_size(path) / sizeof(double));
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(double)));
  return v;
}

}  // namespace

TEST_CASE("fixtures: CUDA matches the CPU backend and transformers, greedy ids identical") {
  if (no_device()) return;
  const fs::path fixtures = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/models";
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(fixtures))
    if (fs::exists(e.path() / "ref.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  REQUIRE(!dirs.empty());
  fs::create_directories(kTmp);
  for (const auto& dir : dirs) {
    std::ifstream rf(dir / "ref.json");
    const json ref = json::parse(rf);
    const std::string name = dir.filename().string();
    const auto prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
    const auto greedy_ref = ref["greedy_ids"].get<std::vector<int32_t>>();
    const auto want = read_f64(dir / "logits.f64");
    // As stored (f16/bf16 stay 16-bit) and widened to f32.
    for (const std::string outtype : {"", "f32"}) {
      const std::string label = name + (outtype.empty() ? "" : " as f32");
      INFO("fixture ", label);
      const fs::path gguf = kTmp / (name + (outtype.empty() ? "" : "-f32") + ".gguf");
      const std::string cmd = (fs::path(MAMBA_BIN_DIR) / "mamba-convert").string() + " " +
                              (dir / "hf").string() + " -o " + gguf.string() +
                              (outtype.empty() ? "" : " --outtype " + outtype) + " 2>&1";
      INFO(cmd);
      REQUIRE(run_cmd(cmd) == 0);
      const auto model = mamba::Model::load(gguf.string());
      const DType wtype = model->layers[0].in_proj.dtype;
      const double tol = tol_for(wtype);
      auto cpu = backend(*model, "cpu", 1);
      auto gpu = backend(*model, "cuda", 1);
      mamba::GenerateOptions go;
      go.n_predict = int(greedy_ref.size());
      go.eos_id = model->eos_id;
      go.ignore_eos = ref["ignore_eos"].get<bool>();
      go.prompt_logits = true;
      // Greedy (temp 0), one sampler per sequence.
      mamba::Sampler sc(mamba::SamplerParams{}, model->config().n_vocab);
      mamba::Sampler sg(mamba::SamplerParams{}, model->config().n_vocab);
      const auto rc = mamba::generate(*cpu, 0, prompt, sc, go);
      const auto rg = mamba::generate(*gpu, 0, prompt, sg, go);
      const size_t V = size_t(model->config().n_vocab);
      report("fixture logits vs CPU backend", label, worst_row(rg.prompt_logits, rc.prompt_logits, V),
             tol);
      report("fixture logits vs transformers f64", label, worst_row(rg.prompt_logits, want, V),
             tol);
      INFO("cuda greedy ids vs transformers'");
      CHECK(rg.ids == greedy_ref);
      CHECK(rg.ids == rc.ids);
      report("fixture greedy ids identical", label, rg.ids == greedy_ref ? 0.0 : 1.0, 0.0);
    }
  }
}
