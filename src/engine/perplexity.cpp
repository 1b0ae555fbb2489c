#include "engine/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"

namespace mamba {

double token_nll(std::span<const float> logits, int32_t target) {
  double mx = -INFINITY;
  for (float v : logits) mx = std::max(mx, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - mx);
  return mx + std::log(sum) - double(logits[size_t(target)]);
}

PerplexityResult perplexity(Backend& be, std::span<const int32_t> ids, const PerplexityOptions& o) {
  if (o.ctx < 1) fail("the chunk length must be at least 1, got ", o.ctx);
  if (o.max_chunks < 0) fail("the chunk limit must be >= 0, got ", o.max_chunks);
  const bool bos = o.bos_id >= 0;
  if (ids.empty() || (ids.size() < 2 && !bos)) fail("the text has too few tokens to score");
  const int64_t V = be.config().n_vocab;
  if (bos && o.bos_id >= V) fail("BOS id ", o.bos_id, " is out of range (n_vocab = ", V, ")");
  for (int32_t id : ids)
    if (id < 0 || id >= V) fail("token id ", id, " is out of range (n_vocab = ", V, ")");

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  PerplexityResult r;
  double sum = 0, sum_sq = 0;
  std::vector<int32_t> input;
  std::vector<float> logits;
  const size_t ctx = size_t(o.ctx);
  for (size_t begin = 0; begin < ids.size(); begin += ctx) {
    if (o.max_chunks > 0 && r.n_chunks == size_t(o.max_chunks)) break;
    const auto chunk = ids.subspan(begin, std::min(ctx, ids.size() - begin));
    input.clear();
    if (bos) input.push_back(o.bos_id);
    input.insert(input.end(), chunk.begin(), chunk.end());
    if (input.size() < 2) break;  // a last chunk of one id without BOS predicts nothing

    be.reset_slot(o.slot);
    be.prefill(o.slot, input, /*all_logits=*/true, logits);
    double chunk_sum = 0;
    for (size_t i = 0; i + 1 < input.size(); i++) {
      const std::span<const float> row(logits.data() + i * size_t(V), size_t(V));
      const double nll = token_nll(row, input[i + 1]);
      chunk_sum += nll;
      sum_sq += nll * nll;
    }
    const size_t n = input.size() - 1;
    sum += chunk_sum;
    r.n_scored += n;
    r.chunk_nll.push_back(chunk_sum / double(n));
    if (o.on_chunk) o.on_chunk(int(r.n_chunks), chunk_sum / double(n), std::exp(sum / r.n_scored));
    r.n_chunks++;
  }
  const double n = double(r.n_scored);
  r.nll = sum / n;
  r.ppl = std::exp(r.nll);
  const double var = n > 1 ? std::max(0.0, (sum_sq - n * r.nll * r.nll) / (n - 1)) : 0.0;
  r.nll_stderr = std::sqrt(var / n);
  r.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return r;
}

}  // namespace mamba
