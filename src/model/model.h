// A loaded model: the memory-mapped GGUF file, its ModelConfig, and typed views of every
// weight, checked against the config before anything computes with them.
//
// Big matrices (the projections and the embedding) stay in the mapping in their stored dtype
// (f32, f16 or bf16): nothing is copied, the backends read them directly. Small tensors (norm
// weights, biases, conv1d, A, D) are converted to float32 vectors at load, so the compute code
// only ever sees one dtype for them.
//
// Names follow the GGUF tensor names; the PyTorch module each one comes from is given in the
// comments (shapes are PyTorch shapes, rows first).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"

namespace mamba {

// A row-major (rows, cols) matrix inside the mapped file: row r starts at element r * cols.
// In GGUF terms ne = {cols, rows}.
struct Matrix {
  const void* data = nullptr;
  gguf::DType dtype = gguf::DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct LayerWeights {
  // ---- both architectures ----
  std::vector<float> attn_norm;      // (d_model)                   norm.weight
  Matrix in_proj;                    // (in_proj_rows, d_model)     mixer.in_proj.weight
  std::vector<float> in_proj_bias;   // (in_proj_rows) or empty     mixer.in_proj.bias
  std::vector<float> conv_w;         // (conv_dim, d_conv)          mixer.conv1d.weight
  std::vector<float> conv_b;         // (conv_dim), zeros if absent mixer.conv1d.bias
  std::vector<float> dt_bias;        // Mamba-1 (d_inner), Mamba-2 (n_heads)
  std::vector<float> A;              // Mamba-1 (d_inner, d_state), Mamba-2 (n_heads); = -exp(A_log)
  std::vector<float> D;              // Mamba-1 (d_inner), Mamba-2 (n_heads)
  Matrix out_proj;                   // (d_model, d_inner)          mixer.out_proj.weight
  std::vector<float> out_proj_bias;  // (d_model) or empty          mixer.out_proj.bias
  // ---- Mamba-1 only ----
  Matrix x_proj;   // (dt_rank + 2*d_state, d_inner)  mixer.x_proj.weight
  Matrix dt_proj;  // (d_inner, dt_rank)              mixer.dt_proj.weight
  // ---- Mamba-2 only ----
  std::vector<float> norm;  // (d_inner)  mixer.norm.weight, the gated RMSNorm
};

class Model {
 public:
  // Opens, maps and validates a GGUF model. Throws mamba::Error with one line naming the
  // problem (a missing tensor, a wrong shape, an unsupported dtype, ...).
  static std::unique_ptr<Model> load(const std::string& path);
  // Same checks on an already opened file (tests build files in memory).
  static std::unique_ptr<Model> from_gguf(std::unique_ptr<gguf::File> file);

  const ModelConfig& config() const { return config_; }
  const gguf::File& gguf() const { return *file_; }

  Matrix token_embd;                 // (n_vocab, d_model)   backbone.embeddings.weight
  std::vector<float> output_norm;    // (d_model)            backbone.norm_f.weight
  Matrix output;                     // (n_vocab, d_model)   lm_head.weight (= token_embd if tied)
  bool tied = false;                 // true when the file has no output.weight
  std::vector<LayerWeights> layers;  // (n_layer)

  int32_t eos_id = -1;        // tokenizer.ggml.eos_token_id, -1 when absent
  uint64_t n_params = 0;      // elements over all tensors
  uint64_t weight_bytes = 0;  // bytes of tensor data in the file
  // Problems that do not stop the model from loading (NaN/Inf weights), one line each, for
  // the tools to print as "warning: ...".
  std::vector<std::string> warnings;

 private:
  Model() = default;
  std::unique_ptr<gguf::File> file_;
  ModelConfig config_;
};

// ---- loading helpers shared by model.cpp and the per-architecture files -----------------

// Checks tensors by name against expected shapes and hands out typed views. Every tensor
// that is looked up is marked as used, so the loader can reject files with extra tensors.
class TensorLoader {
 public:
  explicit TensorLoader(const gguf::File& f) : f_(f) {}

  // Shapes are given in PyTorch order (rows first); `alt` is an accepted alternative layout
  // (e.g. a plain 1-D vector instead of (n_heads, 1)). Missing required tensors throw.
  Matrix matrix(const std::string& name, int64_t rows, int64_t cols);
  std::vector<float> vec(const std::string& name, const std::vector<int64_t>& shape,
                         const std::vector<int64_t>& alt = {});
  // Optional tensor: empty result when absent, else checked like vec().
  std::vector<float> opt_vec(const std::string& name, const std::vector<int64_t>& shape,
                             const std::vector<int64_t>& alt = {});
  bool has(const std::string& name) const { return f_.find_tensor(name) != nullptr; }
  // Throws if the file holds a tensor that nobody asked for.
  void check_all_used() const;

 private:
  const gguf::TensorInfo& get(const std::string& name, const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& alt);
  const gguf::File& f_;
  std::vector<std::string> used_;
};

// Per-architecture tensor lists (mamba1.cpp, mamba2.cpp).
void load_mamba1_layer(TensorLoader& tl, const ModelConfig& c, int il, LayerWeights& w);
void load_mamba2_layer(TensorLoader& tl, const ModelConfig& c, int il, LayerWeights& w);

// "[80, 1536]"
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace mamba
