#include "backend/backend.h"

#include <algorithm>

#include "backend/cpu/cpu_backend.h"
#include "common/error.h"
#include "engine/sampler.h"
#ifdef MAMBA_HAVE_CUDA
#include "cuda_backend.h"
#endif

namespace mamba {

std::span<const float> Backend::decode_view(std::span<const int> slots,
                                           std::span<const int32_t> tokens) {
  decode(slots, tokens, view_);
  return view_;
}

std::span<const int32_t> Backend::decode_greedy(std::span<const int> slots,
                                                std::span<const int32_t> tokens,
                                                std::span<const int32_t> banned) {
  check_banned(tokens, banned);
  const std::span<const float> logits = decode_view(slots, tokens);
  const size_t V = size_t(config().n_vocab);
  picks_.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); i++)
    picks_[i] = greedy_argmax(logits.subspan(i * V, V), banned[i]);
  return picks_;
}

void Backend::check_banned(std::span<const int32_t> tokens,
                           std::span<const int32_t> banned) const {
  if (banned.size() != tokens.size())
    fail("decode_greedy got ", tokens.size(), " tokens but ", banned.size(), " banned ids");
  for (int32_t id : banned)
    if (id < -1 || id >= config().n_vocab)
      fail("banned id ", id, " is out of range (n_vocab = ", config().n_vocab, ")");
}

void Backend::prefill_batch(std::span<const int> slots,
                            std::span<const std::span<const int32_t>> prompts,
                            std::vector<float>& last_logits) {
  check_prefill_batch(slots, prompts);
  const size_t V = size_t(config().n_vocab);
  last_logits.resize(prompts.size() * V);
  std::vector<float> one;
  for (size_t i = 0; i < prompts.size(); i++) {
    prefill(slots[i], prompts[i], /*all_logits=*/false, one);
    std::copy(one.begin(), one.begin() + std::ptrdiff_t(V),
              last_logits.begin() + std::ptrdiff_t(i * V));
  }
}

void Backend::check_prefill_batch(std::span<const int> slots,
                                  std::span<const std::span<const int32_t>> prompts) const {
  if (slots.size() != prompts.size())
    fail("prefill_batch got ", slots.size(), " slots but ", prompts.size(), " prompts");
  check_distinct_slots(slots, "prefill_batch");
  for (const auto& p : prompts) {
    if (p.empty()) fail("prefill needs at least one token");
    check_tokens(p);
  }
}

void Backend::check_distinct_slots(std::span<const int> slots, const char* call) const {
  const int n = n_slots();
  std::vector<bool> seen(size_t(n), false);
  for (int slot : slots) {
    if (slot < 0 || slot >= n) fail("slot ", slot, " is out of range (n_slots = ", n, ")");
    if (seen[size_t(slot)]) fail("slot ", slot, " appears twice in one ", call, " call");
    seen[size_t(slot)] = true;
  }
}

void Backend::check_slot(int slot) const {
  if (slot < 0 || slot >= n_slots())
    fail("slot ", slot, " is out of range (n_slots = ", n_slots(), ")");
}

void Backend::check_tokens(std::span<const int32_t> tokens) const {
  const int64_t V = config().n_vocab;
  for (int32_t id : tokens)
    if (id < 0 || id >= V) fail("token id ", id, " is out of range (n_vocab = ", V, ")");
}

void Backend::check_prefill(int slot, std::span<const int32_t> tokens) const {
  check_slot(slot);
  check_tokens(tokens);
  if (tokens.empty()) fail("prefill needs at least one token");
}

void Backend::check_decode(std::span<const int> slots, std::span<const int32_t> tokens) const {
  if (slots.size() != tokens.size())
    fail("decode got ", slots.size(), " slots but ", tokens.size(), " tokens");
  check_tokens(tokens);
  check_distinct_slots(slots, "decode");
}

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opts) {
  if (opts.device == "cpu")
    return std::make_unique<cpu::CpuBackend>(model, opts.n_threads, opts.n_slots);
#ifdef MAMBA_HAVE_CUDA
  if (opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0)
    return make_cuda_backend(model, opts);
#else
  if (opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0)
    fail("the CUDA backend is not available in this build");
#endif
  fail("unknown device '", opts.device, "' (expected cpu or cuda)");
}

}  // namespace mamba
