#include "convert/hf_config.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "convert/files.h"

namespace mamba::convert {

using json = nlohmann::json;

namespace {

constexpr const char* kSupported =
    "(supported: MambaForCausalLM, Mamba2ForCausalLM, FalconMambaForCausalLM, state-spaces config)";

// Typed access to one JSON object, with messages that say which file and key is wrong.
// A key whose value is null counts as absent (Python writes None as null).
struct Fields {
  const json& j;
  std::string where;  // "config.json" or "config.json: ssm_cfg"

  const json* get(const char* key) const {
    auto it = j.find(key);
    return (it == j.end() || it->is_null()) ? nullptr : &*it;
  }
  bool has(const char* key) const { return get(key) != nullptr; }

  int64_t integer(const char* key, int64_t def) const {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_number_integer()) fail(where, ": '", key, "' must be an integer, got ", v->dump());
    return v->get<int64_t>();
  }
  int64_t required_integer(const char* key) const {
    if (!has(key)) fail(where, ": missing '", key, "'");
    return integer(key, 0);
  }
  double number(const char* key, double def) const {
    const json* v = get(key);
    return v ? as_number(*v, key) : def;
  }
  bool boolean(const char* key, bool def) const {
    const json* v = get(key);
    if (!v) return def;
    if (!v->is_boolean()) fail(where, ": '", key, "' must be true or false, got ", v->dump());
    return v->get<bool>();
  }
  // A number, or a non-finite float in one of the two spellings Python tools write:
  // a bare Infinity (Python's json, turned into a string by python_json_to_strict) or
  // {"__float__": "Infinity"} (transformers 5).
  double as_number(const json& v, const char* key) const {
    if (v.is_number()) return v.get<double>();
    const json* s = &v;
    if (v.is_object() && v.size() == 1 && v.contains("__float__")) s = &v["__float__"];
    if (s->is_string()) {
      const std::string t = s->get<std::string>();
      if (t == "Infinity" || t == "inf") return std::numeric_limits<double>::infinity();
      if (t == "-Infinity" || t == "-inf") return -std::numeric_limits<double>::infinity();
      if (t == "NaN" || t == "nan") return std::numeric_limits<double>::quiet_NaN();
    }
    fail(where, ": '", key, "' must be a number, got ", v.dump());
  }
  std::optional<int64_t> token_id(const char* key) const {
    const json* v = get(key);
    if (!v) return std::nullopt;
    // eos_token_id may be a list (several stop tokens); the first is the main one.
    if (v->is_array() && !v->empty()) v = &(*v)[0];
    if (!v->is_number_integer() || v->get<int64_t>() < 0) return std::nullopt;
    return v->get<int64_t>();
  }
};

// Every size in a config is positive, and no real one comes near 2^31: the bound keeps the
// products computed from them (heads x head_dim, expand x hidden_size, tensor shapes) far
// from overflow.
constexpr int64_t kMaxDim = (int64_t(1) << 31) - 1;

int64_t positive(const Fields& f, const char* key, int64_t v) {
  if (v <= 0) fail(f.where, ": '", key, "' must be positive, got ", v);
  if (v > kMaxDim) fail(f.where, ": '", key, "' = ", v, " is out of range (at most ", kMaxDim, ")");
  return v;
}

// expand * d_model, as the Python code computes int(expand * hidden_size).
int64_t expanded(const Fields& f, const char* key, double expand, int64_t d_model) {
  if (!(expand > 0) || !std::isfinite(expand) || expand > 1024)
    fail(f.where, ": '", key, "' = ", expand, " is out of range");
  const double d_inner = expand * double(d_model);
  if (!(d_inner >= 1) || d_inner > double(kMaxDim))
    fail(f.where, ": '", key, "' x hidden size = ", d_inner, " is out of range");
  return int64_t(d_inner);
}

// time_step_rank / dt_rank: an integer or "auto" (= ceil(d_model / 16)).
int64_t dt_rank_of(const Fields& f, const char* key, int64_t d_model) {
  const json* v = f.get(key);
  if (!v || (v->is_string() && v->get<std::string>() == "auto")) return (d_model + 15) / 16;
  if (!v->is_number_integer())
    fail(f.where, ": '", key, "' must be an integer or \"auto\", got ", v->dump());
  return positive(f, key, v->get<int64_t>());
}

void read_token_ids(const Fields& f, HfConfig& h) {
  h.bos_token_id = f.token_id("bos_token_id");
  h.eos_token_id = f.token_id("eos_token_id");
  h.pad_token_id = f.token_id("pad_token_id");
}

void check_activation(const Fields& f) {
  const json* act = f.get("hidden_act");
  if (act && !(act->is_string() && act->get<std::string>() == "silu"))
    fail(f.where, ": hidden_act ", act->dump(), " is not supported (only \"silu\")");
}

// MambaForCausalLM and FalconMambaForCausalLM (transformers' MambaConfig defaults).
HfConfig from_transformers_mamba1(const Fields& f, bool falcon) {
  HfConfig h;
  h.source = falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM";
  ModelConfig& c = h.model;
  c.arch = Arch::Mamba1;
  c.d_model = positive(f, "hidden_size", f.required_integer("hidden_size"));
  c.n_layer = positive(f, "num_hidden_layers", f.required_integer("num_hidden_layers"));
  c.d_state = positive(f, "state_size", f.integer("state_size", 16));
  c.d_conv = positive(f, "conv_kernel", f.integer("conv_kernel", 4));
  // Some configs carry the explicit width (e.g. with expand unused); it wins over expand.
  c.d_inner = f.has("intermediate_size")
                  ? positive(f, "intermediate_size", f.integer("intermediate_size", 0))
                  : expanded(f, "expand", f.number("expand", 2), c.d_model);
  c.dt_rank = dt_rank_of(f, "time_step_rank", c.d_model);
  c.norm_eps = float(f.number("layer_norm_epsilon", 1e-5));
  if (falcon) {
    c.dt_b_c_rms = true;
    c.mixer_rms_eps = float(f.number("mixer_rms_eps", 1e-6));
  }
  check_activation(f);
  h.proj_bias = f.boolean("use_bias", false);
  h.conv_bias = f.boolean("use_conv_bias", true);
  h.vocab_size = f.integer("vocab_size", 0);
  h.pad_vocab_multiple = f.integer("pad_vocab_size_multiple", 8);
  h.tie_embeddings = f.boolean("tie_word_embeddings", true);
  read_token_ids(f, h);
  return h;
}

// Mamba2ForCausalLM (transformers' Mamba2Config defaults).
HfConfig from_transformers_mamba2(const Fields& f) {
  HfConfig h;
  h.source = "Mamba2ForCausalLM";
  ModelConfig& c = h.model;
  c.arch = Arch::Mamba2;
  c.d_model = positive(f, "hidden_size", f.required_integer("hidden_size"));
  c.n_layer = positive(f, "num_hidden_layers", f.required_integer("num_hidden_layers"));
  c.d_state = positive(f, "state_size", f.integer("state_size", 128));
  c.d_conv = positive(f, "conv_kernel", f.integer("conv_kernel", 4));
  c.n_heads = positive(f, "num_heads", f.integer("num_heads", 128));
  c.head_dim = positive(f, "head_dim", f.integer("head_dim", 64));
  c.n_groups = positive(f, "n_groups", f.integer("n_groups", 8));
  c.chunk_size = positive(f, "chunk_size", f.integer("chunk_size", 256));
  const double expand = f.number("expand", 2);
  c.d_inner = expanded(f, "expand", expand, c.d_model);
  if (f.has("intermediate_size") && f.integer("intermediate_size", 0) != c.d_inner)
    fail(f.where, ": intermediate_size (", f.integer("intermediate_size", 0), ") != expand (",
         expand, ") x hidden_size (", c.d_model, ")");
  if (c.n_heads * c.head_dim != c.d_inner)
    fail(f.where, ": num_heads (", c.n_heads, ") x head_dim (", c.head_dim,
         ") != expand x hidden_size (", c.d_inner, ")");
  c.norm_eps = float(f.number("layer_norm_epsilon", 1e-5));
  if (const json* lim = f.get("time_step_limit")) {
    if (!lim->is_array() || lim->size() != 2)
      fail(f.where, ": time_step_limit must be [min, max], got ", lim->dump());
    c.dt_min = float(f.as_number((*lim)[0], "time_step_limit"));
    c.dt_max = float(f.as_number((*lim)[1], "time_step_limit"));
  }
  if (!f.boolean("rms_norm", true))
    fail(f.where, ": rms_norm = false is not supported (the gated norm must be an RMSNorm)");
  if (f.boolean("norm_before_gate", false))
    fail(f.where, ": norm_before_gate = true is not supported (only gate-then-norm)");
  check_activation(f);
  h.proj_bias = f.boolean("use_bias", false);
  h.conv_bias = f.boolean("use_conv_bias", true);
  h.vocab_size = f.integer("vocab_size", 0);
  h.pad_vocab_multiple = f.integer("pad_vocab_size_multiple", 16);
  h.tie_embeddings = f.boolean("tie_word_embeddings", false);
  read_token_ids(f, h);
  return h;
}

// The original mamba_ssm MambaConfig: {d_model, n_layer, vocab_size, ssm_cfg, ...}.
HfConfig from_state_spaces(const Fields& f) {
  HfConfig h;
  h.source = "state-spaces config";
  h.state_spaces = true;
  ModelConfig& c = h.model;

  if (f.integer("d_intermediate", 0) != 0)
    fail(f.where, ": hybrid MLP layers (d_intermediate != 0) are not supported");
  if (const json* attn = f.get("attn_layer_idx")) {
    if (!attn->is_array() || !attn->empty())
      fail(f.where, ": hybrid attention layers are not supported");
  }
  if (!f.boolean("rms_norm", true))
    fail(f.where, ": rms_norm = false (LayerNorm) is not supported");

  static const json kEmpty = json::object();
  const json* ssm = f.get("ssm_cfg");
  if (ssm && !ssm->is_object()) fail(f.where, ": ssm_cfg must be an object");
  const Fields s{ssm ? *ssm : kEmpty, f.where + ": ssm_cfg"};

  std::string layer = "Mamba1";
  if (const json* l = s.get("layer")) {
    if (!l->is_string()) fail(s.where, ": 'layer' must be a string");
    layer = l->get<std::string>();
  }
  c.d_model = positive(f, "d_model", f.required_integer("d_model"));
  c.n_layer = positive(f, "n_layer", f.required_integer("n_layer"));
  c.norm_eps = float(f.number("norm_epsilon", 1e-5));
  c.d_conv = positive(s, "d_conv", s.integer("d_conv", 4));
  c.d_inner = expanded(s, "expand", s.number("expand", 2), c.d_model);
  h.proj_bias = s.boolean("bias", false);
  h.conv_bias = s.boolean("conv_bias", true);

  if (layer == "Mamba1") {
    c.arch = Arch::Mamba1;
    c.d_state = positive(s, "d_state", s.integer("d_state", 16));
    c.dt_rank = dt_rank_of(s, "dt_rank", c.d_model);
  } else if (layer == "Mamba2") {
    c.arch = Arch::Mamba2;
    c.d_state = positive(s, "d_state", s.integer("d_state", 128));
    c.head_dim = positive(s, "headdim", s.integer("headdim", 64));
    c.n_groups = positive(s, "ngroups", s.integer("ngroups", 1));
    c.chunk_size = positive(s, "chunk_size", s.integer("chunk_size", 256));
    if (s.has("d_ssm") && s.integer("d_ssm", 0) != c.d_inner)
      fail(s.where, ": d_ssm != expand x d_model (a partial SSM with an MLP) is not supported");
    if (c.d_inner % c.head_dim != 0)
      fail(s.where, ": expand x d_model (", c.d_inner, ") is not a multiple of headdim (",
           c.head_dim, ")");
    c.n_heads = c.d_inner / c.head_dim;
    if (!s.boolean("rmsnorm", true)) fail(s.where, ": rmsnorm = false is not supported");
    if (s.boolean("norm_before_gate", false))
      fail(s.where, ": norm_before_gate = true is not supported (only gate-then-norm)");
    if (s.boolean("D_has_hdim", false)) fail(s.where, ": D_has_hdim = true is not supported");
    if (const json* lim = s.get("dt_limit")) {
      if (!lim->is_array() || lim->size() != 2)
        fail(s.where, ": dt_limit must be [min, max], got ", lim->dump());
      c.dt_min = float(s.as_number((*lim)[0], "dt_limit"));
      c.dt_max = float(s.as_number((*lim)[1], "dt_limit"));
    }
  } else {
    fail(s.where, ": layer '", layer, "' is not supported (Mamba1 or Mamba2)");
  }
  h.vocab_size = f.integer("vocab_size", 0);
  h.pad_vocab_multiple = f.integer("pad_vocab_size_multiple", 8);
  h.tie_embeddings = f.boolean("tie_embeddings", true);
  read_token_ids(f, h);
  return h;
}

}  // namespace

int64_t HfConfig::padded_vocab_size() const {
  if (pad_vocab_multiple <= 1 || vocab_size % pad_vocab_multiple == 0) return vocab_size;
  return vocab_size + pad_vocab_multiple - vocab_size % pad_vocab_multiple;
}

std::string python_json_to_strict(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); i++) {
    const char ch = text[i];
    if (in_string) {
      out.push_back(ch);
      if (ch == '\\' && i + 1 < text.size()) {
        out.push_back(text[++i]);  // keep the escaped character, whatever it is
      } else if (ch == '"') {
        in_string = false;
      }
      continue;
    }
    if (ch == '"') {
      in_string = true;
      out.push_back(ch);
      continue;
    }
    bool replaced = false;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
      if (text.compare(i, std::strlen(word), word) == 0) {
        out.append("\"").append(word).append("\"");
        i += std::strlen(word) - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out.push_back(ch);
  }
  return out;
}

HfConfig parse_hf_config(const std::string& text, const std::string& what) {
  json j;
  try {
    j = json::parse(python_json_to_strict(text));
  } catch (const json::exception& e) {
    fail(what, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(what, ": not a JSON object");
  const Fields f{j, what};

  // The class name in "architectures" is what transformers instantiates; model_type is the
  // fallback; a config with neither but with d_model / n_layer is mamba_ssm's own.
  std::string name;
  if (const json* archs = f.get("architectures")) {
    if (!archs->is_array()) fail(what, ": 'architectures' must be a list");
    for (const auto& a : *archs) {
      if (!a.is_string()) fail(what, ": 'architectures' must be a list of strings");
      const std::string s = a.get<std::string>();
      if (s == "MambaForCausalLM" || s == "Mamba2ForCausalLM" || s == "FalconMambaForCausalLM") {
        name = s;
        break;
      }
      if (name.empty()) name = s;  // reported if nothing supported follows
    }
  }
  if (name.empty()) {
    if (const json* mt = f.get("model_type")) {
      const std::string t = mt->is_string() ? mt->get<std::string>() : mt->dump();
      if (t == "mamba")
        name = "MambaForCausalLM";
      else if (t == "falcon_mamba")
        name = "FalconMambaForCausalLM";
      else if (t == "mamba2")
        name = "Mamba2ForCausalLM";
      else
        fail("unsupported architecture '", t, "' ", kSupported);
    } else if (f.has("d_model") && f.has("n_layer")) {
      return from_state_spaces(f);
    } else {
      fail("unsupported architecture '(none named in ", what, ")' ", kSupported);
    }
  }
  if (name == "MambaForCausalLM") return from_transformers_mamba1(f, false);
  if (name == "FalconMambaForCausalLM") return from_transformers_mamba1(f, true);
  if (name == "Mamba2ForCausalLM") return from_transformers_mamba2(f);
  fail("unsupported architecture '", name, "' ", kSupported);
}

HfConfig load_hf_config(const std::string& dir) {
  const std::string path = join_path(dir, "config.json");
  if (!is_regular_file(path)) {
    if (is_directory(path)) fail(path, " is a directory, expected a file");
    fail("missing ", path, " (the model's config.json)");
  }
  return parse_hf_config(read_whole_file(path, 16u << 20), path);
}

}  // namespace mamba::convert
