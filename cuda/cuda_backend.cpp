// The CUDA block loop: the same computation as the CPU backend (backend/cpu/cpu_backend.cpp),
// one kernel-library call per step.
//
//   h = token_embd[ids]                               (n, d_model) float32 residual stream
//   for each layer:
//     xn = RMSNorm(h += previous mixer output)        the add is fused into the norm
//     out = Mixer(xn)                                 Mamba-1 or Mamba-2 mixer
//   xn = RMSNorm(h += out) * output_norm;  logits = output(xn)
//
// Prefill runs the *_prefill kernels over one sequence of up to max_prefill_tokens rows; decode
// runs the *_step kernels over one row per sequence and is replayed from a CUDA graph.
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

namespace mamba {
namespace {

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

const float* ptr_or_null(const DeviceBuffer& b) { return b ? b.as<float>() : nullptr; }

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
  void check_slot(int slot) const;
  void check_tokens(std::span<const int32_t> tokens) const;
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

CudaBackend::CudaBackend(const Model& model, const BackendOptions& opts,
                         const CudaOptions& copts)
    : c_(model.config()), copts_(copts) {
  if (!cuda::device_available()) fail("no CUDA device is available");
  if (opts.device.rfind("cuda:", 0) == 0) {
    const std::string idx = opts.device.substr(5);
    if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos)
      fail("bad device '", opts.device, "' (expected cuda or cuda:N)");
    device_ = std::stoi(idx);
  }
  int n_dev = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n_dev));
  if (device_ >= n_dev) fail("device ", opts.device, " does not exist (", n_dev, " CUDA devices)");
  CUDA_CHECK(cudaSetDevice(device_));
  if (opts.n_slots < 1 || opts.n_slots > 4096)
    fail("n_slots = ", opts.n_slots, " is out of range (1..4096)");
  if (copts.max_prefill_tokens < 1 || copts.max_prefill_tokens > 65535)
    fail("max_prefill_tokens = ", copts.max_prefill_tokens, " is out of range (1..65535)");
  n_slots_ = opts.n_slots;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  // An explicit workspace keeps cuBLAS from allocating while a graph is captured, so the
  // captured and the plain step pick the same kernels.
  cublas_ws_ = DeviceBuffer(kCublasWorkspace, "cuBLAS workspace");
  CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_ws_.data(), cublas_ws_.bytes()));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));

  // ---- weights, uploaded once ----
  token_embd_ = upload(model.token_embd, "token_embd.weight", token_embd_w_);
  output_ = model.tied ? token_embd_ : upload(model.output, "output.weight", output_w_);
  output_norm_ = upload(model.output_norm, "weights output_norm.weight");
  layers_.resize(size_t(c_.n_layer));
  for (int il = 0; il < int(c_.n_layer); il++) {
    const LayerWeights& w = model.layers[size_t(il)];
    DeviceLayer& d = layers_[size_t(il)];
    const std::string blk = "blk." + std::to_string(il) + ".";
    d.attn_norm = upload(w.attn_norm, "weights " + blk + "attn_norm.weight");
    d.in_proj = upload(w.in_proj, blk + "ssm_in.weight", d.in_proj_w);
    if (!w.in_proj_bias.empty()) d.in_proj_b = upload(w.in_proj_bias, "weights " + blk + "ssm_in.bias");
    d.conv_w = upload(w.conv_w, "weights " + blk + "ssm_conv1d.weight");
    d.conv_b = upload(w.conv_b, "weights " + blk + "ssm_conv1d.bias");
    d.dt_bias = upload(w.dt_bias, "weights " + blk + "ssm_dt.bias");
    d.A = upload(w.A, "weights " + blk + "ssm_a");
    d.D = upload(w.D, "weights " + blk + "ssm_d");
    d.out_proj = upload(w.out_proj, blk + "ssm_out.weight", d.out_proj_w);
    if (!w.out_proj_bias.empty())
      d.out_proj_b = upload(w.out_proj_bias, "weights " + blk + "ssm_out.bias");
    if (c_.arch == Arch::Mamba1) {
      d.x_proj = upload(w.x_proj, blk + "ssm_x.weight", d.x_proj_w);
      d.dt_proj = upload(w.dt_proj, blk + "ssm_dt.weight", d.dt_proj_w);
    } else {
      d.norm = upload(w.norm, "weights " + blk + "ssm_norm.weight");
    }
  }

  // ---- state slots ----
  slot_floats_ = int64_t(c_.state_bytes() / sizeof(float));
  state_ = DeviceBuffer(size_t(n_slots_) * size_t(slot_floats_) * sizeof(float),
                        "recurrent state for " + std::to_string(n_slots_) + " slots");
  CUDA_CHECK(cudaMemsetAsync(state_.data(), 0, state_.bytes(), stream_));

  // ---- activations ----
  const int max_batch = std::min(n_slots_, kMaxDecodeBatch);
  max_rows_ = std::max(copts.max_prefill_tokens, max_batch);
  logit_rows_ = std::max(max_batch, std::min(kMinLogitRows, max_rows_));
  const size_t R = size_t(max_rows_);
  const auto act = [&](int64_t cols, const char* what) {
    return DeviceBuffer(R * size_t(cols) * sizeof(float), std::string("activations ") + what);
  };
  tokens_ = DeviceBuffer(R * sizeof(int32_t), "activations token ids");
  slots_ = DeviceBuffer(R * sizeof(int32_t), "activations slot ids");
  seq_ = DeviceBuffer((3 * size_t(kMaxPacked) + 1) * sizeof(int32_t),
                     "activations sequence table");
  h_ = act(c_.d_model, "residual");
  xn_ = act(c_.d_model, "norm output");
  out_ = act(c_.d_model, "mixer output");
  sumsq_ = DeviceBuffer(8 * size_t((c_.d_model + 15) / 16) * sizeof(float),
                        "activations residual sums of squares");
  proj_ = act(c_.in_proj_rows(), "in_proj output");
  xc_ = act(c_.conv_dim(), "conv output");
  y_ = act(c_.d_inner, "scan output");
  int64_t widest = std::max(c_.d_model, c_.d_inner);
  if (c_.arch == Arch::Mamba1) {
    dbl_ = act(c_.dt_rank + 2 * c_.d_state, "x_proj output");
    dt_ = act(c_.d_inner, "dt_proj output");
    widest = std::max(widest, c_.dt_rank);
  }
  lin16_ = DeviceBuffer(R * size_t(widest) * 2, "activations 16-bit matmul input");
  cuda::SsdParams sp;
  if (c_.arch == Arch::Mamba2) {
    sp.n_heads = int(c_.n_heads);
    sp.head_dim = int(c_.head_dim);
    sp.d_state = int(c_.d_state);
    sp.n_groups = int(c_.n_groups);
    cuda::SeqBatch one, packed;  // a prompt piece alone, and packed short prompts
    one.n_seq = 1;
    one.n_tok = one.max_len = max_rows_;
    packed.n_seq = kMaxPacked;
    packed.n_tok = max_rows_;
    packed.max_len = std::min(kShortPrefill, max_rows_);
    ssd_ws_ = DeviceBuffer(std::max(cuda::ssd_workspace_bytes(sp, one),
                                    cuda::ssd_workspace_bytes(sp, packed)),
                           "activations SSD workspace");
  }
  logits_ = DeviceBuffer(size_t(logit_rows_) * size_t(c_.n_vocab) * sizeof(float),
                         "logits for " + std::to_string(logit_rows_) + " rows");
  {
    // Region sizes are multiples of 512 values, so every region stays 16-byte aligned.
    size_t elems[3] = {};  // dec_ws_, dec_xp_ws_, dec_dt_ws_
    // Decode batches, and the packed rows of short prompts (short_prefill_).
    const int rows = std::max(max_batch, std::min(max_rows_, kMaxPackedRows));
    const auto grow = [&](size_t& e, const DeviceMatrix& W) {
      if (W.data) e = std::max(e, cuda::linear_decode_needs(W, rows).x16_elems);
    };
    grow(elems[0], output_);
    for (const DeviceLayer& d : layers_) {
      grow(elems[0], d.in_proj);
      grow(elems[0], d.out_proj);
      grow(elems[1], d.x_proj);
      grow(elems[2], d.dt_proj);
    }
    dec_x16_ = DeviceBuffer((elems[0] + elems[1] + elems[2]) * 2, "decode activations in 16 bits");
    uint16_t* base = static_cast<uint16_t*>(dec_x16_.data());
    const auto region = [&](size_t offset, size_t e) {
      return cuda::LinearDecodeWorkspace{e ? base + offset : nullptr, e};
    };
    dec_ws_ = region(0, elems[0]);
    dec_xp_ws_ = region(elems[0], elems[1]);
    dec_dt_ws_ = region(elems[0] + elems[1], elems[2]);
  }
  host_ids_ = cuda::HostBuffer(4 * size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode ids");
  banned_ = DeviceBuffer(size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode banned ids");
  picks_ = DeviceBuffer(size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode greedy picks");
  host_logits_ = cuda::HostBuffer(size_t(logit_rows_) * size_t(c_.n_vocab) * sizeof(float),
                                  "decode logits");
  const auto env_on = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v && *v != '0';
  };
  if ((copts.persistent_decode || env_on("MAMBA_PERSISTENT")) && !env_on("MAMBA_NO_PERSISTENT"))
    setup_persistent();
  prefill_batch_.n_seq = 1;
  prefill_batch_.start = seq_.as<int32_t>();
  prefill_batch_.slots = seq_.as<int32_t>() + 2;
  // The uploads ran on the legacy default stream, which stream_ does not wait for.
  CUDA_CHECK(cudaDeviceSynchronize());
}

CudaBackend::~CudaBackend() {
  for (auto& [n, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_) cudaStreamSynchronize(stream_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

DeviceBuffer CudaBackend::upload(const void* data, size_t bytes, const std::string& what) {
  DeviceBuffer b(bytes, what);
  if (bytes) CUDA_CHECK(cudaMemcpy(b.data(), data, bytes, cudaMemcpyHostToDevice));
  return b;
}

DeviceBuffer CudaBackend::upload(const std::vector<float>& v, const std::string& what) {
  return upload(v.data(), v.size() * sizeof(float), what);
}

DeviceMatrix CudaBackend::upload(const Matrix& m, const std::string& name, DeviceBuffer& owner) {
  const size_t bytes = size_t(m.rows) * size_t(m.cols) * gguf::dtype_size(m.dtype);
  owner = upload(m.data, bytes, "weights " + name);
  return DeviceMatrix{owner.data(), m.dtype, m.rows, m.cols};
}

cuda::StateRef CudaBackend::conv_state(int il) const {
  return {state_.as<float>() + int64_t(il) * (c_.d_conv - 1) * c_.conv_dim(), slot_floats_};
}

cuda::StateRef CudaBackend::ssm_state(int il) const {
  const int64_t conv_all = c_.n_layer * (c_.d_conv - 1) * c_.conv_dim();
  return {state_.as<float>() + conv_all + int64_t(il) * c_.d_inner * c_.d_state, slot_floats_};
}

// The persistent decode step takes Mamba-1 (not Falcon-Mamba, whose dt, B and C are normed
// between x_proj and the scan) with all four projections in one 16-bit dtype, where its shapes
// and shared memory fit (persistent_decode_unsupported); everything else keeps the per-kernel
// path.
void CudaBackend::setup_persistent() {
  if (c_.arch != Arch::Mamba1 || c_.dt_b_c_rms) return;
  const gguf::DType t = layers_[0].in_proj.dtype;
  if (t != gguf::DType::F16 && t != gguf::DType::BF16) return;
  for (const DeviceLayer& d : layers_)
    for (const DeviceMatrix* m : {&d.in_proj, &d.x_proj, &d.dt_proj, &d.out_proj})
      if (m->dtype != t) return;
  cuda::PersistentDecodeConfig& p = pcfg_;
  p.n_layer = int(c_.n_layer);
  p.d_model = int(c_.d_model);
  p.d_inner = int(c_.d_inner);
  p.d_state = int(c_.d_state);
  p.d_conv = int(c_.d_conv);
  p.dt_rank = int(c_.dt_rank);
  p.norm_eps = c_.norm_eps;
  p.bf16 = t == gguf::DType::BF16;
  const DeviceLayer& l0 = layers_[0];
  p.split[0] = cuda::linear_decode_split(l0.in_proj);
  p.split[1] = cuda::linear_decode_split(l0.x_proj);
  p.split[2] = cuda::linear_decode_split(l0.dt_proj);
  p.split[3] = cuda::linear_decode_split(l0.out_proj);
  const std::string why = cuda::persistent_decode_unsupported(p);
  if (!why.empty()) return;
  // State slices must keep the scan step's 16-byte accesses.
  if (slot_floats_ % 4 != 0 || (ssm_state(0).base - state_.as<float>()) % 4 != 0) return;
  std::vector<cuda::PersistentDecodeLayer> host(layers_.size());
  for (size_t il = 0; il < layers_.size(); il++) {
    const DeviceLayer& d = layers_[il];
    cuda::PersistentDecodeLayer& h = host[il];
    h.proj[0] = d.in_proj.data;
    h.proj[1] = d.x_proj.data;
    h.proj[2] = d.dt_proj.data;
    h.proj[3] = d.out_proj.data;
    h.in_proj_b = ptr_or_null(d.in_proj_b);
    h.out_proj_b = ptr_or_null(d.out_proj_b);
    h.norm_w = d.attn_norm.as<float>();
    h.conv_w = d.conv_w.as<float>();
    h.conv_b = ptr_or_null(d.conv_b);
    h.dt_bias = d.dt_bias.as<float>();
    h.A = d.A.as<float>();
    h.D = d.D.as<float>();
    h.conv_state = conv_state(int(il));
    h.ssm_state = ssm_state(int(il));
  }
  p_layers_ = upload(host.data(), host.size() * sizeof(host[0]), "persistent decode layer table");
  p_part_ = DeviceBuffer(cuda::persistent_decode_part_floats(p) * sizeof(float),
                         "persistent decode partial sums");
  p_sync_ = DeviceBuffer(sizeof(unsigned), "persistent decode barrier");
  persistent_ = true;
}

// ---- slots ------------------------------------------------------------------------------------

void CudaBackend::check_slot(int slot) const {
  if (slot < 0 || slot >= n_slots_)
    fail("slot ", slot, " is out of range (n_slots = ", n_slots_, ")");
}

void CudaBackend::reset_slot(int slot) {
  check_slot(slot);
  CUDA_CHECK(cudaMemsetAsync(slot_ptr(slot), 0, state_bytes(), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_slot(int src, int dst) {
  check_slot(src);
  check_slot(dst);
  if (src == dst) return;
  CUDA_CHECK(cudaMemcpyAsync(slot_ptr(dst), slot_ptr(src), state_bytes(),
                             cudaMemcpyDeviceToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::save_slot(int slot, std::vector<uint8_t>& out) {
  check_slot(slot);
  out.resize(state_bytes());
  CUDA_CHECK(cudaMemcpyAsync(out.data(), slot_ptr(slot), state_bytes(), cudaMemcpyDeviceToHost,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::load_slot(int slot, std::span<const uint8_t> in) {
  check_slot(slot);
  if (in.size() != state_bytes())
    fail("saved state has ", in.size(), " bytes, expected ", state_bytes(), " for this model");
  CUDA_CHECK(cudaMemcpyAsync(slot_ptr(slot), in.data(), state_bytes(), cudaMemcpyHostToDevice,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- forward ----------------------------------------------------------------------------------

void CudaBackend::in_proj_conv(int il, int n, bool decode, float* proj, int64_t ld_proj,
                               const float* conv_in, int conv_dim, float* conv_out,
                               cuda::Out16 conv_out16) {
  const DeviceLayer& w = layers_[size_t(il)];
  cuda::Conv1dParams cp;
  cp.x = conv_in;
  cp.ldx = ld_proj;
  cp.w = w.conv_w.as<float>();
  cp.b = w.conv_b.as<float>();
  cp.state = conv_state(il);
  cp.dim = conv_dim;
  cp.d_conv = int(c_.d_conv);
  cp.out = conv_out;
  cp.out16 = conv_out16;
  // xn_ (and its 16-bit copy for a prefill) were written by forward()'s norm. A Mamba-1
  // decode step of up to 8 rows with 16-bit weights runs the conv step in in_proj's epilogue:
  // one kernel fewer a layer. Measured on the H200 (docs/benchmarks.md): mamba-1.4b at one row
  // +4%; at 64 rows the staged GEMM's epilogue, one conv step after another per thread, made
  // the step 11% slower, and Mamba-2 (its conv on xBC) was 0.7% slower fused at one row.
  const bool fuse =
      decode && n <= 8 && c_.arch == Arch::Mamba1 && w.in_proj.dtype != gguf::DType::F32;
  cuda::FusedConv fc;
  if (fuse) fc = {cp, slots_.as<int32_t>(), conv_in - proj};
  // Or, where the previous out_proj wrote h's sums of squares, in_proj norms h_ itself.
  const bool normed = norm_in(il, n, decode);
  const cuda::NormIn ni =
      normed ? cuda::NormIn{sumsq_.as<float>(), w.attn_norm.as<float>(), c_.norm_eps}
             : cuda::NormIn{};
  this->proj(w.in_proj, normed ? h_.as<float>() : xn_.as<float>(), int(c_.d_model), n, proj,
             ld_proj, w.in_proj_b, decode,
             !normed && rounded_input(w.in_proj, decode, n).data != nullptr, nullptr, {}, fc, ni);
  if (fuse) return;
  if (decode)
    cuda::conv1d_step(cp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::conv1d_prefill(cp, prefill_batch_, stream_);
}

void CudaBackend::mamba1_mixer(int il, int n, bool decode) {
  const DeviceLayer& w = layers_[size_t(il)];
  const int DM = int(c_.d_model), DI = int(c_.d_inner), N = int(c_.d_state);
  const int R = int(c_.dt_rank);
  const int64_t ld_proj = 2 * int64_t(DI), ld_dbl = R + 2 * int64_t(N);
  float* proj = proj_.as<float>();  // (n, 2*DI): x | z
  float* xc = xc_.as<float>();      // (n, DI)
  float* dbl = dbl_.as<float>();    // (n, R + 2N): dt_low | B | C
  float* dt = dt_.as<float>();      // (n, DI)
  float* y = y_.as<float>();        // (n, DI)

  // x_proj reads the conv output; the scan reads it in float32 too.
  const cuda::Out16 xc16 = rounded_input(w.x_proj, decode, n, dec_xp_ws_);
  in_proj_conv(il, n, decode, proj, ld_proj, proj, DI, xc, xc16);
  // Where both run the staged GEMM, x_proj also writes dt_low rounded for dt_proj, which then
  // needs no rounding pass (not for Falcon-Mamba, whose dt_low is normed in between).
  const bool dt16 = (decode || short_prefill_) && xc16.data && !c_.dt_b_c_rms &&
                    dec_dt_ws_.x16 && cuda::linear_decode_reads_x16(w.dt_proj, n, dec_dt_ws_);
  const cuda::Out16 dt_low16 =
      dt16 ? cuda::Out16{dec_dt_ws_.x16, w.dt_proj.dtype == gguf::DType::BF16, R} : cuda::Out16{};
  this->proj(w.x_proj, xc, DI, n, dbl, ld_dbl, DeviceBuffer(), decode, xc16.data != nullptr,
             &dec_xp_ws_, dt_low16);
  if (c_.dt_b_c_rms) cuda::falcon_bcdt_rms(dbl, ld_dbl, n, R, N, c_.mixer_rms_eps, stream_);
  this->proj(w.dt_proj, dbl, ld_dbl, n, dt, DI, DeviceBuffer(), decode, dt16,
             dt16 ? &dec_dt_ws_ : nullptr);
  cuda::SelectiveScanParams sp;
  sp.x = xc;
  sp.dt = dt;
  sp.dt_bias = w.dt_bias.as<float>();
  sp.A = w.A.as<float>();
  sp.B = dbl + R;
  sp.C = dbl + R + N;
  sp.ldbc = ld_dbl;
  sp.D = w.D.as<float>();
  sp.z = proj + DI;
  sp.ldz = ld_proj;
  sp.state = ssm_state(il);
  sp.d_inner = DI;
  sp.d_state = N;
  sp.y = y;
  sp.y16 = rounded_input(w.out_proj, decode, n);
  if (decode)
    cuda::selective_scan_step(sp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::selective_scan_prefill(sp, prefill_batch_, stream_);
  const bool res = residual_out(il, n, decode);
  this->proj(w.out_proj, y, DI, n, res ? h_.as<float>() : out_.as<float>(), DM, w.out_proj_b,
             decode, sp.y16.data != nullptr, nullptr, {}, {}, {},
             res ? cuda::ResidualOut{sumsq_.as<float>()} : cuda::ResidualOut{});
}

void CudaBackend::mamba2_mixer(int il, int n, bool decode) {
  const DeviceLayer& w = layers_[size_t(il)];
  const int DM = int(c_.d_model), DI = int(c_.d_inner), N = int(c_.d_state);
  const int G = int(c_.n_groups), CD = int(c_.conv_dim());
  const int64_t ld_proj = c_.in_proj_rows();
  float* proj = proj_.as<float>();  // (n, in_proj_rows): z (DI) | xBC (CD) | dt (H)
  float* xc = xc_.as<float>();      // (n, CD): x (DI) | B (G*N) | C (G*N)
  float* y = y_.as<float>();        // (n, DI)

  in_proj_conv(il, n, decode, proj, ld_proj, proj + DI, CD, xc);
  cuda::SsdParams sp;
  sp.x = xc;
  sp.ldx = CD;
  sp.B = xc + DI;
  sp.C = xc + DI + int64_t(G) * N;
  sp.ldbc = CD;
  sp.dt = proj + DI + CD;
  sp.lddt = ld_proj;
  sp.dt_bias = w.dt_bias.as<float>();
  sp.A = w.A.as<float>();
  sp.D = w.D.as<float>();
  sp.dt_min = c_.dt_min;
  sp.dt_max = c_.dt_max;
  sp.state = ssm_state(il);
  sp.n_heads = int(c_.n_heads);
  sp.head_dim = int(c_.head_dim);
  sp.d_state = N;
  sp.n_groups = G;
  sp.y = y;
  if (decode)
    cuda::ssd_step(sp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::ssd_prefill(sp, prefill_batch_, ssd_ws_.data(), ssd_ws_.bytes(), stream_);
  // Only out_proj reads the normed y: a prefill with 16-bit weights writes just its 16-bit copy.
  const cuda::Out16 y16 = rounded_input(w.out_proj, decode, n);
  cuda::gated_rmsnorm(y, proj, ld_proj, w.norm.as<float>(), n, DI, G, c_.norm_eps,
                      y16.data ? nullptr : y, y16, stream_);
  const bool res = residual_out(il, n, decode);
  this->proj(w.out_proj, y, DI, n, res ? h_.as<float>() : out_.as<float>(), DM, w.out_proj_b,
             decode, y16.data != nullptr, nullptr, {}, {}, {},
             res ? cuda::ResidualOut{sumsq_.as<float>()} : cuda::ResidualOut{});
}

void CudaBackend::forward(int n, bool decode) {
  const int DM = int(c_.d_model);
  float* h = h_.as<float>();
  float* xn = xn_.as<float>();
  cuda::embedding(token_embd_.data, token_embd_.dtype, c_.n_vocab, DM, tokens_.as<int32_t>(), n,
                  h, stream_);
  const bool persistent = decode && persistent_ && n <= cuda::kPersistentMaxRows;
  if (persistent) {
    cuda::PersistentDecodeArgs a;
    a.layers = p_layers_.as<cuda::PersistentDecodeLayer>();
    a.n = n;
    a.slots = slots_.as<int32_t>();
    a.h = h;
    a.out = out_.as<float>();
    a.xc = xc_.as<float>();
    a.z = dt_.as<float>();  // the per-kernel path's dt_proj output, unused here
    a.y = y_.as<float>();
    a.part = p_part_.as<float>();
    a.sync = p_sync_.as<unsigned>();
    cuda::persistent_decode(pcfg_, a, stream_);
  } else {
    layers(n, decode);
  }
  // A decode step's LM head reads all n rows (see decode_batch); a prefill's takes row ranges
  // and rounds them itself. (The per-kernel path's last out_proj may have added its output into
  // h already; the persistent kernel leaves it in out_.)
  const bool added = !persistent && residual_out(int(c_.n_layer) - 1, n, decode);
  cuda::rmsnorm_residual(h, added ? nullptr : out_.as<float>(), output_norm_.as<float>(), n, DM,
                         c_.norm_eps, xn, decode ? rounded_input(output_, true, n) : cuda::Out16{},
                         stream_);
}

void CudaBackend::layers(int n, bool decode) {
  const int DM = int(c_.d_model);
  float* h = h_.as<float>();
  float* xn = xn_.as<float>();
  for (int il = 0; il < int(c_.n_layer); il++) {
    const DeviceLayer& w = layers_[size_t(il)];
    if (!norm_in(il, n, decode))  // else in_proj norms h itself
      cuda::rmsnorm_residual(h, il == 0 ? nullptr : out_.as<float>(), w.attn_norm.as<float>(),
                             n, DM, c_.norm_eps, xn, rounded_input(w.in_proj, decode, n),
                             stream_);
    if (c_.arch == Arch::Mamba1)
      mamba1_mixer(il, n, decode);
    else
      mamba2_mixer(il, n, decode);
  }
}

bool CudaBackend::residual_out(int il, int n, bool decode) const {
  const auto is16 = [](const DeviceMatrix& W) {
    return W.dtype == gguf::DType::F16 || W.dtype == gguf::DType::BF16;
  };
  static const bool off = std::getenv("MAMBA_NO_NORM_FUSION") != nullptr;  // A/B in one build
  if (off || !decode || n > 8 || c_.d_model > cuda::kRmsNormMaxDim) return false;
  if (!is16(layers_[size_t(il)].out_proj)) return false;
  return il + 1 == int(c_.n_layer) || is16(layers_[size_t(il) + 1].in_proj);
}

void CudaBackend::proj(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                       int64_t ldy, const DeviceBuffer& b, bool decode, bool x_rounded,
                       const cuda::LinearDecodeWorkspace* ws, cuda::Out16 y16,
                       const cuda::FusedConv& conv, const cuda::NormIn& norm,
                       const cuda::ResidualOut& res) {
  if (decode || short_prefill_)
    cuda::linear_decode(W, x, ldx, n, y, ldy, ptr_or_null(b), ws ? *ws : dec_ws_, stream_,
                        x_rounded, y16, conv, norm, res);
  else
    cuda::linear(cublas_, W, x, ldx, n, y, ldy, ptr_or_null(b), lin_scratch(), stream_,
                 x_rounded);
}

cuda::Out16 CudaBackend::rounded_input(const DeviceMatrix& W, bool decode, int n,
                                       const cuda::LinearDecodeWorkspace& ws) const {
  if (W.dtype == gguf::DType::F32) return {};
  const bool bf16 = W.dtype == gguf::DType::BF16;
  if (!decode && !short_prefill_) return {lin16_.data(), bf16};
  if (cuda::linear_decode_reads_x16(W, n, ws)) return {ws.x16, bf16, W.cols};
  return {};
}

void CudaBackend::lm_head(int row0, int count, bool decode, bool x_rounded) {
  proj(output_, xn_.as<float>() + int64_t(row0) * c_.d_model, c_.d_model, count,
       logits_.as<float>(), c_.n_vocab, DeviceBuffer(), decode, x_rounded);
}

void CudaBackend::check_tokens(std::span<const int32_t> tokens) const {
  for (int32_t id : tokens)
    if (id < 0 || id >= c_.n_vocab)
      fail("token id ", id, " is out of range (n_vocab = ", c_.n_vocab, ")");
}

void CudaBackend::prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
                          std::vector<float>& logits) {
  check_slot(slot);
  check_tokens(tokens);
  const int64_t n = int64_t(tokens.size());
  if (n == 0) fail("prefill needs at least one token");
  const int64_t V = c_.n_vocab;
  logits.resize(size_t((all_logits ? n : 1) * V));
  // Long prompts go through in pieces; the state carries over between them exactly as it
  // would between the tokens of one piece.
  for (int64_t t0 = 0; t0 < n; t0 += max_rows_) {
    const int len = int(std::min<int64_t>(max_rows_, n - t0));
    const std::array<int32_t, 3> seq = {0, len, slot};
    CUDA_CHECK(cudaMemcpyAsync(seq_.data(), seq.data(), sizeof seq, cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), tokens.data() + t0, size_t(len) * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream_));
    prefill_batch_.n_tok = prefill_batch_.max_len = len;
    ShortPrefill short_pass(short_prefill_, len <= kShortPrefill);
    forward(len, /*decode=*/false);
    if (all_logits) {
      for (int r0 = 0; r0 < len; r0 += logit_rows_) {
        const int cnt = std::min(logit_rows_, len - r0);
        lm_head(r0, cnt, false);
        CUDA_CHECK(cudaMemcpyAsync(logits.data() + (t0 + r0) * V, logits_.data(),
                                   size_t(cnt) * size_t(V) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
      }
    } else if (t0 + len == n) {
      lm_head(len - 1, 1, false);
      CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits_.data(), size_t(V) * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_));
    }
    // The host arrays above must stay alive until their copies have run.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
}

void CudaBackend::prefill_batch(std::span<const int> slots,
                                std::span<const std::span<const int32_t>> prompts,
                                std::vector<float>& last_logits) {
  check_prefill_batch(slots, prompts);
  for (const auto& p : prompts) check_tokens(p);
  const size_t V = size_t(c_.n_vocab);
  last_logits.resize(prompts.size() * V);
  // Long prompts alone, as prefill() runs them (and short ones when a pass is too small to
  // hold one with its extra row); short ones in groups that fit one pass.
  const int max_seq = std::min(kMaxPacked, logit_rows_);
  const int max_rows = std::min(max_rows_, kMaxPackedRows);
  std::vector<size_t> group;
  int rows = 0;
  std::vector<float> one;
  for (size_t i = 0; i <= prompts.size(); i++) {
    const bool end = i == prompts.size();
    const int len = end ? 0 : int(prompts[i].size());
    if (!end && (len > kShortPrefill || len + 1 > max_rows)) {
      prefill(slots[i], prompts[i], /*all_logits=*/false, one);
      std::copy(one.begin(), one.begin() + std::ptrdiff_t(V),
                last_logits.begin() + std::ptrdiff_t(i * V));
      continue;
    }
    // Each packed prompt takes one more row: its last position, gathered for the LM head.
    if (!group.empty() && (end || int(group.size()) == max_seq || rows + len + 1 > max_rows)) {
      prefill_packed(slots, prompts, group, last_logits);
      group.clear();
      rows = 0;
    }
    if (end) break;
    group.push_back(i);
    rows += len + 1;
  }
}

void CudaBackend::prefill_packed(std::span<const int> slots,
                                 std::span<const std::span<const int32_t>> prompts,
                                 std::span<const size_t> idx, std::vector<float>& last_logits) {
  const int m = int(idx.size());
  const int64_t V = c_.n_vocab, DM = c_.d_model;
  // seq_: starts (m + 1), slots (m), each prompt's last row (m); tokens_: the prompts in order.
  std::vector<int32_t> table(3 * size_t(m) + 1);
  std::vector<int32_t> ids;
  int max_len = 0;
  for (int i = 0; i < m; i++) {
    const auto& p = prompts[idx[size_t(i)]];
    table[size_t(i)] = int32_t(ids.size());
    ids.insert(ids.end(), p.begin(), p.end());
    table[size_t(m + 1 + i)] = slots[idx[size_t(i)]];
    table[size_t(2 * m + 1 + i)] = int32_t(ids.size()) - 1;
    max_len = std::max(max_len, int(p.size()));
  }
  table[size_t(m)] = int32_t(ids.size());
  const int n = int(ids.size());
  CUDA_CHECK(cudaMemcpyAsync(seq_.data(), table.data(), table.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), ids.data(), ids.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  prefill_batch_.n_seq = m;
  prefill_batch_.slots = seq_.as<int32_t>() + m + 1;
  prefill_batch_.n_tok = n;
  prefill_batch_.max_len = max_len;
  {
    ShortPrefill short_pass(short_prefill_, true);
    try {
      forward(n, /*decode=*/false);
      // Rows n .. n + m - 1 of xn_ = each prompt's last normed row, so that one LM head pass
      // (linear_decode, the same bits per row as one row alone) gives every prompt's logits.
      cuda::embedding(xn_.data(), gguf::DType::F32, n, DM, seq_.as<int32_t>() + 2 * m + 1, m,
                      xn_.as<float>() + int64_t(n) * DM, stream_);
      lm_head(n, m, false);
    } catch (...) {
      prefill_batch_.n_seq = 1;
      prefill_batch_.slots = seq_.as<int32_t>() + 2;
      throw;
    }
  }
  prefill_batch_.n_seq = 1;
  prefill_batch_.slots = seq_.as<int32_t>() + 2;
  float* host = host_logits_.as<float>();  // page-locked, (logit_rows_, n_vocab)
  CUDA_CHECK(cudaMemcpyAsync(host, logits_.data(), size_t(m) * size_t(V) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  // The host table and ids above must stay alive until their copies have run.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int i = 0; i < m; i++)
    std::copy(host + int64_t(i) * V, host + int64_t(i + 1) * V,
              last_logits.begin() + std::ptrdiff_t(idx[size_t(i)] * size_t(V)));
}

// One decode step for the first n entries of tokens_/slots_, leaving logits in logits_.
void CudaBackend::decode_batch(int n) {
  const auto step = [&] {
    forward(n, /*decode=*/true);
    lm_head(0, n, true, rounded_input(output_, true, n).data != nullptr);
  };
  if (!copts_.graphs) {
    step();
    return;
  }
  auto it = graphs_.find(n);
  if (it == graphs_.end()) {
    // A batch size's first step runs as plain launches; its graph is captured on the second.
    // Under continuous batching the size changes whenever a sequence joins or leaves, and many
    // sizes occur for a single step: capturing and instantiating a graph costs several plain
    // steps' worth of host time. Graph and plain steps compute the same bits.
    if (plain_steps_[n]++ < 1) {
      step();
      return;
    }
    // Everything the step touches is a fixed buffer, so the graph stays valid for every later
    // step of this batch size: only the contents of tokens_ and slots_ change.
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      step();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(err);
    it = graphs_.emplace(n, exec).first;
  }
  CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void CudaBackend::step_rows(std::span<const int> slots, std::span<const int32_t> tokens,
                            int64_t b0, int nb) {
  // host_ids_: [tokens | slots | banned | picks], kMaxDecodeBatch each.
  int32_t* ids = host_ids_.as<int32_t>();
  for (int i = 0; i < nb; i++) {
    ids[i] = tokens[size_t(b0 + i)];
    ids[kMaxDecodeBatch + i] = slots[size_t(b0 + i)];
  }
  CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), ids, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(slots_.data(), ids + kMaxDecodeBatch, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  decode_batch(nb);
}

void CudaBackend::decode_rows(std::span<const int> slots, std::span<const int32_t> tokens,
                              int64_t b0, int nb) {
  step_rows(slots, tokens, b0, nb);
  CUDA_CHECK(cudaMemcpyAsync(host_logits_.as<float>(), logits_.data(),
                             size_t(nb) * size_t(c_.n_vocab) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::decode(std::span<const int> slots, std::span<const int32_t> tokens,
                         std::vector<float>& logits) {
  check_decode(slots, tokens);
  const int64_t n = int64_t(tokens.size()), V = c_.n_vocab;
  logits.resize(size_t(n * V));
  const int max_batch = max_decode_batch();
  for (int64_t b0 = 0; b0 < n; b0 += max_batch) {
    const int nb = int(std::min<int64_t>(max_batch, n - b0));
    decode_rows(slots, tokens, b0, nb);
    std::memcpy(logits.data() + b0 * V, host_logits_.as<float>(),
                size_t(nb) * size_t(V) * sizeof(float));
  }
}

std::span<const float> CudaBackend::decode_view(std::span<const int> slots,
                                                std::span<const int32_t> tokens) {
  if (int64_t(tokens.size()) > max_decode_batch()) return Backend::decode_view(slots, tokens);
  check_decode(slots, tokens);
  if (tokens.empty()) return {};
  decode_rows(slots, tokens, 0, int(tokens.size()));
  return {host_logits_.as<float>(), tokens.size() * size_t(c_.n_vocab)};
}

// The same step as decode_view (step_rows: the persistent kernel or the per-kernel layers, from
// a graph or plain launches), then each row's pick from logits_ on the device, after the step
// in stream order; only the nb ids come back, through the page-locked host_ids_.
std::span<const int32_t> CudaBackend::decode_greedy(std::span<const int> slots,
                                                    std::span<const int32_t> tokens,
                                                    std::span<const int32_t> banned) {
  if (int64_t(tokens.size()) > max_decode_batch())
    return Backend::decode_greedy(slots, tokens, banned);
  check_decode(slots, tokens);
  check_banned(tokens, banned);
  if (tokens.empty()) return {};
  const int nb = int(tokens.size());
  int32_t* bans = host_ids_.as<int32_t>() + 2 * kMaxDecodeBatch;
  int32_t* picks = host_ids_.as<int32_t>() + 3 * kMaxDecodeBatch;
  std::copy(banned.begin(), banned.end(), bans);
  CUDA_CHECK(cudaMemcpyAsync(banned_.data(), bans, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  step_rows(slots, tokens, 0, nb);
  cuda::argmax_rows(logits_.as<float>(), c_.n_vocab, nb, int(c_.n_vocab), banned_.as<int32_t>(),
                    picks_.as<int32_t>(), stream_);
  CUDA_CHECK(cudaMemcpyAsync(picks, picks_.data(), size_t(nb) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, stream_));
  // The host copies above read and write host_ids_, which the next call rewrites.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {picks, size_t(nb)};
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opts,
                                           const CudaOptions& cuda) {
  return std::make_unique<CudaBackend>(model, opts, cuda);
}

bool cuda_persistent_decode(const Backend& b) {
  const auto* c = dynamic_cast<const CudaBackend*>(&b);
  return c && c->runs_persistent();
}

}  // namespace mamba
