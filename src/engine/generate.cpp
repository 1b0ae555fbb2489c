#include "engine/generate.h"

#include <chrono>
#include <limits>
#include <memory>

#include "common/error.h"
#include "engine/stop.h"
#include "tokenizer/stream_decoder.h"

namespace mamba {

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); i++)
    if (logits[i] > logits[size_t(best)]) best = int32_t(i);
  return best;
}

GenerateResult generate(Backend& be, int slot, std::span<const int32_t> prompt, Sampler& sampler,
                        const GenerateOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const size_t V = size_t(be.config().n_vocab);
  if (o.n_predict < 0) fail("n_predict must be >= 0");
  if (prompt.empty() && !(o.continue_state && o.last_logits.size() >= V))
    fail("the prompt is empty");
  if (!o.stop.empty() && !o.tokenizer) fail("stop strings need the model's tokenizer");
  if (o.ignore_eos && o.eos_id >= 0 && size_t(o.eos_id) >= V) fail("eos id out of range");
  GenerateResult r;
  r.n_prompt = int(prompt.size());

  // Text is produced only with a tokenizer: ids -> UTF-8-safe pieces -> stop-string filter.
  std::unique_ptr<StreamDecoder> text;
  StopMatcher stop(o.stop);
  if (o.tokenizer) text = std::make_unique<StreamDecoder>(*o.tokenizer, false, /*text_start=*/false);
  const auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    r.text += piece;
    if (o.on_text) o.on_text(piece);
  };

  if (!o.continue_state) be.reset_slot(slot);
  sampler.accept(prompt);
  const auto t0 = clock::now();
  std::vector<float> last;
  if (!prompt.empty()) {
    std::vector<float> logits;
    be.prefill(slot, prompt, o.prompt_logits, logits);
    if (o.prompt_logits) r.prompt_logits = logits;
    last.assign(logits.end() - std::ptrdiff_t(V), logits.end());
  } else {
    last.assign(o.last_logits.begin(), o.last_logits.begin() + std::ptrdiff_t(V));
  }
  const auto t1 = clock::now();
  r.prompt_ms = ms(t0, t1);

  r.finish_reason = "length";
  const int slots[1] = {slot};
  bool fed = true;  // `last` holds the logits after the slot's current state
  for (int i = 0; i < o.n_predict; i++) {
    if (o.cancel && o.cancel->load()) {
      r.finish_reason = "cancelled";
      break;
    }
    if (o.ignore_eos && o.eos_id >= 0)
      last[size_t(o.eos_id)] = -std::numeric_limits<float>::infinity();
    const int32_t id = sampler.sample(last);
    sampler.accept(id);
    r.ids.push_back(id);
    if (o.on_token) o.on_token(id);
    if (!o.ignore_eos && id == o.eos_id) {
      r.finish_reason = "eos";
      fed = false;
      break;
    }
    // The token goes into the state even when it completes a stop string, so that the state
    // always covers every id in r.ids except a final EOS.
    be.decode(slots, std::span<const int32_t>(&id, 1), last);
    r.n_decode++;
    if (text) {
      emit(stop.feed(text->feed(id)));
      if (stop.stopped()) {
        r.finish_reason = "stop";
        break;
      }
    }
  }
  if (text && !stop.stopped()) emit(stop.feed(text->finish()) + stop.finish());
  if (fed) r.last_logits = std::move(last);
  r.predict_ms = ms(t1, clock::now());
  return r;
}

}  // namespace mamba
