// The Sampler's shortcuts that the scheduler's per-step picks rest on, against the plain chain
// of stages over the whole vocabulary: the banned id (ignore_eos without copying the row),
// greedy and top_k straight from the row. Every comparison is of exact ids over many steps.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "engine/sampler.h"

using namespace mamba;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// A row of n_vocab logits (plus padded columns) in one of a few shapes: smooth, coarse (many
// ties), one sharp peak, mostly -inf; with a NaN or an inf thrown in now and then.
std::vector<float> random_row(std::mt19937_64& g, int32_t V, int shape) {
  std::vector<float> row(size_t(V) + 5, 1e30f);  // padding that must be ignored
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int32_t i = 0; i < V; i++) {
    float& l = row[size_t(i)];
    switch (shape % 4) {
      case 0: l = normal(g); break;
      case 1: l = float(int(g() % 9)) * 0.5f - 2.0f; break;  // ties everywhere
      case 2: l = normal(g) * 0.1f; break;
      default: l = g() % 8 == 0 ? normal(g) : -kInf; break;
    }
  }
  if (shape % 4 == 2) row[g() % size_t(V)] = 40.0f;  // one token takes all the mass
  if (shape % 5 == 0) row[g() % size_t(V)] = kNaN;
  if (shape % 7 == 0) row[g() % size_t(V)] = -kInf;
  if (shape % 11 == 0) row[g() % size_t(V)] = kInf;
  return row;
}

// Sampling parameters that vary every stage (and the bias / penalty corner cases).
SamplerParams random_params(std::mt19937_64& g, int32_t V, bool greedy) {
  SamplerParams p;
  p.temp = greedy ? 0.0f : 0.3f + float(g() % 12) * 0.1f;
  const int32_t ks[] = {0, 1, 2, 7, 40, V - 1, V, V + 3};
  p.top_k = ks[g() % 8];
  p.top_p = g() % 2 ? 1.0f : 0.5f + float(g() % 5) * 0.1f;
  p.min_p = g() % 2 ? 0.0f : 0.05f;
  p.typical_p = g() % 4 ? 1.0f : 0.8f;
  p.repeat_penalty = g() % 2 ? 1.0f : 1.3f;
  p.presence_penalty = g() % 3 ? 0.0f : 0.4f;
  p.frequency_penalty = g() % 3 ? 0.0f : 0.2f;
  p.repeat_last_n = int32_t(g() % 40) - 1;
  const float biases[] = {2.0f, -1.5f, kInf, -kInf};
  for (int b = 0; b < int(g() % 4); b++)
    p.logit_bias.push_back({int32_t(g() % size_t(V)), biases[g() % 4]});
  p.seed = g();
  return p;
}

// The whole chain as sampler.h describes it, stage by stage over every id, with the row's
// `banned` logit set to -inf first (what generate() does for ignore_eos).
struct Reference {
  SamplerParams p;
  int32_t V;
  std::mt19937_64 rng;
  std::vector<int32_t> history;

  Reference(const SamplerParams& params, int32_t n_vocab)
      : p(params), V(n_vocab), rng(params.seed) {}

  int32_t sample(const std::vector<float>& row, int32_t banned) {
    std::vector<TokenCandidate> c(static_cast<size_t>(V));
    for (int32_t i = 0; i < V; i++) {
      const float l = i == banned ? -kInf : row[size_t(i)];
      c[size_t(i)] = {i, std::isnan(l) ? -kInf : l, 0.0f};
    }
    std::span<const int32_t> window(history);
    if (p.repeat_last_n == 0) window = {};
    if (p.repeat_last_n > 0 && window.size() > size_t(p.repeat_last_n))
      window = window.last(size_t(p.repeat_last_n));
    sampling::logit_bias(c, p.logit_bias);
    sampling::penalties(c, window, p.repeat_penalty, p.presence_penalty, p.frequency_penalty);
    if (p.temp == 0.0f) {  // the largest adjusted logit, lowest id on ties
      int32_t best = 0;
      for (int32_t i = 1; i < V; i++)
        if (c[size_t(i)].logit > c[size_t(best)].logit) best = i;
      return best;
    }
    sampling::top_k(c, p.top_k);
    sampling::typical(c, p.typical_p);
    sampling::top_p(c, p.top_p);
    sampling::min_p(c, p.min_p);
    sampling::temperature(c, p.temp);
    return sampling::draw(c, rng);
  }
  void accept(int32_t id) { history.push_back(id); }
};

// Runs `steps` picks of a Sampler and the Reference side by side over fresh random rows, each
// pick with a banned id now and then, and checks that they agree on every id.
void agree(std::mt19937_64& g, int32_t V, bool greedy, int steps, int trial) {
  const SamplerParams p = random_params(g, V, greedy);
  Sampler s(p, V);
  Reference ref(p, V);
  std::vector<int32_t> prompt;
  for (int i = 0; i < int(g() % 12); i++) prompt.push_back(int32_t(g() % size_t(V)));
  s.accept(prompt);
  for (int32_t id : prompt) ref.accept(id);
  for (int step = 0; step < steps; step++) {
    const std::vector<float> row = random_row(g, V, int(g() % 1000));
    int32_t banned = -1;
    if (g() % 2) {
      // Often an id the bias or the history names, where the ban meets the other stages.
      banned = int32_t(g() % size_t(V));
      if (!p.logit_bias.empty() && g() % 2) banned = p.logit_bias[0].first;
      if (!ref.history.empty() && g() % 3 == 0) banned = ref.history.back();
    }
    const int32_t want = ref.sample(row, banned);
    const int32_t got = s.sample(row, banned);
    INFO("trial ", trial, " step ", step, " V ", V, " temp ", p.temp, " top_k ", p.top_k,
         " banned ", banned);
    REQUIRE(got == want);
    s.accept(got);
    ref.accept(got);
  }
}

}  // namespace

TEST_CASE("picks with a banned id equal picks over a row with -inf there") {
  std::mt19937_64 g(11);
  for (int trial = 0; trial < 200; trial++) {
    const int32_t V = 2 + int32_t(g() % 700);
    const SamplerParams p = random_params(g, V, trial % 3 == 0);
    Sampler banned_in(p, V), copied(p, V);  // the same seed: the same random stream
    for (int step = 0; step < 12; step++) {
      const std::vector<float> row = random_row(g, V, int(g() % 1000));
      const int32_t eos = int32_t(g() % size_t(V));
      std::vector<float> own = row;  // what the scheduler used to do: a copy with -inf
      own[size_t(eos)] = -kInf;
      const int32_t a = banned_in.sample(row, eos);
      const int32_t b = copied.sample(own);
      INFO("trial ", trial, " step ", step);
      REQUIRE(a == b);
      banned_in.accept(a);
      copied.accept(b);
    }
  }
}

TEST_CASE("every configuration picks what the chain of stages over the whole row picks") {
  std::mt19937_64 g(5);
  SUBCASE("small vocabularies, greedy and sampled") {
    for (int trial = 0; trial < 400; trial++)
      agree(g, 2 + int32_t(g() % 900), trial % 4 == 0, 10, trial);
  }
  SUBCASE("a 50,280-token vocabulary") {
    for (int trial = 0; trial < 12; trial++) agree(g, 50280, trial % 3 == 0, 6, trial);
  }
}

TEST_CASE("top_k from the row: ties at the k-th place, banned and forced ids, inf - inf") {
  // 300 ids of 3 values, 100 of them at the top: the 40 kept are the lowest of those ids,
  // the banned one left out and the next one in.
  const int32_t V = 300;
  std::vector<float> row(V);
  std::vector<int32_t> top;
  for (int32_t i = 0; i < V; i++) {
    row[size_t(i)] = float((i * 7) % 3);
    if (row[size_t(i)] == 2.0f) top.push_back(i);
  }
  REQUIRE(top.size() == 100);
  SamplerParams p;
  p.temp = 1.0f;
  p.top_k = 40;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  std::vector<int32_t> kept(top.begin(), top.begin() + 41);
  kept.erase(kept.begin() + 3);
  Sampler s(p, V);
  std::vector<int> seen(size_t(V), 0);
  for (int i = 0; i < 4000; i++) seen[size_t(s.sample(row, top[3]))]++;
  for (int32_t id = 0; id < V; id++) {
    INFO("id ", id);
    const bool in = std::find(kept.begin(), kept.end(), id) != kept.end();
    CHECK((seen[size_t(id)] > 0) == in);  // each of the 40 equally likely: ~100 draws each
  }
  // A +inf bias brings a low id into the 40 and takes all the mass.
  p.logit_bias = {{1, kInf}};
  Sampler forced(p, V);
  CHECK(row[1] == 1.0f);
  for (int i = 0; i < 20; i++) CHECK(forced.sample(row, top[0]) == 1);

  // A huge frequency penalty on an id whose logit is +inf: inf - inf is NaN. The shortcut
  // leaves that to the full chain; the pick is the same as the reference's.
  std::mt19937_64 g(3);
  p = SamplerParams{};
  p.temp = 0.9f;
  p.top_k = 10;
  p.frequency_penalty = 3e38f;
  p.top_p = 1.0f;  // nothing after top_k drops the NaN before the draw
  p.min_p = 0.0f;
  p.seed = 17;
  for (int step = 0; step < 30; step++) {
    Sampler a(p, V);
    Reference ref(p, V);
    std::vector<float> r = random_row(g, V, step);
    r[7] = kInf;  // counted twice: 6e38 overflows to inf
    for (int32_t id : {7, 7, 11}) {
      a.accept(id);
      ref.accept(id);
    }
    INFO("step ", step);
    CHECK(a.sample(r) == ref.sample(r, -1));
  }
}

// A batch whose sequences all pick greedily with nothing adjusted lets the backend pick for
// them (Backend::decode_greedy, which may keep the logits on the device); that pick must be
// what the Sampler would pick from the row, banned id included.
TEST_CASE("greedy_argmax picks what a plain greedy Sampler picks") {
  std::mt19937_64 g(11);
  for (int32_t V : {1, 2, 7, 300, 50280}) {
    SamplerParams p;
    p.temp = 0.0f;
    Sampler s(p, V);
    CHECK(s.plain_greedy());
    for (int trial = 0; trial < (V > 1000 ? 60 : 400); trial++) {
      std::vector<float> row = random_row(g, V, trial);
      if (trial % 13 == 0) std::fill(row.begin(), row.begin() + V, -kInf);  // no finite logit
      if (trial % 17 == 0) std::fill(row.begin(), row.begin() + V, kNaN);
      if (trial % 19 == 0) row[0] = -0.0f, row[size_t(V - 1)] = 0.0f;  // signed zeros tie
      int32_t banned = trial % 3 == 0 ? -1 : int32_t(g() % size_t(V));
      if (trial % 5 == 0) banned = greedy_argmax(std::span(row).first(size_t(V)), -1);
      INFO("V ", V, " trial ", trial, " banned ", banned);
      CHECK(greedy_argmax(std::span(row).first(size_t(V)), banned) == s.sample(row, banned));
    }
  }
  // Anything adjusted makes the Sampler's pick differ from the row's argmax, so it is not
  // plain greedy.
  const auto plain = [](void (*set)(SamplerParams&)) {
    SamplerParams p;
    p.temp = 0.0f;
    set(p);
    return Sampler(p, 10).plain_greedy();
  };
  CHECK_FALSE(plain([](SamplerParams& p) { p.temp = 0.7f; }));
  CHECK_FALSE(plain([](SamplerParams& p) { p.logit_bias.push_back({3, 1.0f}); }));
  CHECK_FALSE(plain([](SamplerParams& p) { p.repeat_penalty = 1.1f; }));
  CHECK_FALSE(plain([](SamplerParams& p) { p.presence_penalty = 0.5f; }));
  CHECK_FALSE(plain([](SamplerParams& p) { p.frequency_penalty = 0.5f; }));
  CHECK(plain([](SamplerParams& p) { p.top_k = 1; p.top_p = 0.5f; }));  // ignored at temp 0
}
