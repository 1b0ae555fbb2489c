#include "convert/converter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "common/error.h"
#include "common/half.h"
#include "convert/checkpoint.h"
#include "convert/files.h"
#include "convert/hf_config.h"

namespace mamba::convert {

namespace st = safetensors;
using Shape = std::vector<uint64_t>;

namespace {

std::string shape_str(const Shape& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

// ---- source tensors by canonical name --------------------------------------------------

// Checkpoints spell a few names differently; this maps them all to the HF names:
//   model.backbone.* / model.lm_head.*  (some Mamba-2 repos)  -> backbone.* / lm_head.*
//   backbone.embedding.weight           (mamba_ssm)          -> backbone.embeddings.weight
std::string canonical_name(const std::string& name) {
  std::string n = name;
  if (n.rfind("model.backbone.", 0) == 0 || n.rfind("model.lm_head.", 0) == 0) n = n.substr(6);
  if (n == "backbone.embedding.weight") n = "backbone.embeddings.weight";
  return n;
}

// Hands out checkpoint tensors by canonical name, checking shape and dtype, and remembers
// which were taken so that anything left over can be reported as unexpected.
class Sources {
 public:
  Sources(const Checkpoint& ck, std::string dims) : dims_(std::move(dims)) {
    for (const auto& [name, entry] : ck.tensors) {
      auto [it, inserted] = items_.emplace(canonical_name(name), Item{name, &entry});
      if (!inserted)
        fail("tensors '", it->second.original, "' and '", name,
             "' are the same weight under two names");
    }
  }

  // nullptr when absent; does not mark it taken.
  const st::Tensor* peek(const std::string& name) const {
    auto it = items_.find(name);
    return it == items_.end() ? nullptr : it->second.entry->tensor;
  }

  // The tensor, which must exist and have one of the allowed shapes (the first is the
  // canonical one, shown in messages).
  const st::Tensor* take(const std::string& name, const std::vector<Shape>& shapes,
                         const char* why = nullptr) {
    auto it = items_.find(name);
    if (it == items_.end()) {
      if (why) fail("missing tensor '", name, "' (", why, ")");
      fail("missing tensor '", name, "'");
    }
    Item& item = it->second;
    const st::Tensor* t = item.entry->tensor;
    if (std::find(shapes.begin(), shapes.end(), t->shape) == shapes.end())
      fail("tensor '", item.original, "' has shape ", shape_str(t->shape), ", expected ",
           shape_str(shapes[0]), " for config.json's ", dims_);
    check_float(item);
    item.taken = true;
    return t;
  }

  // A bias that exists exactly when the config says so.
  const st::Tensor* take_bias(const std::string& name, const Shape& shape, bool configured,
                              const std::string& flag) {
    if (configured) return take(name, {shape}, (flag + " = true").c_str());
    if (items_.count(name))
      fail("unexpected tensor '", items_.at(name).original, "' (config.json has ", flag,
           " = false)");
    return nullptr;
  }

  void mark_taken(const std::string& name) {
    Item& item = items_.at(name);
    check_float(item);
    item.taken = true;
  }

  void check_all_taken(int64_t n_layer) const {
    for (const auto& [name, item] : items_) {
      if (item.taken) continue;
      std::string hint;
      int64_t layer = -1;
      if (std::sscanf(name.c_str(), "backbone.layers.%ld.", &layer) == 1 && layer >= n_layer)
        hint = " (config.json has " + std::to_string(n_layer) + " layers)";
      fail("unexpected tensor '", item.original, "' in ", item.entry->file, hint);
    }
  }

 private:
  struct Item {
    std::string original;
    const Checkpoint::Entry* entry;
    bool taken = false;
  };
  static void check_float(const Item& item) {
    if (!st::is_float(item.entry->tensor->dtype))
      fail("tensor '", item.original, "' has dtype ", st::dtype_name(item.entry->tensor->dtype),
           "; only F64, F32, F16 and BF16 can be converted");
  }
  std::map<std::string, Item> items_;
  std::string dims_;
};

// ---- the plan: which GGUF tensor comes from which source, and how ------------------------

enum class Op {
  Matrix,  // converted to the chosen outtype
  F32,     // kept in float32
  NegExp,  // A = -exp(A_log), in double precision, stored as float32
};

struct Planned {
  std::string name;  // GGUF name
  const st::Tensor* src;
  Op op;
  gguf::DType dtype;
  Shape ne;  // GGUF order, ne[0] fastest
};

struct Plan {
  ModelConfig config;
  gguf::DType matrix_dtype = gguf::DType::F32;
  bool tied = false;
  std::vector<Planned> tensors;
};

std::string dims_text(const ModelConfig& c) {
  std::string s = "d_model " + std::to_string(c.d_model) + ", d_inner " +
                  std::to_string(c.d_inner) + ", d_state " + std::to_string(c.d_state) +
                  ", d_conv " + std::to_string(c.d_conv);
  if (c.arch == Arch::Mamba1) return s + ", dt_rank " + std::to_string(c.dt_rank);
  return s + ", n_heads " + std::to_string(c.n_heads) + ", n_groups " + std::to_string(c.n_groups);
}

// The embedding gives n_vocab: checkpoints pad the vocabulary beyond config's vocab_size.
const st::Tensor* check_embedding(Sources& src, const HfConfig& h) {
  const st::Tensor* e = src.peek("backbone.embeddings.weight");
  if (!e) fail("missing tensor 'backbone.embeddings.weight' (the token embedding)");
  const uint64_t d_model = uint64_t(h.model.d_model);
  if (e->shape.size() != 2 || e->shape[1] != d_model || e->shape[0] == 0)
    fail("tensor 'backbone.embeddings.weight' has shape ", shape_str(e->shape),
         ", expected (n_vocab, ", d_model, ") for config.json's hidden size ", d_model);
  if (e->shape[0] > uint64_t(1) << 24)
    fail("tensor 'backbone.embeddings.weight' has ", e->shape[0],
         " rows, too many for a vocabulary");
  if (h.vocab_size > int64_t(e->shape[0]))
    fail("config.json vocab_size (", h.vocab_size, ") is larger than the embedding's ", e->shape[0],
         " rows");
  src.mark_taken("backbone.embeddings.weight");
  return e;
}

gguf::DType resolve_outtype(OutType t, st::DType source) {
  switch (t) {
    case OutType::F32:
      return gguf::DType::F32;
    case OutType::F16:
      return gguf::DType::F16;
    case OutType::BF16:
      return gguf::DType::BF16;
    case OutType::Auto:
      break;
  }
  if (source == st::DType::F16) return gguf::DType::F16;
  if (source == st::DType::BF16) return gguf::DType::BF16;
  return gguf::DType::F32;  // F32 and F64 sources
}

Plan make_plan(const HfConfig& h, const Checkpoint& ck, OutType outtype,
               const std::function<void(const std::string&)>& warn) {
  Plan plan;
  plan.config = h.model;
  ModelConfig& c = plan.config;
  Sources src(ck, dims_text(c));

  const st::Tensor* embd = check_embedding(src, h);
  c.n_vocab = int64_t(embd->shape[0]);
  c.validate();
  plan.matrix_dtype = resolve_outtype(outtype, embd->dtype);

  auto u = [](int64_t v) { return uint64_t(v); };
  const uint64_t d_model = u(c.d_model), d_inner = u(c.d_inner), d_state = u(c.d_state),
                 d_conv = u(c.d_conv), conv_dim = u(c.conv_dim());
  auto add = [&](std::string name, const st::Tensor* t, Op op, Shape ne) {
    if (!t) return;
    const gguf::DType dt = op == Op::Matrix ? plan.matrix_dtype : gguf::DType::F32;
    plan.tensors.push_back({std::move(name), t, op, dt, std::move(ne)});
  };
  // GGUF ne is the PyTorch shape reversed; every planned tensor below states both.
  add("token_embd.weight", embd, Op::Matrix, {d_model, u(c.n_vocab)});

  const std::string bias_flag = h.state_spaces ? "ssm_cfg.bias" : "use_bias";
  const std::string conv_bias_flag = h.state_spaces ? "ssm_cfg.conv_bias" : "use_conv_bias";
  const uint64_t in_rows = u(c.in_proj_rows());
  for (int64_t i = 0; i < c.n_layer; i++) {
    const std::string l = "backbone.layers." + std::to_string(i) + ".";
    const std::string m = l + "mixer.";
    const std::string b = "blk." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", src.take(l + "norm.weight", {{d_model}}), Op::F32, {d_model});
    add(b + "ssm_in.weight", src.take(m + "in_proj.weight", {{in_rows, d_model}}), Op::Matrix,
        {d_model, in_rows});
    add(b + "ssm_in.bias", src.take_bias(m + "in_proj.bias", {in_rows}, h.proj_bias, bias_flag),
        Op::F32, {in_rows});
    // (conv_dim, 1, d_conv) squeezed to (conv_dim, d_conv); an already squeezed one is fine.
    add(b + "ssm_conv1d.weight",
        src.take(m + "conv1d.weight", {{conv_dim, 1, d_conv}, {conv_dim, d_conv}}), Op::F32,
        {d_conv, conv_dim});
    add(b + "ssm_conv1d.bias",
        src.take_bias(m + "conv1d.bias", {conv_dim}, h.conv_bias, conv_bias_flag), Op::F32,
        {conv_dim});
    if (c.arch == Arch::Mamba1) {
      const uint64_t dt_rank = u(c.dt_rank);
      add(b + "ssm_x.weight", src.take(m + "x_proj.weight", {{dt_rank + 2 * d_state, d_inner}}),
          Op::Matrix, {d_inner, dt_rank + 2 * d_state});
      add(b + "ssm_dt.weight", src.take(m + "dt_proj.weight", {{d_inner, dt_rank}}), Op::Matrix,
          {dt_rank, d_inner});
      add(b + "ssm_dt.bias", src.take(m + "dt_proj.bias", {{d_inner}}), Op::F32, {d_inner});
      add(b + "ssm_a", src.take(m + "A_log", {{d_inner, d_state}}), Op::NegExp, {d_state, d_inner});
      add(b + "ssm_d", src.take(m + "D", {{d_inner}}), Op::F32, {d_inner});
    } else {
      const uint64_t n_heads = u(c.n_heads), n_groups = u(c.n_groups);
      add(b + "ssm_dt.bias", src.take(m + "dt_bias", {{n_heads}}), Op::F32, {n_heads});
      // A and D become (n_heads, 1) so they broadcast like Mamba-1's per-channel ones.
      add(b + "ssm_a", src.take(m + "A_log", {{n_heads}}), Op::NegExp, {1, n_heads});
      add(b + "ssm_d", src.take(m + "D", {{n_heads}}), Op::F32, {1, n_heads});
      // The gated RMSNorm normalises each group separately: (n_groups, d_inner / n_groups).
      add(b + "ssm_norm.weight", src.take(m + "norm.weight", {{d_inner}}), Op::F32,
          {d_inner / n_groups, n_groups});
    }
    add(b + "ssm_out.weight", src.take(m + "out_proj.weight", {{d_model, d_inner}}), Op::Matrix,
        {d_inner, d_model});
    add(b + "ssm_out.bias", src.take_bias(m + "out_proj.bias", {d_model}, h.proj_bias, bias_flag),
        Op::F32, {d_model});
  }
  add("output_norm.weight", src.take("backbone.norm_f.weight", {{d_model}}), Op::F32, {d_model});

  // output.weight is omitted when the config ties it to the embedding and the checkpoint
  // either has no lm_head or one that is a copy of the embedding.
  const st::Tensor* head = src.peek("lm_head.weight");
  if (!head) {
    if (!h.tie_embeddings)
      fail("missing tensor 'lm_head.weight' (config.json does not tie it to the embedding)");
    plan.tied = true;
  } else {
    src.take("lm_head.weight", {embd->shape});
    const bool same = head->dtype == embd->dtype && head->n_bytes == embd->n_bytes &&
                      std::memcmp(head->data, embd->data, head->n_bytes) == 0;
    if (h.tie_embeddings) {
      plan.tied = true;
      if (!same && warn)
        warn(
            "lm_head.weight differs from the embedding, but config.json ties them; using the "
            "embedding (as transformers does)");
    } else {
      add("output.weight", head, Op::Matrix, {d_model, u(c.n_vocab)});
    }
  }
  src.check_all_taken(c.n_layer);
  return plan;
}

// ---- producing tensor bytes ---------------------------------------------------------------

bool same_format(st::DType s, gguf::DType g) {
  return (s == st::DType::F32 && g == gguf::DType::F32) ||
         (s == st::DType::F16 && g == gguf::DType::F16) ||
         (s == st::DType::BF16 && g == gguf::DType::BF16);
}

void store_block(gguf::DType dt, const float* in, uint64_t n, uint8_t* out) {
  if (dt == gguf::DType::F32) {
    std::memcpy(out, in, n * 4);
    return;
  }
  for (uint64_t i = 0; i < n; i++) {
    const uint16_t h = dt == gguf::DType::F16 ? f32_to_f16(in[i]) : f32_to_bf16(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// Fills one GGUF tensor, a block at a time, so a conversion never holds a whole tensor twice.
void produce(const Planned& p, uint8_t* out, size_t n_bytes) {
  const st::Tensor& s = *p.src;
  const uint64_t n = s.n_elements;
  if (n_bytes != n * gguf::dtype_size(p.dtype))
    fail("internal error: ", p.name, " needs ", n * gguf::dtype_size(p.dtype), " bytes, got ",
         n_bytes);
  if (p.op != Op::NegExp && same_format(s.dtype, p.dtype)) {
    std::memcpy(out, s.data, n_bytes);
    return;
  }
  constexpr uint64_t kBlock = 1 << 16;
  std::vector<float> f(std::min(kBlock, n));
  std::vector<double> d(p.op == Op::NegExp ? f.size() : 0);
  const size_t in_size = st::dtype_size(s.dtype), out_size = gguf::dtype_size(p.dtype);
  for (uint64_t i0 = 0; i0 < n; i0 += kBlock) {
    const uint64_t m = std::min(kBlock, n - i0);
    const uint8_t* in = s.data + i0 * in_size;
    if (p.op == Op::NegExp) {
      st::to_f64(s.dtype, in, m, d.data());
      for (uint64_t j = 0; j < m; j++) f[j] = float(-std::exp(d[j]));
    } else {
      st::to_f32(s.dtype, in, m, f.data());
    }
    store_block(p.dtype, f.data(), m, out + i0 * out_size);
  }
}

uint32_t file_type_of(gguf::DType t) {  // llama.cpp's LLAMA_FTYPE
  switch (t) {
    case gguf::DType::F32:
      return 0;  // ALL_F32
    case gguf::DType::F16:
      return 1;  // MOSTLY_F16
    case gguf::DType::BF16:
      return 32;  // MOSTLY_BF16
  }
  return 0;
}

std::string model_name_of(const std::string& dir) {
  std::filesystem::path p = std::filesystem::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "dir/" normalises to a trailing slash
  return p.filename().string();
}

void print_warning(const std::string& msg) { std::fprintf(stderr, "warning: %s\n", msg.c_str()); }

}  // namespace

OutType parse_outtype(const std::string& s) {
  if (s == "auto") return OutType::Auto;
  if (s == "f32") return OutType::F32;
  if (s == "f16") return OutType::F16;
  if (s == "bf16") return OutType::BF16;
  fail("unknown outtype '", s, "' (expected f32, f16, bf16 or auto)");
}

ConvertResult convert(const ConvertOptions& opt) {
  const auto warn = opt.warn ? opt.warn : print_warning;
  if (!is_directory(opt.hf_dir)) {
    if (is_regular_file(opt.hf_dir)) fail(opt.hf_dir, " is a file; expected a model directory");
    fail("model directory ", opt.hf_dir, " does not exist");
  }
  if (opt.out_path.empty()) fail("no output path given");
  if (is_directory(opt.out_path)) fail("output path ", opt.out_path, " is a directory");

  const HfConfig h = load_hf_config(opt.hf_dir);
  ConvertResult result;
  result.arch = h.model.arch;

  std::unique_ptr<Checkpoint> ck;
  Plan plan;
  if (!opt.vocab_only || has_checkpoint(opt.hf_dir)) ck = open_checkpoint(opt.hf_dir);
  if (!opt.vocab_only) {
    plan = make_plan(h, *ck, opt.outtype, warn);
  } else {
    plan.config = h.model;
    if (ck) {  // only the embedding's row count is needed
      Sources src(*ck, dims_text(h.model));
      plan.config.n_vocab = int64_t(check_embedding(src, h)->shape[0]);
    } else {
      plan.config.n_vocab = h.padded_vocab_size();
      if (plan.config.n_vocab <= 0)
        fail("config.json has no vocab_size and there are no weights to take it from");
    }
    plan.config.validate();
  }
  result.n_vocab = plan.config.n_vocab;
  result.matrix_dtype = plan.matrix_dtype;
  result.output_tied = plan.tied;

  gguf::Writer w;
  config_to_gguf(plan.config, w);  // general.architecture and the <arch>.* keys
  w.set_str("general.name", model_name_of(opt.hf_dir));
  if (!opt.vocab_only) w.set_u32("general.file_type", file_type_of(plan.matrix_dtype));
  result.tokenizer = add_tokenizer(opt.hf_dir, h, plan.config.n_vocab, w, warn);

  if (!opt.vocab_only) {
    for (const Planned& p : plan.tensors) {
      w.add_tensor(p.name, p.dtype, p.ne, [p](uint8_t* out, size_t n) { produce(p, out, n); });
    }
    result.n_tensors = plan.tensors.size();
  }
  w.write(opt.out_path, opt.progress);
  std::error_code ec;
  result.file_bytes = std::filesystem::file_size(opt.out_path, ec);
  return result;
}

}  // namespace mamba::convert
