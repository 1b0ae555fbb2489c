#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "common/error.h"

namespace mamba {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A float as a short human string for error messages ("1.5", "nan", "-inf").
std::string fmt(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(v));
  return buf;
}

// Descending by logit, ties broken by ascending id: a total order, so every sort below gives
// the same sequence on every platform and standard library (std::sort is not stable).
bool by_logit_desc(const TokenCandidate& a, const TokenCandidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void sort_desc(std::vector<TokenCandidate>& c) {
  if (!std::is_sorted(c.begin(), c.end(), by_logit_desc))
    std::sort(c.begin(), c.end(), by_logit_desc);
}

// Fills p = softmax(logit) in place, without reordering. The limits are taken where exp()
// would give NaN: when some logits are +inf the mass is shared evenly among them; when every
// logit is -inf it is shared evenly among all (draw() does not sample that case).
void fill_probs(std::vector<TokenCandidate>& c) {
  if (c.empty()) return;
  float mx = -kInf;
  for (const TokenCandidate& t : c) mx = std::max(mx, t.logit);
  if (std::isinf(mx)) {
    size_t n = 0;
    for (const TokenCandidate& t : c) n += t.logit == mx;
    for (TokenCandidate& t : c) t.p = t.logit == mx ? 1.0f / float(n) : 0.0f;
    return;
  }
  double sum = 0;  // double: 50k terms in float lose the small ones
  for (TokenCandidate& t : c) {
    t.p = std::exp(t.logit - mx);  // exp(-inf) = 0
    sum += t.p;
  }
  const float inv = float(1.0 / sum);  // sum >= 1: the max term is exp(0)
  for (TokenCandidate& t : c) t.p *= inv;
}

// The candidate with this id: c[id] directly while c is still indexed by id (the full
// vocabulary before any reordering stage), else a search.
TokenCandidate* find_id(std::vector<TokenCandidate>& c, int32_t id) {
  if (id >= 0 && size_t(id) < c.size() && c[size_t(id)].id == id) return &c[size_t(id)];
  for (TokenCandidate& t : c)
    if (t.id == id) return &t;
  return nullptr;
}

}  // namespace

// ---- parameters ------------------------------------------------------------------------------

void SamplerParams::validate(int32_t n_vocab) const {
  if (!(temp >= 0.0f) || !std::isfinite(temp))
    fail("--temp must be >= 0 and finite, got ", fmt(temp));
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("--top-p must be in (0, 1], got ", fmt(top_p));
  if (!(min_p >= 0.0f && min_p <= 1.0f)) fail("--min-p must be in [0, 1], got ", fmt(min_p));
  if (!(typical_p > 0.0f && typical_p <= 1.0f))
    fail("--typical must be in (0, 1], got ", fmt(typical_p));
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty))
    fail("--repeat-penalty must be > 0 and finite, got ", fmt(repeat_penalty));
  if (repeat_last_n < -1)
    fail("--repeat-last-n must be >= -1 (-1 = the whole history, 0 = off), got ",
         std::to_string(repeat_last_n));
  if (!std::isfinite(presence_penalty))
    fail("--presence-penalty must be finite, got ", fmt(presence_penalty));
  if (!std::isfinite(frequency_penalty))
    fail("--frequency-penalty must be finite, got ", fmt(frequency_penalty));
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= n_vocab)
      fail("--logit-bias: token id ", std::to_string(id), " is outside the vocabulary [0, ",
           std::to_string(n_vocab), ")");
    if (std::isnan(bias)) fail("--logit-bias: the bias for token ", std::to_string(id), " is NaN");
  }
}

std::pair<int32_t, float> parse_logit_bias(const std::string& s) {
  const auto bad = [&](const char* why) {
    fail("--logit-bias expects ID+BIAS or ID-BIAS (e.g. 15043+1 or 2-inf), got '", s, "': ", why);
  };
  // ID: decimal digits only (no sign, no spaces).
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') i++;
  if (i == 0) bad("it must start with a token id");
  int32_t id = 0;
  const auto [id_end, id_ec] = std::from_chars(s.data(), s.data() + i, id);
  if (id_ec != std::errc() || id_end != s.data() + i) bad("the token id is too large");
  if (i == s.size() || (s[i] != '+' && s[i] != '-')) bad("a '+' or '-' must follow the id");
  const float sign = s[i] == '-' ? -1.0f : 1.0f;
  const std::string v = s.substr(i + 1);
  // BIAS: an unsigned number or "inf" (from_chars: locale independent, no leading '+').
  if (v.empty() || v[0] == '+' || v[0] == '-') bad("the bias must be an unsigned number or inf");
  float bias = 0;
  const auto [b_end, b_ec] = std::from_chars(v.data(), v.data() + v.size(), bias);
  if (b_ec != std::errc() || b_end != v.data() + v.size() || std::isnan(bias))
    bad("the bias must be an unsigned number or inf");
  return {id, sign * bias};
}

// ---- the stages ------------------------------------------------------------------------------

namespace sampling {

void softmax(std::vector<TokenCandidate>& c) {
  sort_desc(c);
  fill_probs(c);
}

void logit_bias(std::vector<TokenCandidate>& c, std::span<const std::pair<int32_t, float>> bias) {
  for (const auto& [id, b] : bias) {
    TokenCandidate* t = find_id(c, id);
    if (!t) continue;
    t->logit += b;
    if (std::isnan(t->logit)) t->logit = -kInf;  // +inf + -inf: the ban wins
  }
}

void penalties(std::vector<TokenCandidate>& c, std::span<const int32_t> history,
               float repeat_penalty, float presence_penalty, float frequency_penalty) {
  if (history.empty() || c.empty()) return;
  if (repeat_penalty == 1.0f && presence_penalty == 0.0f && frequency_penalty == 0.0f) return;
  // (id, count) of every distinct id in the window: sort a copy and walk its runs.
  std::vector<int32_t> ids(history.begin(), history.end());
  std::sort(ids.begin(), ids.end());
  // Direct indexing when c is still the id-indexed vocabulary; otherwise look each candidate up
  // in the sorted ids (so a reordered list costs O(n log h), not O(n h)).
  bool indexed = true;
  for (int32_t id : ids)
    if (id < 0 || size_t(id) >= c.size() || c[size_t(id)].id != id) indexed = false;
  const auto apply = [&](TokenCandidate& t, size_t count) {
    if (repeat_penalty != 1.0f)
      t.logit = t.logit > 0.0f ? t.logit / repeat_penalty : t.logit * repeat_penalty;
    t.logit -= float(count) * frequency_penalty + presence_penalty;  // count > 0 here
  };
  if (indexed) {
    for (size_t i = 0; i < ids.size();) {
      size_t j = i;
      while (j < ids.size() && ids[j] == ids[i]) j++;
      apply(c[size_t(ids[i])], j - i);
      i = j;
    }
  } else {
    for (TokenCandidate& t : c) {
      const auto [lo, hi] = std::equal_range(ids.begin(), ids.end(), t.id);
      if (lo != hi) apply(t, size_t(hi - lo));
    }
  }
}

void top_k(std::vector<TokenCandidate>& c, int32_t k) {
  if (k <= 0) return;
  if (size_t(k) < c.size()) {
    // One pass with a heap of the k best so far in c[0, k), its worst on top: most of a
    // 50k vocabulary is rejected by a single comparison with that worst.
    const auto first = c.begin(), heap_end = c.begin() + k;
    std::make_heap(first, heap_end, by_logit_desc);
    for (size_t i = size_t(k); i < c.size(); i++) {
      if (!by_logit_desc(c[i], c[0])) continue;
      std::pop_heap(first, heap_end, by_logit_desc);
      *(heap_end - 1) = c[i];
      std::push_heap(first, heap_end, by_logit_desc);
    }
    c.resize(size_t(k));
  }
  sort_desc(c);
}

namespace {
// Orders v by `less` only as far as needed: sorts it chunk by chunk (64, then doubling), each
// chunk selected with nth_element from what is left, and calls done(element) in order until
// it returns true. Returns how many elements were visited. The visited prefix is sorted; the
// rest of v is in no particular order. A sharp distribution touches one chunk, not all of v.
template <typename T, typename Less, typename Done>
size_t sorted_until(std::vector<T>& v, Less less, Done done) {
  size_t from = 0, chunk = 64;
  while (from < v.size()) {
    const size_t to = std::min(v.size(), from + chunk);
    if (to < v.size()) std::nth_element(v.begin() + std::ptrdiff_t(from),
                                        v.begin() + std::ptrdiff_t(to), v.end(), less);
    std::sort(v.begin() + std::ptrdiff_t(from), v.begin() + std::ptrdiff_t(to), less);
    for (size_t i = from; i < to; i++)
      if (done(v[i])) return i + 1;
    from = to;
    chunk *= 2;
  }
  return v.size();
}
}  // namespace

void typical(std::vector<TokenCandidate>& c, float p) {
  if (p >= 1.0f || c.empty()) return;
  fill_probs(c);
  // Entropy of the distribution (0 * log 0 = 0 for the banned -inf candidates).
  double entropy = 0;
  for (const TokenCandidate& t : c)
    if (t.p > 0.0f) entropy -= double(t.p) * std::log(double(t.p));
  // Typicality: how far each token's surprise -log p is from the expected surprise H.
  struct Shift {
    double d;     // |-log p - H|; +inf for p = 0
    int32_t id;   // ties by id, so the order is fully defined
    uint32_t at;  // index in c
  };
  std::vector<Shift> shift(c.size());
  for (size_t i = 0; i < c.size(); i++) {
    const double d = c[i].p > 0.0f ? std::fabs(-std::log(double(c[i].p)) - entropy)
                                   : std::numeric_limits<double>::infinity();
    shift[i] = {d, c[i].id, uint32_t(i)};
  }
  // Keep the most typical tokens until their mass exceeds p (at least one).
  const auto more_typical = [](const Shift& a, const Shift& b) {
    return a.d < b.d || (a.d == b.d && a.id < b.id);
  };
  double cum = 0;
  const size_t keep = sorted_until(shift, more_typical, [&](const Shift& s) {
    return (cum += c[s.at].p) > double(p);
  });
  std::vector<TokenCandidate> out(keep);
  for (size_t i = 0; i < keep; i++) out[i] = c[shift[i].at];
  c.swap(out);  // most typical first, as llama.cpp leaves them
}

void top_p(std::vector<TokenCandidate>& c, float p) {
  if (p >= 1.0f || c.empty()) return;
  fill_probs(c);
  // The shortest prefix of the descending order whose mass reaches p (at least one).
  double cum = 0;
  const size_t keep = sorted_until(c, by_logit_desc, [&](const TokenCandidate& t) {
    return (cum += t.p) >= double(p);
  });
  c.resize(keep);
}

void min_p(std::vector<TokenCandidate>& c, float p) {
  if (p <= 0.0f || c.empty()) return;
  // p_i >= p * p_max  <=>  logit_i >= logit_max + log(p): no softmax, no sort to filter.
  float mx = -kInf;
  for (const TokenCandidate& t : c) mx = std::max(mx, t.logit);
  if (mx == -kInf) {  // every candidate banned: keep them all, draw() decides
    sort_desc(c);
    return;
  }
  const float min_logit = mx + std::log(p);
  // Stable filter; the max itself always passes (log p <= 0), so at least one stays.
  size_t n = 0;
  for (size_t i = 0; i < c.size(); i++)
    if (c[i].logit >= min_logit) c[n++] = c[i];
  c.resize(n);
  sort_desc(c);
}

void temperature(std::vector<TokenCandidate>& c, float t) {
  if (c.empty()) return;
  if (t <= 0.0f) {
    // The limit t -> 0: only the best (lowest id on ties) survives.
    size_t best = 0;
    for (size_t i = 1; i < c.size(); i++)
      if (by_logit_desc(c[i], c[best])) best = i;
    for (size_t i = 0; i < c.size(); i++)
      if (i != best) c[i].logit = -kInf;
    return;
  }
  for (TokenCandidate& x : c) x.logit /= t;
}

int32_t draw(std::vector<TokenCandidate>& c, std::mt19937_64& rng) {
  if (c.empty()) fail("no token candidates left to sample from");
  float mx = -kInf;
  for (const TokenCandidate& t : c) mx = std::max(mx, t.logit);
  if (mx == -kInf) {
    // Every token is banned: there is nothing to draw from, so take the lowest id, as greedy
    // would, without touching the random stream.
    int32_t lo = c[0].id;
    for (const TokenCandidate& t : c) lo = std::min(lo, t.id);
    return lo;
  }
  fill_probs(c);
  // u in [0, 1) from the top 53 bits of one 64-bit draw: the same on every platform, unlike
  // std::uniform_real_distribution whose algorithm the standard leaves open.
  const double u = double(rng() >> 11) * 0x1.0p-53;
  double cum = 0;
  size_t last = 0;  // the last candidate with p > 0: where rounding leaves u past the total
  for (size_t i = 0; i < c.size(); i++) {
    if (c[i].p <= 0.0f) continue;
    cum += c[i].p;
    last = i;
    if (u < cum) return c[i].id;
  }
  return c[last].id;
}

}  // namespace sampling

// ---- Sampler ---------------------------------------------------------------------------------

Sampler::Sampler(const SamplerParams& params, int32_t n_vocab)
    : p_(params), n_vocab_(n_vocab), rng_(params.seed) {
  if (n_vocab <= 0) fail("the sampler needs a vocabulary size > 0, got ", std::to_string(n_vocab));
  p_.validate(n_vocab);
  cand_.reserve(size_t(n_vocab));
}

void Sampler::accept(int32_t id) {
  const int32_t n = p_.repeat_last_n;
  if (n == 0) return;  // penalties see no history
  history_.push_back(id);
  // Trim in batches (amortised O(1) per id) rather than erasing the front every time.
  if (n > 0 && history_.size() >= 2 * size_t(n) + 64)
    history_.erase(history_.begin(), history_.end() - n);
}

void Sampler::accept(std::span<const int32_t> ids) {
  for (int32_t id : ids) accept(id);
}

void Sampler::reset() {
  history_.clear();
  rng_.seed(p_.seed);
}

bool Sampler::plain_greedy() const {
  return p_.temp == 0.0f && p_.logit_bias.empty() && p_.repeat_penalty == 1.0f &&
         p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f;
}

int32_t Sampler::sample(std::span<const float> logits, int32_t banned) {
  const size_t V = size_t(n_vocab_);
  if (logits.size() < V)
    fail("sampler: got ", std::to_string(logits.size()), " logits for a vocabulary of ",
         std::to_string(n_vocab_));
  if (banned >= n_vocab_)
    fail("sampler: banned id ", std::to_string(banned), " is outside the vocabulary [0, ",
         std::to_string(n_vocab_), ")");
  if (banned < 0) banned = -1;
  logits = logits.first(V);
  // The penalty window: the last repeat_last_n accepted ids (all of them for -1).
  std::span<const int32_t> window(history_);
  if (p_.repeat_last_n >= 0 && window.size() > size_t(p_.repeat_last_n))
    window = window.last(size_t(p_.repeat_last_n));
  if (p_.temp == 0.0f) return greedy(logits, window, banned);
  const bool direct =
      p_.top_k > 0 && size_t(p_.top_k) < V && top_k_from_row(logits, window, banned);
  if (!direct) {
    cand_.resize(V);
    for (size_t i = 0; i < V; i++) {
      const float l = logits[i];
      cand_[i] = {int32_t(i), std::isnan(l) ? -kInf : l, 0.0f};  // a NaN logit is never picked
    }
    if (banned >= 0) cand_[size_t(banned)].logit = -kInf;
    sampling::logit_bias(cand_, p_.logit_bias);
    sampling::penalties(cand_, window, p_.repeat_penalty, p_.presence_penalty,
                        p_.frequency_penalty);
    sampling::top_k(cand_, p_.top_k);
  }
  sampling::typical(cand_, p_.typical_p);
  sampling::top_p(cand_, p_.top_p);
  sampling::min_p(cand_, p_.min_p);
  sampling::temperature(cand_, p_.temp);
  return sampling::draw(cand_, rng_);
}

namespace {

// fn(begin, end) for each run of ids in [0, V) between the touched ones (sorted by id, unique,
// inside [0, V)), in id order.
template <typename Fn>
void for_untouched(size_t V, std::span<const TokenCandidate> touched, Fn fn) {
  size_t from = 0;
  for (const TokenCandidate& t : touched) {
    if (size_t(t.id) > from) fn(from, size_t(t.id));
    from = size_t(t.id) + 1;
  }
  if (from < V) fn(from, V);
}

// Bit j set where x[j] > t, over x[0, kBlock) (a NaN never is): vector compares where the CPU
// has them. The scans below pass over most blocks of a row on this test alone and visit only
// the set bits of the others.
constexpr size_t kBlock = 64;
uint64_t above_mask(const float* x, float t) {
  uint64_t mask = 0;
#if defined(__AVX__)
  const __m256 vt = _mm256_set1_ps(t);
  for (size_t i = 0; i < kBlock; i += 8)
    mask |= uint64_t(uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), vt,
                                                                _CMP_GT_OQ))))
            << i;
#else
  for (size_t i = 0; i < kBlock; i++) mask |= uint64_t(x[i] > t) << i;
#endif
  return mask;
}

// Calls fn(i) in increasing order for every i in [begin, end) with x[i] > bound(), where
// bound() may only grow as fn runs: the same calls as testing every i in turn, since an x[i]
// not above an earlier bound is not above a later one.
template <typename Bound, typename Fn>
void for_each_above(const float* x, size_t begin, size_t end, Bound bound, Fn fn) {
  size_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    for (uint64_t m = above_mask(x + i, bound()); m != 0; m &= m - 1) {
      const size_t at = i + size_t(std::countr_zero(m));
      if (x[at] > bound()) fn(at);
    }
  }
  for (; i < end; i++)
    if (x[i] > bound()) fn(i);
}

// Over x[begin, end), in order: a value strictly larger than best_logit becomes the best (so
// ties keep the lowest index; NaN never wins).
void argmax_run(const float* x, size_t begin, size_t end, float& best_logit, size_t& best) {
  for_each_above(x, begin, end, [&] { return best_logit; }, [&](size_t i) {
    best_logit = x[i];
    best = i;
  });
}

}  // namespace

int32_t greedy_argmax(std::span<const float> row, int32_t banned) {
  // Index 0 starts as the best, then strictly larger values win: ties keep the lowest id.
  size_t best = 0;
  float best_logit = -kInf;
  const size_t ban = banned >= 0 ? size_t(banned) : row.size();
  argmax_run(row.data(), 0, std::min(ban, row.size()), best_logit, best);
  if (ban < row.size()) argmax_run(row.data(), ban + 1, row.size(), best_logit, best);
  return int32_t(best);
}

// The ids whose logits the biases, the penalties and the ban change, with those adjusted
// logits, into touched_ (sorted by id). They go through the same stage functions as in the
// full chain, so each gets the same value it would get there.
void Sampler::adjust_touched(std::span<const float> logits, std::span<const int32_t> window,
                             int32_t banned) {
  const size_t V = logits.size();
  touched_.clear();
  if (banned >= 0) touched_.push_back({banned, 0.0f, 0.0f});
  for (const auto& [id, b] : p_.logit_bias) touched_.push_back({id, 0.0f, 0.0f});
  const bool penalise = p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f ||
                        p_.frequency_penalty != 0.0f;
  if (penalise)
    for (int32_t id : window) touched_.push_back({id, 0.0f, 0.0f});
  std::sort(touched_.begin(), touched_.end(),
            [](const TokenCandidate& a, const TokenCandidate& b) { return a.id < b.id; });
  touched_.erase(std::unique(touched_.begin(), touched_.end(),
                             [](const TokenCandidate& a, const TokenCandidate& b) {
                               return a.id == b.id;
                             }),
                 touched_.end());
  std::erase_if(touched_, [&](const TokenCandidate& t) { return t.id < 0 || size_t(t.id) >= V; });
  for (TokenCandidate& t : touched_) {
    const float l = t.id == banned ? -kInf : logits[size_t(t.id)];
    t.logit = std::isnan(l) ? -kInf : l;
  }
  sampling::logit_bias(touched_, p_.logit_bias);
  if (penalise)
    sampling::penalties(touched_, window, p_.repeat_penalty, p_.presence_penalty,
                        p_.frequency_penalty);
}

// Greedy without building the candidate list: the touched ids get their adjusted logits, and
// one pass over the raw row finds the best of the rest. The result is the same as the full
// chain's (the largest adjusted logit, the lowest id on ties, NaN never chosen); a batch of
// sequences picks its tokens every step, so this pass is what the host spends per sequence.
int32_t Sampler::greedy(std::span<const float> logits, std::span<const int32_t> window,
                        int32_t banned) {
  adjust_touched(logits, window, banned);
  // The untouched ids: index 0 starts as the best (as in the full scan, where an all -inf
  // row gives 0), then strictly larger logits win, so ties keep the lowest id.
  size_t best = 0;
  float best_logit = -kInf;
  for_untouched(logits.size(), touched_, [&](size_t begin, size_t end) {
    argmax_run(logits.data(), begin, end, best_logit, best);
  });
  for (const TokenCandidate& t : touched_) {
    if (t.logit > best_logit || (t.logit == best_logit && size_t(t.id) < best)) {
      best_logit = t.logit;
      best = size_t(t.id);
    }
  }
  return int32_t(best);
}

// Bias, penalties and top_k (0 < k < n_vocab) straight from the row into cand_, without the
// n_vocab candidate list: the touched ids are adjusted apart, and one pass over the raw row
// keeps the k best of the rest in a heap, as sampling::top_k does. With no NaN among the
// adjusted logits the order is total, so the k kept and their sorted order are exactly the
// full chain's. A NaN (a penalty of inf - inf) breaks that; then this returns false and the
// caller runs the full chain.
bool Sampler::top_k_from_row(std::span<const float> logits, std::span<const int32_t> window,
                             int32_t banned) {
  adjust_touched(logits, window, banned);
  for (const TokenCandidate& t : touched_)
    if (std::isnan(t.logit)) return false;
  const size_t k = size_t(p_.top_k);
  cand_.clear();
  // The heap of the k best so far in cand_, its worst on top; worst = cand_[0].logit once full.
  float worst = -kInf;
  const auto better = [](const TokenCandidate& a, const TokenCandidate& b) {
    return by_logit_desc(a, b);  // a lambda, so the heap operations inline it
  };
  const auto offer = [&](const TokenCandidate& t) {
    if (cand_.size() < k) {
      cand_.push_back(t);
      if (cand_.size() == k) {
        std::make_heap(cand_.begin(), cand_.end(), better);
        worst = cand_[0].logit;
      }
      return;
    }
    if (!better(t, cand_[0])) return;
    // t replaces the worst: one sift down from the top (a std::pop_heap and push_heap pair
    // would sift twice). The heap's layout differs from theirs, the set it holds does not.
    size_t i = 0;
    for (size_t c = 1; c < k; c = 2 * i + 1) {
      if (c + 1 < k && better(cand_[c], cand_[c + 1])) c++;  // the worse child
      if (!better(t, cand_[c])) break;
      cand_[i] = cand_[c];
      i = c;
    }
    cand_[i] = t;
    worst = cand_[0].logit;
  };
  const float* x = logits.data();
  const auto at = [&](size_t i) {
    return TokenCandidate{int32_t(i), std::isnan(x[i]) ? -kInf : x[i], 0.0f};
  };
  for_untouched(logits.size(), touched_, [&](size_t begin, size_t end) {
    size_t i = begin;
    for (; i < end && cand_.size() < k; i++) offer(at(i));
    // The heap holds only ids scanned before i (the touched ones come last), so id i beats
    // its worst exactly when its logit is larger (a NaN, read as -inf, never is).
    for_each_above(x, i, end, [&] { return worst; }, [&](size_t j) { offer(at(j)); });
  });
  for (const TokenCandidate& t : touched_) offer(t);
  sort_desc(cand_);
  return true;
}

}  // namespace mamba
