// A minimal generation loop over a Backend: prefill the prompt, then pick and feed back one
// token at a time. Greedy by default; temperature sampling when asked.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace mamba {

struct GenerateOptions {
  int n_predict = 16;          // tokens to generate (0 is valid: prefill only)
  float temp = 0.0f;           // 0: greedy (argmax); > 0: sample from softmax(logits / temp)
  uint64_t seed = 0;           // for sampling
  int32_t eos_id = -1;         // generation stops after this token (-1: none)
  bool ignore_eos = false;     // never pick eos_id (its logit is set to -inf) and run n_predict
  bool prompt_logits = false;  // keep the logits of every prompt position
  std::function<void(int32_t id)> on_token;  // called with each token as it is picked
};

struct GenerateResult {
  std::vector<int32_t> ids;          // generated ids (an EOS that ended generation included)
  std::string finish_reason;         // "length" or "eos"
  double prompt_ms = 0;              // prefill time
  double predict_ms = 0;             // picking tokens and the decode steps
  int n_decode = 0;                  // decode steps inside predict_ms
  std::vector<float> prompt_logits;  // (n_prompt, n_vocab) when asked for
};

// Resets `slot` and generates. Every generated token except a final EOS is fed back, so the
// slot's state afterwards covers the prompt and all generated tokens.
GenerateResult generate(Backend& be, int slot, std::span<const int32_t> prompt,
                        const GenerateOptions& o);

// Index of the largest logit; the lowest such index on ties.
int32_t argmax(std::span<const float> logits);
// A draw from softmax(logits / temp).
int32_t sample(std::span<const float> logits, float temp, std::mt19937_64& rng);

}  // namespace mamba
