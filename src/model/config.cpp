#include "model/config.h"

#include <cmath>

#include "common/error.h"
#include "gguf/gguf.h"

namespace mamba {

const char* arch_gguf_name(Arch a) { return a == Arch::Mamba1 ? "mamba" : "mamba2"; }

uint64_t ModelConfig::state_bytes() const {
  const uint64_t conv = uint64_t(n_layer) * uint64_t(d_conv - 1) * uint64_t(conv_dim());
  const uint64_t ssm = uint64_t(n_layer) * uint64_t(d_inner) * uint64_t(d_state);
  return (conv + ssm) * sizeof(float);
}

void ModelConfig::validate() const {
  auto positive = [](const char* what, int64_t v, int64_t max) {
    if (v <= 0 || v > max) fail("model config: ", what, " = ", v, " is out of range (1..", max, ")");
  };
  positive("n_vocab", n_vocab, int64_t(1) << 24);
  positive("d_model", d_model, int64_t(1) << 20);
  positive("n_layer", n_layer, 4096);
  positive("d_inner", d_inner, int64_t(1) << 22);
  positive("d_state", d_state, 4096);
  positive("d_conv", d_conv, 64);
  if (!(norm_eps >= 0) || !std::isfinite(norm_eps)) fail("model config: bad norm epsilon");
  if (arch == Arch::Mamba1) {
    positive("dt_rank", dt_rank, d_inner);
    if (!(mixer_rms_eps >= 0) || !std::isfinite(mixer_rms_eps))
      fail("model config: bad mixer RMS epsilon");
  } else {
    positive("n_groups", n_groups, d_inner);
    positive("n_heads", n_heads, d_inner);
    positive("head_dim", head_dim, d_inner);
    positive("chunk_size", chunk_size, 1 << 16);
    if (n_heads * head_dim != d_inner)
      fail("model config: n_heads (", n_heads, ") x head_dim (", head_dim, ") != d_inner (",
           d_inner, ")");
    if (n_heads % n_groups != 0)
      fail("model config: n_heads (", n_heads, ") is not a multiple of n_groups (", n_groups,
           ")");
    if (d_inner % n_groups != 0)
      fail("model config: d_inner (", d_inner, ") is not a multiple of n_groups (", n_groups,
           ")");
    if (dt_rank != 0 && dt_rank != n_heads)
      fail("model config: Mamba-2 has no dt_rank");
    if (!(dt_min >= 0) || !(dt_max >= dt_min)) fail("model config: bad time_step_limit");
  }
}

static std::string key(const ModelConfig& c, const char* suffix) {
  return std::string(arch_gguf_name(c.arch)) + "." + suffix;
}

ModelConfig config_from_gguf(const gguf::File& f) {
  ModelConfig c;
  const std::string arch = f.get_str("general.architecture");
  if (arch == "mamba") {
    c.arch = Arch::Mamba1;
  } else if (arch == "mamba2") {
    c.arch = Arch::Mamba2;
  } else {
    fail("unknown architecture '", arch, "' (supported: mamba, mamba2)");
  }
  c.d_model = f.get_int(key(c, "embedding_length"));
  c.n_layer = f.get_int(key(c, "block_count"));
  c.d_conv = f.get_int(key(c, "ssm.conv_kernel"));
  c.d_inner = f.get_int(key(c, "ssm.inner_size"));
  c.d_state = f.get_int(key(c, "ssm.state_size"));
  c.norm_eps = float(f.get_float(key(c, "attention.layer_norm_rms_epsilon"), 1e-5));
  c.context_length = f.get_int(key(c, "context_length"), int64_t(1) << 20);
  c.n_vocab = f.get_int(key(c, "vocab_size"), 0);  // the loader checks it against token_embd
  const int64_t rank = f.get_int(key(c, "ssm.time_step_rank"));
  if (c.arch == Arch::Mamba1) {
    c.dt_rank = rank;
    c.dt_b_c_rms = f.get_bool(key(c, "ssm.dt_b_c_rms"), false);
    c.mixer_rms_eps = float(f.get_float(key(c, "ssm.dt_b_c_rms_epsilon"), 1e-6));
  } else {
    c.n_heads = rank;  // llama.cpp stores the head count as time_step_rank
    c.n_groups = f.get_int(key(c, "ssm.group_count"), 1);
    if (c.n_heads <= 0 || c.d_inner % c.n_heads != 0)
      fail("model config: d_inner (", c.d_inner, ") is not a multiple of the head count (",
           c.n_heads, ")");
    c.head_dim = c.d_inner / c.n_heads;
    c.chunk_size = f.get_int(key(c, "ssm.chunk_size"), 256);
    c.dt_min = float(f.get_float(key(c, "ssm.time_step_min"), 0.0));
    c.dt_max = float(f.get_float(key(c, "ssm.time_step_max"),
                                 std::numeric_limits<double>::infinity()));
  }
  return c;
}

void config_to_gguf(const ModelConfig& c, gguf::Writer& w) {
  w.set_str("general.architecture", arch_gguf_name(c.arch));
  w.set_u32(key(c, "context_length"), uint32_t(c.context_length));
  w.set_u32(key(c, "embedding_length"), uint32_t(c.d_model));
  w.set_u32(key(c, "feed_forward_length"), 0);   // llama.cpp's loader expects these keys
  w.set_u32(key(c, "attention.head_count"), 0);
  w.set_u32(key(c, "block_count"), uint32_t(c.n_layer));
  w.set_u32(key(c, "vocab_size"), uint32_t(c.n_vocab));
  w.set_u32(key(c, "ssm.conv_kernel"), uint32_t(c.d_conv));
  w.set_u32(key(c, "ssm.inner_size"), uint32_t(c.d_inner));
  w.set_u32(key(c, "ssm.state_size"), uint32_t(c.d_state));
  w.set_f32(key(c, "attention.layer_norm_rms_epsilon"), c.norm_eps);
  if (c.arch == Arch::Mamba1) {
    w.set_u32(key(c, "ssm.time_step_rank"), uint32_t(c.dt_rank));
    w.set_bool(key(c, "ssm.dt_b_c_rms"), c.dt_b_c_rms);
    if (c.dt_b_c_rms) w.set_f32(key(c, "ssm.dt_b_c_rms_epsilon"), c.mixer_rms_eps);
  } else {
    w.set_u32(key(c, "ssm.time_step_rank"), uint32_t(c.n_heads));
    w.set_u32(key(c, "ssm.group_count"), uint32_t(c.n_groups));
    w.set_u32(key(c, "ssm.chunk_size"), uint32_t(c.chunk_size));
    if (c.dt_min != 0.0f) w.set_f32(key(c, "ssm.time_step_min"), c.dt_min);
    if (std::isfinite(c.dt_max)) w.set_f32(key(c, "ssm.time_step_max"), c.dt_max);
  }
}

}  // namespace mamba
