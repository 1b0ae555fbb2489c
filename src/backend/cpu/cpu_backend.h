// The CPU backend: float32 compute over f32/f16/bf16 weights read straight from the mapped
// model file, with a persistent thread pool. Results do not depend on the thread count.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/layers.h"
#include "backend/cpu/threadpool.h"
#include "model/model.h"

namespace mamba::cpu {

class CpuBackend final : public Backend {
 public:
  // The model must outlive the backend. n_threads <= 0: one per hardware thread.
  // chunked_scan: Mamba-2 prefill with the chunked SSD algorithm instead of the token by
  // token scan (same results up to float rounding). On a CPU the token-by-token scan is the
  // faster one (about 2x on a 130M model at 128 tokens): the chunked form trades extra
  // arithmetic for matrix products, which pays off on tensor cores, not here. It is kept
  // so the GPU's algorithm has a CPU counterpart to test against.
  CpuBackend(const Model& model, int n_threads, int n_slots, bool chunked_scan = false);

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return c_; }
  int n_threads() const { return pool_.size(); }

  int n_slots() const override { return int(slots_.size()); }
  void reset_slot(int slot) override;
  void copy_slot(int src, int dst) override;
  uint64_t state_bytes() const override { return c_.state_bytes(); }
  void save_slot(int slot, std::vector<uint8_t>& out) override;
  void load_slot(int slot, std::span<const uint8_t> in) override;

  void prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
               std::vector<float>& logits) override;
  // Prompts of up to kMaxBatchTokens ids share forward passes of up to that many rows, so
  // the weights are read once for all of them; each row's arithmetic is the same as alone.
  void prefill_batch(std::span<const int> slots, std::span<const std::span<const int32_t>> prompts,
                     std::vector<float>& last_logits) override;
  void decode(std::span<const int> slots, std::span<const int32_t> tokens,
              std::vector<float>& logits) override;

 private:
  struct SlotState {
    std::vector<float> conv;  // (n_layer, d_conv - 1, conv_dim)
    std::vector<float> ssm;   // (n_layer, d_inner, d_state)
  };

  // Runs T = tokens.size() rows (grouped into seqs) through all layers, then writes the
  // logits of rows `out_rows` to logits_out (out_rows.size(), n_vocab).
  void forward(std::span<const int32_t> tokens, std::span<const Seq> seqs,
               std::span<const int64_t> out_rows, float* logits_out);
  void ensure_scratch(int64_t T);

  const Model& model_;
  ModelConfig c_;
  ThreadPool pool_;
  bool chunked_scan_;
  std::vector<SlotState> slots_;
  std::vector<std::vector<float>> conv_w_t_;  // per layer (d_conv, conv_dim)
  int64_t scratch_rows_ = 0;
  Scratch s_;
  std::vector<float> h_;  // (T, d_model)  the residual stream
};

// Largest number of token rows in one forward pass; longer prompts go through in pieces.
constexpr int64_t kMaxBatchTokens = 256;

}  // namespace mamba::cpu
