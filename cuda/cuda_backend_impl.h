// The CUDA backend's class, shared by its two source files: cuda_backend.cpp (setup, slots and
// the forward pass, kernel by kernel) and cuda_backend_run.cpp (prefill and the decode entry
// points, which run that forward pass). Nothing outside cuda/ includes it; the rest of the
// engine sees only make_cuda_backend (cuda_backend.h).
#pragma once

#include "cuda_backend.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "argmax.cuh"
#include "common.cuh"
#include "conv1d.cuh"
#include "embedding.cuh"
#include "falcon_rms.cuh"
#include "gated_rmsnorm.cuh"
#include "linear.cuh"
#include "linear_decode.cuh"
#include "model/model.h"
#include "persistent_decode.cuh"
#include "rmsnorm.cuh"
#include "selective_scan.cuh"
#include "ssd.cuh"

namespace mamba::cuda_detail {

using cuda::DeviceBuffer;
using cuda::DeviceMatrix;

// Decode batches larger than this go through in several graph launches.
constexpr int kMaxDecodeBatch = 256;
// Rows of logits computed per LM-head call when every prompt position needs logits.
constexpr int kMinLogitRows = 64;
// Prompt pieces of at most this many tokens are prefilled through the decode projections
// (short_prefill_), so that prefill_batch can pack them; at most kMaxPacked prompts a pass.
constexpr int kShortPrefill = 64;
constexpr int kMaxPacked = 64;
constexpr int kMaxPackedRows = 1024;
constexpr size_t kCublasWorkspace = size_t(32) << 20;

struct DeviceLayer {
  DeviceBuffer attn_norm;            // (d_model)
  DeviceBuffer in_proj_w;            // (in_proj_rows, d_model)  stored dtype
  DeviceBuffer in_proj_b;            // (in_proj_rows) or empty
  DeviceBuffer conv_w;               // (conv_dim, d_conv)
  DeviceBuffer conv_b;               // (conv_dim)
  DeviceBuffer dt_bias;              // Mamba-1 (d_inner), Mamba-2 (n_heads)
  DeviceBuffer A;                    // Mamba-1 (d_inner, d_state), Mamba-2 (n_heads)
  DeviceBuffer D;                    // Mamba-1 (d_inner), Mamba-2 (n_heads)
  DeviceBuffer out_proj_w;           // (d_model, d_inner)
  DeviceBuffer out_proj_b;           // (d_model) or empty
  DeviceBuffer x_proj_w;             // Mamba-1 (dt_rank + 2*d_state, d_inner)
  DeviceBuffer dt_proj_w;            // Mamba-1 (d_inner, dt_rank)
  DeviceBuffer norm;                 // Mamba-2 (d_inner)
  DeviceMatrix in_proj, out_proj, x_proj, dt_proj;
};

inline const float* ptr_or_null(const DeviceBuffer& b) { return b ? b.as<float>() : nullptr; }

// Sets a flag for one forward pass and clears it on the way out, exceptions included.
struct ShortPrefill {
  ShortPrefill(bool& flag, bool on) : flag_(flag) { flag_ = on; }
  ~ShortPrefill() { flag_ = false; }
  ShortPrefill(const ShortPrefill&) = delete;
  ShortPrefill& operator=(const ShortPrefill&) = delete;
  bool& flag_;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Model& model, const BackendOptions& opts, const CudaOptions& copts);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  const ModelConfig& config() const override { return c_; }

  int n_slots() const override { return n_slots_; }
  void reset_slot(int slot) override;
  void copy_slot(int src, int dst) override;
  uint64_t state_bytes() const override { return c_.state_bytes(); }
  void save_slot(int slot, std::vector<uint8_t>& out) override;
  void load_slot(int slot, std::span<const uint8_t> in) override;

  void prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
               std::vector<float>& logits) override;
  // Prompts of at most kShortPrefill tokens go through shared forward passes, up to
  // kMaxPacked of them and max_rows_ rows at a time; longer ones through prefill().
  void prefill_batch(std::span<const int> slots,
                     std::span<const std::span<const int32_t>> prompts,
                     std::vector<float>& last_logits) override;
  void decode(std::span<const int> slots, std::span<const int32_t> tokens,
              std::vector<float>& logits) override;
  std::span<const float> decode_view(std::span<const int> slots,
                                     std::span<const int32_t> tokens) override;
  // The step's logits stay on the device; each row's greedy pick comes back (argmax_rows).
  std::span<const int32_t> decode_greedy(std::span<const int> slots,
                                         std::span<const int32_t> tokens,
                                         std::span<const int32_t> banned) override;
  bool picks_on_device() const override { return true; }
  bool runs_persistent() const { return persistent_; }

 private:
  int max_decode_batch() const { return std::min(logit_rows_, kMaxDecodeBatch); }
  // One forward pass over prompts[idx[0]], prompts[idx[1]], ... (each at most kShortPrefill
  // tokens, all together at most max_rows_ rows with one more per prompt, at most kMaxPacked
  // prompts), continuing their slots; row idx[i] of last_logits gets prompt idx[i]'s last
  // position.
  void prefill_packed(std::span<const int> slots,
                      std::span<const std::span<const int32_t>> prompts,
                      std::span<const size_t> idx, std::vector<float>& last_logits);
  // Copies rows [b0, b0 + nb) of the call's tokens and slots to tokens_ and slots_ and runs
  // their decode step (decode_batch), which leaves their logits in logits_ (nb <=
  // max_decode_batch()). Every decode entry point steps through here.
  void step_rows(std::span<const int> slots, std::span<const int32_t> tokens, int64_t b0, int nb);
  // step_rows, then the logits copied to the page-locked host_logits_.
  void decode_rows(std::span<const int> slots, std::span<const int32_t> tokens, int64_t b0,
                   int nb);
  DeviceBuffer upload(const void* data, size_t bytes, const std::string& what);
  DeviceBuffer upload(const std::vector<float>& v, const std::string& what);
  DeviceMatrix upload(const Matrix& m, const std::string& name, DeviceBuffer& owner);

  // The forward pass over n rows already in tokens_; leaves RMSNorm(h) * output_norm in xn_.
  // decode: row i is the next token of slot slots_[i]; else one sequence described by
  // prefill_batch_.
  void forward(int n, bool decode);
  void layers(int n, bool decode);  // forward's block loop, kernel by kernel
  // proj (n, ld_proj) = in_proj(xn_); conv_out (n, conv_dim) = the causal conv + SiLU of the
  // conv_dim columns of proj starting at conv_in, continuing layer il's conv state, and its
  // 16-bit copy into conv_out16 when that is set.
  void in_proj_conv(int il, int n, bool decode, float* proj, int64_t ld_proj, const float* conv_in,
                    int conv_dim, float* conv_out, cuda::Out16 conv_out16 = {});
  void mamba1_mixer(int il, int n, bool decode);
  void mamba2_mixer(int il, int n, bool decode);
  // y = x W^T (+ b): cuBLAS for prefill; for decode the batch-invariant kernel, whose every
  // row is computed the same way whatever the batch holds.
  // x_rounded: x is already in the 16-bit buffer the projection reads (an Out16 from
  // rounded_input(W, decode, n)).
  // For a decode step, ws (default dec_ws_) is where a staged GEMM reads its 16-bit input,
  // and y16 a 16-bit copy of y's first columns for the next projection (linear_decode).
  void proj(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y, int64_t ldy,
            const DeviceBuffer& b, bool decode, bool x_rounded = false,
            const cuda::LinearDecodeWorkspace* ws = nullptr, cuda::Out16 y16 = {},
            const cuda::FusedConv& conv = {}, const cuda::NormIn& norm = {},
            const cuda::ResidualOut& res = {});
  // Decode steps of up to 8 rows with 16-bit projections: layer il's out_proj adds its output
  // into h_ itself and writes sumsq_ (a ResidualOut), and layer il + 1's in_proj norms h_ as it
  // reads it (a NormIn), so that layer has no norm kernel. residual_out(il) says whether layer
  // il's out_proj does so (for the last layer: the final norm then adds nothing).
  bool residual_out(int il, int n, bool decode) const;
  bool norm_in(int il, int n, bool decode) const {
    return il > 0 && residual_out(il - 1, n, decode);
  }
  // Where the producer of W's n-row input writes its 16-bit copy, so that the projection skips
  // its rounding pass: the cuBLAS scratch for a prefill, linear_decode's x16 for a decode step
  // that takes its staged GEMM (over 8 rows, large weights); none otherwise (f32 weights, or
  // decode kernels that round as they load).
  cuda::Out16 rounded_input(const DeviceMatrix& W, bool decode, int n) const {
    return rounded_input(W, decode, n, dec_ws_);
  }
  // The same for a decode projection that reads its x16 from ws.
  cuda::Out16 rounded_input(const DeviceMatrix& W, bool decode, int n,
                            const cuda::LinearDecodeWorkspace& ws) const;
  // logits_ (count, n_vocab) = output(xn_ rows [row0, row0 + count)); x_rounded as for proj.
  void lm_head(int row0, int count, bool decode, bool x_rounded = false);
  void decode_batch(int n);  // graph replay or plain launches
  float* slot_ptr(int slot) const { return state_.as<float>() + int64_t(slot) * slot_floats_; }
  cuda::StateRef conv_state(int il) const;
  cuda::StateRef ssm_state(int il) const;
  cuda::LinearScratch lin_scratch() const { return {lin16_.data(), lin16_.bytes()}; }

  ModelConfig c_;
  CudaOptions copts_;
  int device_ = 0;
  int n_slots_ = 0;
  int max_rows_ = 0;    // rows of every activation buffer
  int logit_rows_ = 0;  // rows of logits_
  int64_t slot_floats_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;

  // ---- weights ----
  DeviceBuffer token_embd_w_, output_w_, output_norm_;
  DeviceMatrix token_embd_, output_;
  std::vector<DeviceLayer> layers_;

  // ---- state: (n_slots, slot_floats) = per slot conv (n_layer, d_conv-1, conv_dim) then
  // ssm (n_layer, d_inner, d_state) ----
  DeviceBuffer state_;

  // ---- activations, (max_rows, ...) ----
  DeviceBuffer tokens_;   // (max_rows) int32
  DeviceBuffer slots_;    // (max_rows) int32  decode: slot of each row
  // int32, prefill: (n_seq + 1) starts, then n_seq slots, then n_seq last rows (packed)
  DeviceBuffer seq_;
  DeviceBuffer h_;        // (max_rows, d_model)  residual stream
  DeviceBuffer xn_;       // (max_rows, d_model)  normed input of the mixer / LM head
  DeviceBuffer out_;      // (max_rows, d_model)  mixer output, added to h by the next norm
  DeviceBuffer sumsq_;    // (8, ceil(d_model / 16))  h's group sums of squares (residual_out)
  DeviceBuffer proj_;     // (max_rows, in_proj_rows)
  DeviceBuffer xc_;       // (max_rows, conv_dim)  conv output
  DeviceBuffer dbl_;      // Mamba-1 (max_rows, dt_rank + 2*d_state)  x_proj output
  DeviceBuffer dt_;       // Mamba-1 (max_rows, d_inner)  dt_proj output
  DeviceBuffer y_;        // (max_rows, d_inner)  scan output
  DeviceBuffer lin16_;    // (max_rows, widest input) 16-bit copy of a linear's input
  DeviceBuffer ssd_ws_;   // Mamba-2 SSD workspace for max_rows tokens
  DeviceBuffer logits_;   // (logit_rows, n_vocab)
  DeviceBuffer cublas_ws_;
  cuda::SeqBatch prefill_batch_;
  // A forward pass over prompt pieces of at most kShortPrefill tokens: its projections (and
  // its LM head) run linear_decode, whose every row is computed the same way however many
  // rows it is given, instead of cuBLAS, whose result for a row depends on the row count. So
  // a short prompt prefilled alone and packed with others gives the same bits.
  bool short_prefill_ = false;
  // Page-locked host staging for decode: (kMaxDecodeBatch) token, slot, banned and picked
  // ids, and (logit_rows, n_vocab) logits, so the per-token copies run at full PCIe speed.
  cuda::HostBuffer host_ids_, host_logits_;
  DeviceBuffer banned_, picks_;  // (kMaxDecodeBatch) int32: decode_greedy's bans and picks
  // The decode projections' 16-bit activations (batches of more than 8 rows), in three
  // regions of one buffer, as a producer may write the next projection's input while its own
  // is still being read: dec_ws_ for in_proj, out_proj and the LM head; dec_xp_ws_ for
  // Mamba-1's x_proj (written by the conv step, which may run in in_proj's epilogue);
  // dec_dt_ws_ for its dt_proj (written by x_proj).
  DeviceBuffer dec_x16_;
  cuda::LinearDecodeWorkspace dec_ws_, dec_xp_ws_, dec_dt_ws_;

  // The persistent decode step (Mamba-1, up to 8 rows, 16-bit weights), when it runs here.
  bool persistent_ = false;
  cuda::PersistentDecodeConfig pcfg_;
  DeviceBuffer p_layers_;  // (n_layer) PersistentDecodeLayer
  DeviceBuffer p_part_;    // its partial sums
  DeviceBuffer p_sync_;    // its grid barrier's counter
  void setup_persistent();

  std::map<int, cudaGraphExec_t> graphs_;  // decode batch size -> replayable step
  std::map<int, int> plain_steps_;          // decode batch size -> steps run without a graph
};


}  // namespace mamba::cuda_detail
