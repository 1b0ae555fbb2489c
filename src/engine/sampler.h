// Token sampling as a chain of stages, in llama.cpp's order and with its names:
//
//   logit_bias -> penalties (repeat, presence, frequency) -> top_k -> typical -> top_p -> min_p
//   -> temperature -> draw
//
// temp == 0 is greedy: the biases and penalties still apply, then the largest logit wins
// (lowest id on ties) and no random number is drawn. temp > 0 runs every stage and draws from
// what is left. Each sequence owns one Sampler: its own random stream (seeded from
// SamplerParams::seed) and its own penalty history, so a sequence samples the same tokens
// whatever else runs beside it.
//
// A batch samples every sequence every step, so greedy and top_k (the default, 40) do not build
// the n_vocab candidate list: the few ids the biases and penalties change are adjusted apart
// and one vectorised pass over the raw row does the rest, with exactly the full chain's result.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace mamba {

struct SamplerParams {
  float temp = 0.0f;              // --temp: 0 = greedy
  int32_t top_k = 40;             // --top-k: keep the k most likely; <= 0 = off
  float top_p = 0.95f;            // --top-p: smallest set with mass >= p; 1 = off
  float min_p = 0.05f;            // --min-p: drop p < min_p * p_max; 0 = off
  float typical_p = 1.0f;         // --typical: locally typical sampling; 1 = off
  float repeat_penalty = 1.0f;    // --repeat-penalty: logit/penalty if > 0 else *penalty; 1 = off
  int32_t repeat_last_n = 64;     // --repeat-last-n: history the penalties see; 0 = off, -1 = all
  float presence_penalty = 0.0f;  // --presence-penalty: minus this once if the id occurred
  float frequency_penalty = 0.0f; // --frequency-penalty: minus this times its count
  std::vector<std::pair<int32_t, float>> logit_bias;  // --logit-bias ID(+|-)BIAS, added first
  uint64_t seed = 0;              // -s/--seed

  // Throws mamba::Error naming the flag when a value is out of range (negative temp, top_p
  // outside (0, 1], a bias id outside [0, n_vocab), NaN, ...).
  void validate(int32_t n_vocab) const;
};

// "ID+BIAS" / "ID-BIAS" (e.g. "15043+1", "2-inf") as llama.cpp's --logit-bias; throws
// mamba::Error with the expected form when malformed.
std::pair<int32_t, float> parse_logit_bias(const std::string& s);

// The candidate list the stages work on: one entry per token still in the running.
struct TokenCandidate {
  int32_t id;
  float logit;
  float p;  // probability, valid after softmax()
};

namespace sampling {
// Each stage, exposed for tests. They follow llama.cpp's semantics: a stage never removes the
// last candidate (min_keep = 1). top_k, top_p and min_p leave the kept candidates sorted by
// logit, descending; typical leaves them most typical first (llama.cpp's order). Every order is
// total (equal logits by ascending id), so results do not depend on the standard library.
// A -inf logit has p = 0 and is never drawn; +inf logits share all the mass.
void softmax(std::vector<TokenCandidate>& c);  // sorts descending (ties by id) and fills p
void logit_bias(std::vector<TokenCandidate>& c, std::span<const std::pair<int32_t, float>> bias);
// history: the last ids seen (prompt and generated), oldest first, already cut to
// repeat_last_n by the caller.
void penalties(std::vector<TokenCandidate>& c, std::span<const int32_t> history,
               float repeat_penalty, float presence_penalty, float frequency_penalty);
void top_k(std::vector<TokenCandidate>& c, int32_t k);
void typical(std::vector<TokenCandidate>& c, float p);
void top_p(std::vector<TokenCandidate>& c, float p);
void min_p(std::vector<TokenCandidate>& c, float p);
void temperature(std::vector<TokenCandidate>& c, float t);
// Draws one candidate from softmax(logits), walking the candidates in their current order with
// u = (rng() >> 11) * 2^-53 in [0, 1). Fills p, does not reorder. When every logit is -inf it
// returns the lowest id and leaves rng untouched.
int32_t draw(std::vector<TokenCandidate>& c, std::mt19937_64& rng);
}  // namespace sampling

// The greedy pick of one row of logits: the index of the largest value, the lowest on ties,
// never a NaN and never `banned` (when >= 0), and 0 when no value is above -inf. What
// Sampler::sample picks at temperature 0 with no bias and no penalties (plain_greedy), by the
// same scan; a backend that picks on the device (Backend::decode_greedy) must give the same.
int32_t greedy_argmax(std::span<const float> row, int32_t banned);

class Sampler {
 public:
  Sampler(const SamplerParams& params, int32_t n_vocab);  // validates params

  // Runs the chain over one row of logits (at least n_vocab values; extra padded columns are
  // ignored) and returns the chosen id. Does not record it: call accept() for that. A NaN
  // logit counts as -inf; when every logit is -inf the lowest id is returned.
  // `banned` (-1: none) is an id whose logit counts as -inf before any stage, exactly as if
  // the row held -inf there (ignore_eos), so a caller need not copy a row it does not own.
  int32_t sample(std::span<const float> logits, int32_t banned = -1);
  // Records an id in the penalty history: every prompt id and every generated id.
  void accept(int32_t id);
  void accept(std::span<const int32_t> ids);
  // Clears the history and restarts the random stream from the seed.
  void reset();

  const SamplerParams& params() const { return p_; }
  // Whether sample(row, banned) is greedy_argmax(row, banned): temperature 0, no
  // bias, no penalties. A batch of such sequences can pick on the device
  // (Backend::decode_greedy) and accept() the ids.
  bool plain_greedy() const;

 private:
  void adjust_touched(std::span<const float> logits, std::span<const int32_t> window,
                      int32_t banned);
  int32_t greedy(std::span<const float> logits, std::span<const int32_t> window, int32_t banned);
  bool top_k_from_row(std::span<const float> logits, std::span<const int32_t> window,
                      int32_t banned);

  SamplerParams p_;
  int32_t n_vocab_;
  std::mt19937_64 rng_;
  // Accepted ids, oldest first: the penalty window is its last repeat_last_n (all for -1;
  // nothing is kept for 0). Trimmed in batches, so it holds up to 2 * repeat_last_n + 64.
  std::vector<int32_t> history_;
  std::vector<TokenCandidate> cand_;  // (n_vocab, or top_k) scratch candidate list, reused
  // Scratch: the ids the biases, penalties and the ban change, sorted by id, with their
  // adjusted logits (greedy and top_k straight from the row).
  std::vector<TokenCandidate> touched_;
};

}  // namespace mamba
