#include "engine/generate.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace mamba {

int32_t argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); i++)
    if (logits[i] > logits[size_t(best)]) best = int32_t(i);
  return best;
}

int32_t sample(std::span<const float> logits, float temp, std::mt19937_64& rng) {
  const float mx = logits[size_t(argmax(logits))];
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); i++) sum += p[i] = std::exp(double(logits[i] - mx) / temp);
  double u = std::uniform_real_distribution<double>(0.0, sum)(rng);
  for (size_t i = 0; i < p.size(); i++) {
    if (u < p[i]) return int32_t(i);
    u -= p[i];
  }
  return argmax(logits);  // u landed on the rounding error at the end
}

GenerateResult generate(Backend& be, int slot, std::span<const int32_t> prompt,
                        const GenerateOptions& o) {
  using clock = std::chrono::steady_clock;
  const auto ms = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  if (prompt.empty()) fail("the prompt is empty");
  if (o.n_predict < 0) fail("n_predict must be >= 0");
  if (!(o.temp >= 0)) fail("temperature must be >= 0");
  const size_t V = size_t(be.config().n_vocab);
  GenerateResult r;
  std::mt19937_64 rng(o.seed);

  be.reset_slot(slot);
  const auto t0 = clock::now();
  std::vector<float> logits;
  be.prefill(slot, prompt, o.prompt_logits, logits);
  const auto t1 = clock::now();
  r.prompt_ms = ms(t0, t1);
  if (o.prompt_logits) r.prompt_logits = logits;
  std::vector<float> last(logits.end() - std::ptrdiff_t(V), logits.end());

  r.finish_reason = "length";
  const int slots[1] = {slot};
  for (int i = 0; i < o.n_predict; i++) {
    if (o.ignore_eos && o.eos_id >= 0)
      last[size_t(o.eos_id)] = -std::numeric_limits<float>::infinity();
    const int32_t id = o.temp == 0.0f ? argmax(last) : sample(last, o.temp, rng);
    r.ids.push_back(id);
    if (o.on_token) o.on_token(id);
    if (!o.ignore_eos && id == o.eos_id) {
      r.finish_reason = "eos";
      break;
    }
    be.decode(slots, std::span<const int32_t>(&id, 1), last);
    r.n_decode++;
  }
  r.predict_ms = ms(t1, clock::now());
  return r;
}

}  // namespace mamba
