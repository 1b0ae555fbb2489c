// The interface every compute backend implements (cpu/ here, the CUDA one under cuda/).
//
// A backend owns the weights it computes with and a fixed number of state slots. A slot is
// the whole recurrent state of one sequence: per layer a conv state (d_conv - 1, conv_dim)
// and an SSM state (d_inner, d_state), all float32. Nothing grows with the sequence length.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"

namespace mamba {

class Model;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;

  // ---- state slots ----
  virtual int n_slots() const = 0;
  virtual void reset_slot(int slot) = 0;              // zero state: an empty sequence
  virtual void copy_slot(int src, int dst) = 0;
  virtual uint64_t state_bytes() const = 0;           // per slot
  // Serialised state: exactly state_bytes() bytes, float32 little-endian, conv then ssm.
  virtual void save_slot(int slot, std::vector<uint8_t>& out) = 0;
  virtual void load_slot(int slot, std::span<const uint8_t> in) = 0;

  // ---- compute ----
  // Runs `tokens` through the model, continuing the state in `slot` (prefill of a prompt or
  // of its remainder). Writes logits over the full padded vocab: every position
  // (n_tokens, n_vocab) when all_logits, else the last position only (1, n_vocab).
  virtual void prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
                       std::vector<float>& logits) = 0;
  // Several prompts at once, prompts[i] continuing the state in slots[i] (all distinct):
  // exactly what prefill(slots[i], prompts[i], false, ...) one after another would compute,
  // bit for bit. last_logits: (n, n_vocab), row i the last position of prompts[i]. A backend
  // may run short prompts through one forward pass, reading the weights once for all of them;
  // this default calls prefill() for each.
  virtual void prefill_batch(std::span<const int> slots,
                             std::span<const std::span<const int32_t>> prompts,
                             std::vector<float>& last_logits);
  // One recurrent step for each (slots[i], tokens[i]); logits (n, n_vocab).
  virtual void decode(std::span<const int> slots, std::span<const int32_t> tokens,
                      std::vector<float>& logits) = 0;
  // The same step, returning a view of the logits (n, n_vocab) in the backend's own memory,
  // valid until the next call on this backend. A batch of 64 sequences over a 50k vocabulary
  // is 13 MB of logits per step: the CUDA backend hands out its page-locked staging buffer
  // instead of copying it once more.
  virtual std::span<const float> decode_view(std::span<const int> slots,
                                             std::span<const int32_t> tokens);
  // The same step for rows that pick their next token greedily with nothing adjusted but at
  // most one banned id (what Sampler::plain_greedy says): ids[i] = greedy_argmax(row i,
  // banned[i]) (engine/sampler.h). The logits need not reach the host, which at 64 rows of a 50k vocabulary is a
  // 13 MB copy per step. A view valid until the next call on this backend; this default picks
  // from decode_view's logits.
  virtual std::span<const int32_t> decode_greedy(std::span<const int> slots,
                                                 std::span<const int32_t> tokens,
                                                 std::span<const int32_t> banned);
  // Whether decode_greedy picks where the logits are computed, without copying them to the
  // host. Where it does not (this default), decode_greedy is decode_view plus one pass over
  // the rows on the calling thread, and the scheduler picks on its own threads instead.
  virtual bool picks_on_device() const { return false; }

 protected:
  // Throws mamba::Error unless the slot exists.
  void check_slot(int slot) const;
  // Throws mamba::Error unless every token is inside the vocabulary.
  void check_tokens(std::span<const int32_t> tokens) const;
  // prefill()'s arguments: the slot exists, the prompt is not empty, its ids are in the
  // vocabulary.
  void check_prefill(int slot, std::span<const int32_t> tokens) const;
  // Throws mamba::Error unless there is one slot per token, every slot exists and appears once,
  // and every token is inside the vocabulary.
  void check_decode(std::span<const int> slots, std::span<const int32_t> tokens) const;
  // Throws mamba::Error unless there is one slot per prompt, every slot exists and appears
  // once, no prompt is empty, and every id is inside the vocabulary.
  void check_prefill_batch(std::span<const int> slots,
                           std::span<const std::span<const int32_t>> prompts) const;
  // Throws mamba::Error unless every slot exists and appears once (`call` names the caller).
  void check_distinct_slots(std::span<const int> slots, const char* call) const;
  // Throws mamba::Error unless there is one banned id per token, each -1 or inside the
  // vocabulary.
  void check_banned(std::span<const int32_t> tokens, std::span<const int32_t> banned) const;

 private:
  std::vector<float> view_;     // decode_view()'s logits where a backend has no buffer of its own
  std::vector<int32_t> picks_;  // decode_greedy()'s ids, likewise
};

struct BackendOptions {
  std::string device = "cpu";  // "cpu" | "cuda"
  int n_threads = 0;           // CPU threads; 0 = all cores
  int n_slots = 1;
};

// Creates the backend named in opts.device for a loaded model. Throws mamba::Error when the
// device is unknown or not built in.
std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opts);

}  // namespace mamba
