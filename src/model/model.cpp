// Model loading: the architecture-independent tensors, then one layer at a time through the
// per-architecture tensor lists in mamba1.cpp / mamba2.cpp. Everything read from the file is
// checked against the config first; the backends rely on these checks and do no more.
#include "model/model.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/half.h"

namespace mamba {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// GGUF lists dims fastest first; PyTorch (and our messages) list them slowest first.
static std::vector<int64_t> torch_shape(const gguf::TensorInfo& t) {
  std::vector<int64_t> s;
  for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) s.push_back(int64_t(*it));
  return s;
}

static void check_dtype(const gguf::TensorInfo& t) {
  switch (t.dtype) {
    case gguf::DType::F32:
    case gguf::DType::F16:
    case gguf::DType::BF16:
      return;
  }
  fail("tensor ", t.name, " has unsupported dtype ", uint32_t(t.dtype),
       " (supported: F32, F16, BF16)");
}

const gguf::TensorInfo& TensorLoader::get(const std::string& name,
                                          const std::vector<int64_t>& shape,
                                          const std::vector<int64_t>& alt) {
  const gguf::TensorInfo* t = f_.find_tensor(name);
  if (!t) fail("missing tensor ", name);
  check_dtype(*t);
  const std::vector<int64_t> got = torch_shape(*t);
  if (got != shape && (alt.empty() || got != alt))
    fail(name, " has shape ", shape_str(got), ", expected ", shape_str(shape));
  used_.push_back(name);
  return *t;
}

Matrix TensorLoader::matrix(const std::string& name, int64_t rows, int64_t cols) {
  const gguf::TensorInfo& t = get(name, {rows, cols}, {});
  return Matrix{t.data, t.dtype, rows, cols};
}

std::vector<float> TensorLoader::vec(const std::string& name, const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& alt) {
  const gguf::TensorInfo& t = get(name, shape, alt);
  std::vector<float> out(t.n_elements);
  switch (t.dtype) {
    case gguf::DType::F32:
      std::memcpy(out.data(), t.data, t.n_elements * 4);
      break;
    case gguf::DType::F16:
    case gguf::DType::BF16:
      for (uint64_t i = 0; i < t.n_elements; i++) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = t.dtype == gguf::DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
  }
  return out;
}

std::vector<float> TensorLoader::opt_vec(const std::string& name, const std::vector<int64_t>& shape,
                                         const std::vector<int64_t>& alt) {
  if (!has(name)) return {};
  return vec(name, shape, alt);
}

void TensorLoader::check_all_used() const {
  for (const gguf::TensorInfo& t : f_.tensors())
    if (std::find(used_.begin(), used_.end(), t.name) == used_.end())
      fail("unexpected tensor ", t.name, " in this model");
}

// Non-finite values (NaN, +-Inf) in one tensor's data: an all-ones exponent field. Bit tests
// on the raw words keep this one branch-free pass over the mapping (vectorised, ~memory speed)
// and do not depend on floating-point flags such as -ffast-math.
static uint64_t count_non_finite(const gguf::TensorInfo& t) {
  uint64_t n = 0;
  if (t.dtype == gguf::DType::F32) {
    for (uint64_t i = 0; i < t.n_elements; i++) {
      uint32_t u;
      std::memcpy(&u, t.data + 4 * i, 4);
      n += (u & 0x7f800000u) == 0x7f800000u;
    }
  } else {
    const uint16_t exp = t.dtype == gguf::DType::F16 ? 0x7c00 : 0x7f80;
    for (uint64_t i = 0; i < t.n_elements; i++) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      n += (h & exp) == exp;
    }
  }
  return n;
}

// One warning line for all tensors with NaN/Inf weights: they make the logits NaN, but a file
// may still be worth inspecting, so loading goes on (the tools print the warning).
static void check_finite(const gguf::File& f, std::vector<std::string>& warnings) {
  uint64_t tensors = 0, values = 0;
  std::string first;
  for (const gguf::TensorInfo& t : f.tensors()) {
    const uint64_t n = count_non_finite(t);
    if (n == 0) continue;
    if (tensors++ == 0)
      first = t.name + " has " + std::to_string(n) + " of " + std::to_string(t.n_elements);
    values += n;
  }
  if (tensors == 0) return;
  std::string w = std::to_string(values) + " NaN/Inf weight values in " + std::to_string(tensors) +
                  (tensors == 1 ? " tensor (" : " tensors (first: ") + first +
                  "); the model's outputs will not be finite";
  warnings.push_back(std::move(w));
}

std::unique_ptr<Model> Model::load(const std::string& path) {
  return from_gguf(gguf::File::open(path));
}

std::unique_ptr<Model> Model::from_gguf(std::unique_ptr<gguf::File> file) {
  std::unique_ptr<Model> m(new Model());
  const gguf::File& f = *file;
  ModelConfig c = config_from_gguf(f);

  // n_vocab is the row count of the embedding (checkpoints pad it past the tokenizer's size).
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) fail("missing tensor token_embd.weight");
  if (emb->ne.size() != 2)
    fail("token_embd.weight has shape ", shape_str(torch_shape(*emb)), ", expected [n_vocab, ",
         c.d_model, "]");
  const int64_t rows = int64_t(emb->ne[1]);
  if (c.n_vocab != 0 && c.n_vocab != rows)
    fail(arch_gguf_name(c.arch), ".vocab_size = ", c.n_vocab,
         " does not match token_embd.weight's ", rows, " rows");
  c.n_vocab = rows;
  c.validate();

  TensorLoader tl(f);
  m->token_embd = tl.matrix("token_embd.weight", c.n_vocab, c.d_model);
  m->output_norm = tl.vec("output_norm.weight", {c.d_model});
  m->tied = !tl.has("output.weight");
  m->output = m->tied ? m->token_embd : tl.matrix("output.weight", c.n_vocab, c.d_model);

  m->layers.resize(size_t(c.n_layer));
  for (int il = 0; il < int(c.n_layer); il++) {
    LayerWeights& w = m->layers[size_t(il)];
    const std::string p = "blk." + std::to_string(il) + ".";
    // Parts every Mamba block has; the mixer-specific tensors come from the arch files.
    w.attn_norm = tl.vec(p + "attn_norm.weight", {c.d_model});
    w.in_proj = tl.matrix(p + "ssm_in.weight", c.in_proj_rows(), c.d_model);
    w.in_proj_bias = tl.opt_vec(p + "ssm_in.bias", {c.in_proj_rows()});
    // llama.cpp squeezes PyTorch's (conv_dim, 1, d_conv) to (conv_dim, d_conv); take either.
    w.conv_w =
        tl.vec(p + "ssm_conv1d.weight", {c.conv_dim(), c.d_conv}, {c.conv_dim(), 1, c.d_conv});
    w.conv_b = tl.opt_vec(p + "ssm_conv1d.bias", {c.conv_dim()});
    if (w.conv_b.empty()) w.conv_b.assign(size_t(c.conv_dim()), 0.0f);
    w.out_proj = tl.matrix(p + "ssm_out.weight", c.d_model, c.d_inner);
    w.out_proj_bias = tl.opt_vec(p + "ssm_out.bias", {c.d_model});
    if (c.arch == Arch::Mamba1)
      load_mamba1_layer(tl, c, il, w);
    else
      load_mamba2_layer(tl, c, il, w);
  }
  tl.check_all_used();

  if (const gguf::Value* v = f.find("tokenizer.ggml.eos_token_id")) {
    if (!v->is_int()) fail("metadata key 'tokenizer.ggml.eos_token_id' is not an integer");
    const int64_t id = f.get_int("tokenizer.ggml.eos_token_id");
    if (id < 0 || id >= c.n_vocab)
      fail("tokenizer.ggml.eos_token_id = ", id, " is out of range (n_vocab = ", c.n_vocab, ")");
    m->eos_id = int32_t(id);
  }
  for (const gguf::TensorInfo& t : f.tensors()) {
    m->n_params += t.n_elements;
    m->weight_bytes += t.n_bytes;
  }
  check_finite(f, m->warnings);
  m->config_ = c;
  m->file_ = std::move(file);
  return m;
}

}  // namespace mamba
