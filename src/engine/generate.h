// The generation loop over a Backend for one sequence: prefill the prompt (or the part of it
// not yet in the state), then pick a token with the Sampler, feed it back, repeat.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"

namespace mamba {

class Tokenizer;

struct GenerateOptions {
  int n_predict = 16;          // tokens to generate (0 is valid: prefill only)
  int32_t eos_id = -1;         // generation stops after this token (-1: none)
  bool ignore_eos = false;     // never pick eos_id (its logit is set to -inf) and run n_predict
  bool prompt_logits = false;  // keep the logits of every prompt position
  // false: reset the slot first, the prompt is the whole sequence. true: the prompt continues
  // the sequence already in the slot (an interactive turn, a prompt-cache hit); it may then be
  // empty when the slot's last logits are passed in `last_logits`.
  bool continue_state = false;
  std::span<const float> last_logits;  // (n_vocab) logits after the slot's state, for an empty prompt
  // Text output. Needs `tokenizer`. Generated text streams to on_text in UTF-8-safe pieces;
  // with stop strings, text that may begin one is held back and a complete one ends
  // generation (finish_reason "stop") without being shown.
  const Tokenizer* tokenizer = nullptr;
  std::vector<std::string> stop;
  std::function<void(std::string_view text)> on_text;
  std::function<void(int32_t id)> on_token;  // each id as it is picked
  // Polled once per token; when it reads true generation ends with finish_reason "cancelled".
  const std::atomic<bool>* cancel = nullptr;
};

struct GenerateResult {
  std::vector<int32_t> ids;          // generated ids (an EOS that ended generation included)
  std::string text;                  // generated text, stop string removed (with a tokenizer)
  std::string finish_reason;         // "length", "eos", "stop" or "cancelled"
  double prompt_ms = 0;              // prefill time
  double predict_ms = 0;             // picking tokens and the decode steps
  int n_prompt = 0;                  // tokens prefilled
  int n_decode = 0;                  // decode steps inside predict_ms
  std::vector<float> prompt_logits;  // (n_prompt, n_vocab) when asked for
  std::vector<float> last_logits;    // (n_vocab) logits after the final state, when it was fed
};

// Generates into `slot`. Every prompt id and generated id goes into the sampler's history.
// Every generated token except a final EOS is fed back, so the slot's state afterwards covers
// the prompt and all generated tokens (a stop string's tokens included), and last_logits are
// the logits for whatever comes next.
GenerateResult generate(Backend& be, int slot, std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& o);

// Index of the largest logit; the lowest such index on ties.
int32_t argmax(std::span<const float> logits);

}  // namespace mamba
