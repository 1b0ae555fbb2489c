// The token sampler: each stage against a small hand-computed case, then the whole chain's
// output distribution (chi-square goodness of fit), determinism, and the flag parsing/checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/sampler.h"

using namespace mamba;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Candidates for ids 0..n-1 with these logits, in id order.
std::vector<TokenCandidate> cands(const std::vector<float>& logits) {
  std::vector<TokenCandidate> c;
  for (size_t i = 0; i < logits.size(); i++) c.push_back({int32_t(i), logits[i], 0.0f});
  return c;
}

std::vector<int32_t> ids(const std::vector<TokenCandidate>& c) {
  std::vector<int32_t> out;
  for (const TokenCandidate& t : c) out.push_back(t.id);
  return out;
}

float logit_of(const std::vector<TokenCandidate>& c, int32_t id) {
  for (const TokenCandidate& t : c)
    if (t.id == id) return t.logit;
  FAIL("id ", id, " not in the candidates");
  return 0;
}

// ln 1, ln 2, ln 3, ln 4: softmax gives p = 0.1, 0.2, 0.3, 0.4 for ids 0, 1, 2, 3.
const std::vector<float> kTenths = {0.0f, std::log(2.0f), std::log(3.0f), std::log(4.0f)};

// The message of the mamba::Error that validate() throws ("" when it does not throw).
std::string validate_error(const SamplerParams& p, int32_t n_vocab = 100) {
  try {
    p.validate(n_vocab);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& s) {
  try {
    parse_logit_bias(s);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Params with every filter off: the draw is from softmax(logits / temp).
SamplerParams plain(float temp, uint64_t seed) {
  SamplerParams p;
  p.temp = temp;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

// Draws n ids and counts them per id.
std::vector<int> histogram(Sampler& s, const std::vector<float>& logits, int n) {
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < n; i++) count[size_t(s.sample(logits))]++;
  return count;
}

// Pearson's statistic sum (O - E)^2 / E over the ids with expected probability > 0. Ids with
// probability 0 must have no draws at all (checked here).
double chi_square(const std::vector<int>& count, const std::vector<double>& p, int n) {
  double x2 = 0;
  for (size_t i = 0; i < p.size(); i++) {
    if (p[i] == 0.0) {
      CHECK_MESSAGE(count[i] == 0, "id ", i, " has probability 0 but was drawn");
      continue;
    }
    const double e = p[i] * n;
    x2 += (count[i] - e) * (count[i] - e) / e;
  }
  return x2;
}

// softmax(logits / temp) over the ids in `keep`, 0 elsewhere; written out here from the
// definition rather than through the sampler's own softmax.
std::vector<double> expected(const std::vector<float>& logits, double temp,
                             const std::vector<int>& keep) {
  std::vector<double> p(logits.size(), 0.0);
  double sum = 0;
  for (int i : keep) sum += p[size_t(i)] = std::exp(double(logits[size_t(i)]) / temp);
  for (double& v : p) v /= sum;
  return p;
}

// Upper 0.001 critical values of the chi-square distribution by degrees of freedom, from the
// standard table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.4): a correct sampler fails a
// test with probability 0.1%, and the seeds are fixed, so a pass is reproducible.
double chi2_critical_001(int df) {
  switch (df) {
    case 2: return 13.816;
    case 4: return 18.467;
    case 7: return 24.322;
  }
  FAIL("no table value for df ", df);
  return 0;
}

// Eight tokens with probabilities from about 0.02 to 0.36 at temp 1.
const std::vector<float> kEight = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.0f, 0.3f, 1.5f};

}  // namespace

// ---- the stages ------------------------------------------------------------------------------

TEST_CASE("softmax sorts by logit (ties by id) and normalises") {
  auto c = cands(kTenths);
  sampling::softmax(c);
  CHECK(ids(c) == std::vector<int32_t>{3, 2, 1, 0});
  CHECK(c[0].p == doctest::Approx(0.4));
  CHECK(c[1].p == doctest::Approx(0.3));
  CHECK(c[2].p == doctest::Approx(0.2));
  CHECK(c[3].p == doctest::Approx(0.1));

  c = cands({1.0f, 2.0f, 1.0f, 2.0f});
  sampling::softmax(c);
  CHECK(ids(c) == std::vector<int32_t>{1, 3, 0, 2});
  // e / (2e + 2) and 1 / (2e + 2)
  CHECK(c[0].p == doctest::Approx(0.3655293));
  CHECK(c[3].p == doctest::Approx(0.1344707));

  SUBCASE("-inf gets p = 0, +inf takes all the mass") {
    c = cands({0.0f, -kInf, 0.0f, -kInf});
    sampling::softmax(c);
    CHECK(ids(c) == std::vector<int32_t>{0, 2, 1, 3});
    CHECK(c[0].p == 0.5f);
    CHECK(c[1].p == 0.5f);
    CHECK(c[2].p == 0.0f);
    CHECK(c[3].p == 0.0f);
    c = cands({3.0f, kInf, 0.0f, kInf});
    sampling::softmax(c);
    CHECK(ids(c) == std::vector<int32_t>{1, 3, 0, 2});
    CHECK(c[0].p == 0.5f);
    CHECK(c[1].p == 0.5f);
    CHECK(c[2].p == 0.0f);
  }
}

TEST_CASE("logit_bias adds to the named ids; -inf bans") {
  auto c = cands({1.0f, 2.0f, 3.0f});
  const std::vector<std::pair<int32_t, float>> bias = {{2, -kInf}, {0, 1.5f}, {0, 0.25f}};
  sampling::logit_bias(c, bias);
  CHECK(c[0].logit == 2.75f);  // 1 + 1.5 + 0.25: repeated ids add up
  CHECK(c[1].logit == 2.0f);
  CHECK(c[2].logit == -kInf);
  // Also on a reordered list, and an id not in the list is skipped.
  c = {{7, 1.0f, 0}, {3, 0.0f, 0}};
  const std::vector<std::pair<int32_t, float>> b2 = {{3, 2.0f}, {5, 9.0f}};
  sampling::logit_bias(c, b2);
  CHECK(logit_of(c, 3) == 2.0f);
  CHECK(logit_of(c, 7) == 1.0f);
}

TEST_CASE("penalties: repeat divides positive and multiplies negative logits, once per id") {
  // ids:                      0     1     2     3     4     5
  const std::vector<float> l = {2.0f, -1.0f, 0.5f, 3.0f, -0.5f, 0.0f};
  const std::vector<int32_t> hist = {0, 1, 1, 3, 1, 5};  // counts: 0:1, 1:3, 3:1, 5:1

  auto c = cands(l);
  sampling::penalties(c, hist, 2.0f, 0.0f, 0.0f);
  CHECK(c[0].logit == 1.0f);    // 2 / 2
  CHECK(c[1].logit == -2.0f);   // -1 * 2, not -1 * 2^3
  CHECK(c[2].logit == 0.5f);    // not in the history
  CHECK(c[3].logit == 1.5f);    // 3 / 2
  CHECK(c[4].logit == -0.5f);
  CHECK(c[5].logit == 0.0f);    // 0 * 2

  // presence 0.5 once per id, frequency 0.25 per occurrence
  c = cands(l);
  sampling::penalties(c, hist, 1.0f, 0.5f, 0.25f);
  CHECK(c[0].logit == 1.25f);   // 2 - 0.25 - 0.5
  CHECK(c[1].logit == -2.25f);  // -1 - 3 * 0.25 - 0.5
  CHECK(c[2].logit == 0.5f);
  CHECK(c[3].logit == 2.25f);   // 3 - 0.25 - 0.5
  CHECK(c[5].logit == -0.75f);  // 0 - 0.25 - 0.5

  // all three: repeat first, then the subtractions
  c = cands(l);
  sampling::penalties(c, hist, 2.0f, 0.5f, 0.25f);
  CHECK(c[0].logit == 0.25f);   // 2 / 2 - 0.75
  CHECK(c[1].logit == -3.25f);  // -1 * 2 - 1.25
  CHECK(c[3].logit == 0.75f);   // 3 / 2 - 0.75

  SUBCASE("a reordered, shortened list gets the same penalties") {
    std::vector<TokenCandidate> r = {{3, 3.0f, 0}, {1, -1.0f, 0}, {4, -0.5f, 0}, {0, 2.0f, 0}};
    sampling::penalties(r, hist, 2.0f, 0.5f, 0.25f);
    CHECK(logit_of(r, 0) == 0.25f);
    CHECK(logit_of(r, 1) == -3.25f);
    CHECK(logit_of(r, 3) == 0.75f);
    CHECK(logit_of(r, 4) == -0.5f);
  }
  SUBCASE("neutral settings or an empty history change nothing") {
    c = cands(l);
    sampling::penalties(c, hist, 1.0f, 0.0f, 0.0f);
    sampling::penalties(c, {}, 2.0f, 1.0f, 1.0f);
    for (size_t i = 0; i < l.size(); i++) CHECK(c[i].logit == l[i]);
  }
}

TEST_CASE("top_k keeps the k largest logits, lowest ids on ties") {
  auto c = cands({1.0f, 5.0f, 3.0f, 5.0f, 2.0f});
  sampling::top_k(c, 2);
  CHECK(ids(c) == std::vector<int32_t>{1, 3});
  c = cands({1.0f, 4.0f, 4.0f, 4.0f, 0.0f});
  sampling::top_k(c, 2);
  CHECK(ids(c) == std::vector<int32_t>{1, 2});
  c = cands({1.0f, 5.0f, 3.0f, 5.0f, 2.0f});
  sampling::top_k(c, 3);
  CHECK(ids(c) == std::vector<int32_t>{1, 3, 2});
  c = cands({1.0f, 5.0f, 3.0f, 5.0f, 2.0f});
  sampling::top_k(c, 10);  // k >= n: all, sorted
  CHECK(ids(c) == std::vector<int32_t>{1, 3, 2, 4, 0});
  c = cands({1.0f, 5.0f, 3.0f});
  sampling::top_k(c, 0);  // off: untouched
  CHECK(ids(c) == std::vector<int32_t>{0, 1, 2});
  sampling::top_k(c, -1);
  CHECK(ids(c) == std::vector<int32_t>{0, 1, 2});
}

TEST_CASE("top_p keeps the shortest prefix with mass >= p") {
  // p = 0.4, 0.3, 0.2, 0.1 for ids 3, 2, 1, 0; prefix masses 0.4, 0.7, 0.9, 1.0
  auto c = cands(kTenths);
  sampling::top_p(c, 0.65f);
  CHECK(ids(c) == std::vector<int32_t>{3, 2});
  c = cands(kTenths);
  sampling::top_p(c, 0.75f);
  CHECK(ids(c) == std::vector<int32_t>{3, 2, 1});
  c = cands(kTenths);
  sampling::top_p(c, 0.3f);  // the first alone already has 0.4
  CHECK(ids(c) == std::vector<int32_t>{3});
  c = cands(kTenths);
  sampling::top_p(c, 0.95f);
  CHECK(ids(c) == std::vector<int32_t>{3, 2, 1, 0});
  c = cands(kTenths);
  sampling::top_p(c, 1.0f);  // off: untouched
  CHECK(ids(c) == std::vector<int32_t>{0, 1, 2, 3});
  // banned tokens carry no mass and fall outside the prefix
  c = cands({0.0f, -kInf, 0.0f, -kInf});
  sampling::top_p(c, 0.9f);
  CHECK(ids(c) == std::vector<int32_t>{0, 2});
}

TEST_CASE("min_p keeps p >= min_p * p_max") {
  // p_max = 0.4
  auto c = cands(kTenths);
  sampling::min_p(c, 0.6f);  // threshold 0.24
  CHECK(ids(c) == std::vector<int32_t>{3, 2});
  c = cands(kTenths);
  sampling::min_p(c, 0.4f);  // threshold 0.16
  CHECK(ids(c) == std::vector<int32_t>{3, 2, 1});
  c = cands(kTenths);
  sampling::min_p(c, 0.76f);  // threshold 0.304
  CHECK(ids(c) == std::vector<int32_t>{3});
  c = cands(kTenths);
  sampling::min_p(c, 1.0f);  // only the max (and its ties)
  CHECK(ids(c) == std::vector<int32_t>{3});
  c = cands({2.0f, 1.0f, 2.0f});
  sampling::min_p(c, 1.0f);
  CHECK(ids(c) == std::vector<int32_t>{0, 2});
  c = cands(kTenths);
  sampling::min_p(c, 0.0f);  // off: untouched
  CHECK(ids(c) == std::vector<int32_t>{0, 1, 2, 3});
  c = cands({0.0f, -kInf, -1.0f, -kInf});
  sampling::min_p(c, 0.1f);  // threshold 0.1: e^-1 = 0.37 stays, the banned go
  CHECK(ids(c) == std::vector<int32_t>{0, 2});
}

TEST_CASE("typical keeps the tokens whose surprise is closest to the entropy") {
  // p = 0.1, 0.2, 0.3, 0.4 (ids 0..3).
  // H = -(0.1 ln 0.1 + 0.2 ln 0.2 + 0.3 ln 0.3 + 0.4 ln 0.4) = 1.279854
  // surprise -ln p: 2.302585, 1.609438, 1.203973, 0.916291
  // |surprise - H|: id0 1.022731, id1 0.329584, id2 0.075881, id3 0.363563
  // most typical first: id2 (0.3), id1 (0.2), id3 (0.4), id0 (0.1); masses 0.3, 0.5, 0.9, 1.0
  auto c = cands(kTenths);
  sampling::typical(c, 0.45f);  // 0.5 > 0.45: the most likely token (id 3) is dropped
  CHECK(ids(c) == std::vector<int32_t>{2, 1});
  c = cands(kTenths);
  sampling::typical(c, 0.25f);
  CHECK(ids(c) == std::vector<int32_t>{2});
  c = cands(kTenths);
  sampling::typical(c, 0.85f);
  CHECK(ids(c) == std::vector<int32_t>{2, 1, 3});
  c = cands(kTenths);
  sampling::typical(c, 0.95f);
  CHECK(ids(c) == std::vector<int32_t>{2, 1, 3, 0});
  c = cands(kTenths);
  sampling::typical(c, 1.0f);  // off: untouched
  CHECK(ids(c) == std::vector<int32_t>{0, 1, 2, 3});
  // Banned tokens (p = 0) add nothing to the entropy and are the least typical:
  // two tokens of 0.5, H = ln 2, both at distance 0.
  c = cands({0.0f, -kInf, 0.0f, -kInf});
  sampling::typical(c, 0.9f);
  CHECK(ids(c) == std::vector<int32_t>{0, 2});
  for (const TokenCandidate& t : c) CHECK(t.p == 0.5f);
}

TEST_CASE("top_k, top_p and typical over a long, shuffled list") {
  // 1000 candidates, id i with logit -0.01 i, stored in a scrambled order (7919 is prime).
  std::vector<TokenCandidate> base;
  for (int i = 0; i < 1000; i++) {
    const int id = (i * 7919) % 1000;
    base.push_back({id, -0.01f * float(id), 0.0f});
  }
  std::vector<int32_t> first(1000);
  for (int i = 0; i < 1000; i++) first[size_t(i)] = i;
  const auto prefix = [&](size_t n) {
    return std::vector<int32_t>(first.begin(), first.begin() + long(n));
  };

  auto c = base;
  sampling::top_k(c, 10);
  CHECK(ids(c) == prefix(10));
  // p_i = r^i (1 - r) / (1 - r^1000) with r = e^-0.01, so the first n hold
  // (1 - r^n) / (1 - e^-10). Mass >= 0.9 needs r^n <= 1 - 0.9 (1 - e^-10) = 0.1000409,
  // n >= -ln(0.1000409) / 0.01 = 230.22: 231 tokens.
  c = base;
  sampling::top_p(c, 0.9f);
  CHECK(ids(c) == prefix(231));

  // All equal: p = 0.001 each, every token equally typical (ties by id), 500 make 0.5.
  std::vector<TokenCandidate> flat;
  for (int i = 0; i < 1000; i++) flat.push_back({(i * 7919) % 1000, 0.0f, 0.0f});
  c = flat;
  sampling::top_p(c, 0.4995f);
  CHECK(ids(c) == prefix(500));
  c = flat;
  sampling::typical(c, 0.4995f);
  CHECK(ids(c) == prefix(500));
  c = flat;
  sampling::top_k(c, 5);
  CHECK(ids(c) == prefix(5));
}

TEST_CASE("temperature divides the logits") {
  auto c = cands({1.0f, -2.0f, 0.0f, -kInf});
  sampling::temperature(c, 0.5f);
  CHECK(c[0].logit == 2.0f);
  CHECK(c[1].logit == -4.0f);
  CHECK(c[2].logit == 0.0f);
  CHECK(c[3].logit == -kInf);
  c = cands({1.0f, -2.0f, 0.0f});
  sampling::temperature(c, 2.0f);
  CHECK(c[0].logit == 0.5f);
  CHECK(c[1].logit == -1.0f);
  // t = 0 keeps only the best, lowest id on ties
  c = cands({1.0f, 3.0f, 3.0f});
  sampling::temperature(c, 0.0f);
  CHECK(c[0].logit == -kInf);
  CHECK(c[1].logit == 3.0f);
  CHECK(c[2].logit == -kInf);
}

TEST_CASE("draw walks the cumulative sum with u from the top 53 bits of one 64-bit draw") {
  // The first output of a default-seeded (5489) mt19937_64 is 14514284786278117030, fixed by
  // the C++ standard; its top 53 bits / 2^53 = 0.78682095...
  std::mt19937_64 rng;
  // In this order the prefix masses are 0.1, 0.3, 0.6, 1.0: u = 0.787 lands in the 4th.
  auto c = cands(kTenths);
  CHECK(sampling::draw(c, rng) == 3);
  // In descending order they are 0.4, 0.7, 0.9: the 3rd.
  rng.seed(5489);
  c = cands(kTenths);
  std::reverse(c.begin(), c.end());
  CHECK(sampling::draw(c, rng) == 1);
  // A banned token is never drawn, even where u would land on it.
  rng.seed(5489);
  c = cands({0.0f, 0.0f, -kInf});  // 0.5, 0.5, 0: u = 0.787 is in the 2nd
  CHECK(sampling::draw(c, rng) == 1);
  // All banned: the lowest id, no draw.
  c = {{5, -kInf, 0}, {2, -kInf, 0}, {9, -kInf, 0}};
  CHECK(sampling::draw(c, rng) == 2);
}

// ---- the Sampler ------------------------------------------------------------------------------

TEST_CASE("greedy picks the largest logit after bias and penalties, lowest id on ties") {
  Sampler s(SamplerParams{}, 5);
  CHECK(s.sample(std::vector<float>{0.5f, 2.0f, -1.0f, 2.0f, 1.0f}) == 1);
  CHECK(s.sample(std::vector<float>{0.5f, 2.0f, -1.0f, 2.5f, 1.0f}) == 3);

  SamplerParams p;
  p.logit_bias = {{1, -kInf}, {4, 0.75f}};
  Sampler b(p, 5);
  // id 1 banned; id 4: 1 + 0.75 = 1.75 beats id 3's 1.5
  CHECK(b.sample(std::vector<float>{0.5f, 2.0f, -1.0f, 1.5f, 1.0f}) == 4);

  p = SamplerParams{};
  p.repeat_penalty = 2.0f;
  Sampler r(p, 3);
  const std::vector<float> l = {3.0f, 2.0f, 1.0f};
  CHECK(r.sample(l) == 0);
  r.accept(0);  // 3 / 2 = 1.5 < 2
  CHECK(r.sample(l) == 1);
  r.accept(1);  // 1.5 vs 1 vs 1: id 0
  CHECK(r.sample(l) == 0);
}

TEST_CASE("only the first n_vocab logits count; NaN and all -inf are handled") {
  Sampler g(SamplerParams{}, 3);
  CHECK(g.sample(std::vector<float>{0.0f, 1.0f, 0.5f, 100.0f, 100.0f}) == 1);  // 2 padded columns
  CHECK_THROWS_AS(g.sample(std::vector<float>{0.0f, 1.0f}), Error);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(g.sample(std::vector<float>{nan, 1.0f, 0.5f}) == 1);
  CHECK(g.sample(std::vector<float>{-kInf, -kInf, -kInf}) == 0);

  Sampler s(plain(1.0f, 7), 3);
  for (int i = 0; i < 200; i++) CHECK(s.sample(std::vector<float>{nan, 0.0f, 0.0f}) != 0);
  CHECK(s.sample(std::vector<float>{-kInf, -kInf, -kInf}) == 0);

  // A +inf bias forces a token; -inf bans one whatever its logit.
  SamplerParams p = plain(1.0f, 3);
  p.logit_bias = {{2, kInf}};
  Sampler f(p, 3);
  for (int i = 0; i < 50; i++) CHECK(f.sample(std::vector<float>{5.0f, 0.0f, -3.0f}) == 2);
  p.logit_bias = {{0, -kInf}};
  Sampler ban(p, 3);
  for (int i = 0; i < 500; i++) CHECK(ban.sample(std::vector<float>{8.0f, 0.0f, 0.0f}) != 0);
}

TEST_CASE("repeat_last_n: the penalty window") {
  // Greedy with a strong repeat penalty: a token in the window drops below the others.
  // logits: id0 3.0, id1 2.9, id2 2.8, id3 -1; penalised: 0.3, 0.29, 0.28, -10
  const std::vector<float> l = {3.0f, 2.9f, 2.8f, -1.0f};
  const auto pick = [&](int32_t last_n, const std::vector<int32_t>& hist) {
    SamplerParams p;
    p.repeat_penalty = 10.0f;
    p.repeat_last_n = last_n;
    Sampler s(p, 4);
    s.accept(hist);
    return s.sample(l);
  };
  CHECK(pick(0, {0, 1}) == 0);   // 0: off
  CHECK(pick(1, {0, 1}) == 0);   // window {1}
  CHECK(pick(2, {0, 1}) == 2);   // window {0, 1}
  CHECK(pick(64, {0, 1}) == 2);
  std::vector<int32_t> h = {0, 1};
  h.insert(h.end(), 62, 3);      // 64 ids: 0 and 1 are the oldest still in the window
  CHECK(pick(64, h) == 2);
  h.push_back(3);                // 0 leaves the window
  CHECK(pick(64, h) == 0);
  CHECK(pick(-1, h) == 2);       // -1: everything
  // A long history (the sampler trims its buffer) keeps the last 64 exactly.
  std::vector<int32_t> long_h(300, 3);
  long_h.push_back(0);
  long_h.insert(long_h.end(), 63, 3);
  CHECK(pick(64, long_h) == 1);  // 0 is the oldest in the window
  long_h.push_back(3);
  CHECK(pick(64, long_h) == 0);
  long_h.assign(1000, 3);
  long_h.insert(long_h.begin(), 0);
  CHECK(pick(-1, long_h) == 1);
}

// ---- the output distribution -----------------------------------------------------------------

TEST_CASE("draws follow softmax(logits / temp)") {
  const int n = 20000;
  SUBCASE("temp 1") {
    Sampler s(plain(1.0f, 1234), 8);
    const auto count = histogram(s, kEight, n);
    const double x2 = chi_square(count, expected(kEight, 1.0, {0, 1, 2, 3, 4, 5, 6, 7}), n);
    INFO("chi-square ", x2);
    CHECK(x2 < chi2_critical_001(7));
  }
  SUBCASE("temp 0.5") {
    Sampler s(plain(0.5f, 99), 8);
    const auto count = histogram(s, kEight, n);
    const double x2 = chi_square(count, expected(kEight, 0.5, {0, 1, 2, 3, 4, 5, 6, 7}), n);
    INFO("chi-square ", x2);
    CHECK(x2 < chi2_critical_001(7));
    // and it is not the temp-1 distribution
    CHECK(chi_square(count, expected(kEight, 1.0, {0, 1, 2, 3, 4, 5, 6, 7}), n) >
          chi2_critical_001(7));
  }
  SUBCASE("top_k 5 then top_p 0.8") {
    // Sorted: id4 2.0, id7 1.5, id0 1.0, id1 0.5, id6 0.3 | id2 0.0, id3 -0.5, id5 -1.0.
    // top_k 5 keeps the first five; their softmax: e^2, e^1.5, e^1, e^.5, e^.3 over 17.587607
    // = 0.420133, 0.254819, 0.154557, 0.093744, 0.076750; prefix masses 0.420, 0.675, 0.830:
    // top_p 0.8 keeps ids 4, 7, 0.
    SamplerParams p = plain(1.0f, 42);
    p.top_k = 5;
    p.top_p = 0.8f;
    Sampler s(p, 8);
    const auto count = histogram(s, kEight, n);
    const double x2 = chi_square(count, expected(kEight, 1.0, {4, 7, 0}), n);
    INFO("chi-square ", x2);
    CHECK(x2 < chi2_critical_001(2));
  }
  SUBCASE("min_p 0.15") {
    // keep e^(l - 2) >= 0.15  <=>  l >= 2 + ln 0.15 = 0.1029: ids 4, 7, 0, 1, 6
    SamplerParams p = plain(1.0f, 5);
    p.min_p = 0.15f;
    Sampler s(p, 8);
    const auto count = histogram(s, kEight, n);
    const double x2 = chi_square(count, expected(kEight, 1.0, {4, 7, 0, 1, 6}), n);
    INFO("chi-square ", x2);
    CHECK(x2 < chi2_critical_001(4));
  }
}

TEST_CASE("the random stream: same seed, same ids; reset() restarts it") {
  const auto run = [](Sampler& s, int n) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; i++) out.push_back(s.sample(kEight));
    return out;
  };
  Sampler a(plain(1.0f, 11), 8), b(plain(1.0f, 11), 8), c(plain(1.0f, 12), 8);
  const auto ra = run(a, 64);
  CHECK(ra == run(b, 64));
  CHECK(ra != run(c, 64));
  a.reset();
  CHECK(ra == run(a, 64));

  // reset() also forgets the penalty history.
  SamplerParams p;
  p.repeat_penalty = 10.0f;
  Sampler g(p, 3);
  const std::vector<float> l = {3.0f, 2.0f, 1.0f};
  g.accept(0);
  CHECK(g.sample(l) == 1);
  g.reset();
  CHECK(g.sample(l) == 0);
}

// ---- flags -----------------------------------------------------------------------------------

TEST_CASE("parse_logit_bias") {
  CHECK(parse_logit_bias("15043+1") == std::pair<int32_t, float>{15043, 1.0f});
  CHECK(parse_logit_bias("2-inf") == std::pair<int32_t, float>{2, -kInf});
  CHECK(parse_logit_bias("7+inf") == std::pair<int32_t, float>{7, kInf});
  CHECK(parse_logit_bias("3-0.5") == std::pair<int32_t, float>{3, -0.5f});
  CHECK(parse_logit_bias("0+2.25") == std::pair<int32_t, float>{0, 2.25f});
  for (const char* bad : {"", "abc", "+1", "12", "12*3", "12+", "12+abc", "12+-1", "12++1",
                          "-3+1", "12+nan", "99999999999+1", "12+1x", " 12+1", "12 +1"}) {
    INFO("input '", bad, "'");
    const std::string e = parse_error(bad);
    CHECK(e.find("--logit-bias expects ID+BIAS or ID-BIAS") != std::string::npos);
    CHECK(e.find(std::string("'") + bad + "'") != std::string::npos);
  }
}

TEST_CASE("validate names the flag and the bad value") {
  CHECK(validate_error(SamplerParams{}) == "");
  SamplerParams p;
  p.top_p = 1.5f;
  CHECK(validate_error(p) == "--top-p must be in (0, 1], got 1.5");
  p.top_p = 0.0f;
  CHECK(validate_error(p) == "--top-p must be in (0, 1], got 0");
  p = {};
  p.temp = -0.1f;
  CHECK(validate_error(p).rfind("--temp must be >= 0", 0) == 0);
  p.temp = kInf;
  CHECK(validate_error(p).rfind("--temp must be >= 0", 0) == 0);
  p.temp = std::numeric_limits<float>::quiet_NaN();
  CHECK(validate_error(p).rfind("--temp must be >= 0", 0) == 0);
  p = {};
  p.min_p = 1.01f;
  CHECK(validate_error(p) == "--min-p must be in [0, 1], got 1.01");
  p = {};
  p.typical_p = 0.0f;
  CHECK(validate_error(p) == "--typical must be in (0, 1], got 0");
  p = {};
  p.repeat_penalty = 0.0f;
  CHECK(validate_error(p).rfind("--repeat-penalty must be > 0", 0) == 0);
  p = {};
  p.repeat_last_n = -2;
  CHECK(validate_error(p).rfind("--repeat-last-n must be >= -1", 0) == 0);
  p = {};
  p.presence_penalty = std::numeric_limits<float>::quiet_NaN();
  CHECK(validate_error(p) == "--presence-penalty must be finite, got nan");
  p = {};
  p.frequency_penalty = -kInf;
  CHECK(validate_error(p) == "--frequency-penalty must be finite, got -inf");
  p = {};
  p.logit_bias = {{100, 1.0f}};
  CHECK(validate_error(p, 100) ==
        "--logit-bias: token id 100 is outside the vocabulary [0, 100)");
  p.logit_bias = {{-1, 1.0f}};
  CHECK(validate_error(p, 100).rfind("--logit-bias: token id -1", 0) == 0);
  p.logit_bias = {{99, -kInf}, {0, kInf}};
  CHECK(validate_error(p, 100) == "");
  // The constructor validates.
  p = {};
  p.top_p = 2.0f;
  CHECK_THROWS_AS(Sampler(p, 10), Error);
}

// The greedy pick skips the candidate list; it must equal the chain's stages applied in full
// (bias, penalties, then the largest logit with the lowest id on ties), NaN never chosen.
TEST_CASE("greedy fast path equals bias + penalties + argmax over the whole row") {
  std::mt19937_64 g(7);
  for (int trial = 0; trial < 300; trial++) {
    const int32_t V = 50 + int32_t(g() % 200);
    std::vector<float> logits(size_t(V) + 3);  // padded columns are ignored
    for (float& l : logits) l = float(int(g() % 7)) - 3.0f;  // many ties
    if (trial % 5 == 0) logits[g() % V] = NAN;
    if (trial % 7 == 0) logits[g() % V] = -INFINITY;
    SamplerParams p;
    p.temp = 0.0f;
    p.repeat_penalty = trial % 3 == 0 ? 1.0f : 1.3f;
    p.presence_penalty = trial % 4 == 0 ? 0.5f : 0.0f;
    p.frequency_penalty = trial % 6 == 0 ? 0.25f : 0.0f;
    p.repeat_last_n = int32_t(g() % 20) - 1;
    for (int b = 0; b < int(g() % 4); b++)
      p.logit_bias.push_back({int32_t(g() % V), trial % 2 ? 2.0f : -INFINITY});
    Sampler s(p, V);
    std::vector<int32_t> hist;
    for (int h = 0; h < int(g() % 30); h++) hist.push_back(int32_t(g() % V));
    s.accept(hist);
    // The reference: every stage over the full id-indexed list.
    std::vector<TokenCandidate> c(static_cast<size_t>(V));
    for (int32_t i = 0; i < V; i++)
      c[size_t(i)] = {i, std::isnan(logits[size_t(i)]) ? -INFINITY : logits[size_t(i)], 0.0f};
    sampling::logit_bias(c, p.logit_bias);
    std::span<const int32_t> window(hist);
    if (p.repeat_last_n >= 0 && window.size() > size_t(p.repeat_last_n))
      window = window.last(size_t(p.repeat_last_n));
    sampling::penalties(c, window, p.repeat_penalty, p.presence_penalty, p.frequency_penalty);
    int32_t want = 0;
    for (int32_t i = 1; i < V; i++)
      if (c[size_t(i)].logit > c[size_t(want)].logit) want = i;
    INFO("trial ", trial);
    CHECK(s.sample(logits) == want);
  }
}
