#include "model/random_model.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/half.h"

namespace mamba {

ModelConfig random_model_config(const RandomModelOptions& o) {
  ModelConfig c;
  c.arch = o.arch;
  c.n_vocab = o.n_vocab;
  c.d_model = o.d_model;
  c.n_layer = o.n_layer;
  c.d_inner = o.expand * o.d_model;
  c.d_state = o.d_state;
  c.d_conv = o.d_conv;
  if (o.arch == Arch::Mamba1) {
    c.dt_rank = o.dt_rank > 0 ? o.dt_rank : (o.d_model + 15) / 16;
    c.dt_b_c_rms = o.falcon;
  } else {
    if (o.falcon) fail("random model: the Falcon flag is for Mamba-1 only");
    if (o.head_dim <= 0 || c.d_inner % o.head_dim != 0)
      fail("random model: d_inner (", c.d_inner, ") is not a multiple of head_dim (", o.head_dim,
           ")");
    c.head_dim = o.head_dim;
    c.n_heads = c.d_inner / o.head_dim;
    c.n_groups = o.n_groups;
    c.chunk_size = o.chunk_size;
    c.dt_min = o.dt_min;
    c.dt_max = o.dt_max;
  }
  c.validate();
  return c;
}

namespace {

// splitmix64: tiny, fast, and good enough to make weights. Each tensor gets its own stream
// seeded from (seed, name), so a tensor's values do not depend on which tensors come before.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1)
  float sym() { return 2.0f * uniform() - 1.0f; }                         // [-1, 1)
};

uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a over the name
  for (unsigned char ch : name) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// dt = softplus(dt_bias) at init lies in [1e-3, 1e-1], log-uniformly, as in Mamba's init.
float inv_softplus_dt(Rng& r) {
  const float dt = std::exp(std::log(1e-3f) + r.uniform() * (std::log(1e-1f) - std::log(1e-3f)));
  return dt + std::log(-std::expm1(-dt));
}

// Adds a tensor whose element i is gen(rng, i), stored in `dtype`. `ne` is GGUF order.
void add(gguf::Writer& w, uint64_t seed, const std::string& name, gguf::DType dtype,
         std::vector<uint64_t> ne, std::function<float(Rng&, uint64_t)> gen) {
  w.add_tensor(name, dtype, ne, [=](uint8_t* out, size_t n_bytes) {
    Rng r{name_seed(seed, name)};
    const uint64_t n = n_bytes / gguf::dtype_size(dtype);
    for (uint64_t i = 0; i < n; i++) {
      const float v = gen(r, i);
      if (dtype == gguf::DType::F32) {
        std::memcpy(out + 4 * i, &v, 4);
      } else {
        const uint16_t h = dtype == gguf::DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(out + 2 * i, &h, 2);
      }
    }
  });
}

}  // namespace

void write_random_model(const RandomModelOptions& o, const std::string& path) {
  const ModelConfig c = random_model_config(o);
  gguf::Writer w;
  config_to_gguf(c, w);
  w.set_str("general.name", "random");
  if (o.eos_id >= 0) {
    if (o.eos_id >= c.n_vocab) fail("random model: eos id ", o.eos_id, " >= n_vocab");
    w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(o.eos_id));
  }

  const uint64_t seed = o.seed;
  const gguf::DType big = o.dtype, small = o.small_dtype;
  const float scale = o.weight_scale;
  // A (rows, cols) matrix with unit-variance outputs for unit-variance inputs.
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const float a = scale * std::sqrt(3.0f / float(cols));
    add(w, seed, name, big, {uint64_t(cols), uint64_t(rows)},
        [a](Rng& r, uint64_t) { return a * r.sym(); });
  };
  auto vector = [&](const std::string& name, std::vector<uint64_t> ne, float center, float spread) {
    add(w, seed, name, small, ne, [=](Rng& r, uint64_t) { return center + spread * r.sym(); });
  };
  const auto D = uint64_t(c.d_model), DI = uint64_t(c.d_inner), N = uint64_t(c.d_state);

  add(w, seed, "token_embd.weight", big, {D, uint64_t(c.n_vocab)},
      [](Rng& r, uint64_t) { return r.sym(); });
  vector("output_norm.weight", {D}, 1.0f, 0.2f);
  if (!o.tied) matrix("output.weight", c.n_vocab, c.d_model);

  for (int64_t il = 0; il < c.n_layer; il++) {
    const std::string p = "blk." + std::to_string(il) + ".";
    const auto CD = uint64_t(c.conv_dim());
    vector(p + "attn_norm.weight", {D}, 1.0f, 0.2f);
    matrix(p + "ssm_in.weight", c.in_proj_rows(), c.d_model);
    if (o.proj_bias) vector(p + "ssm_in.bias", {uint64_t(c.in_proj_rows())}, 0.0f, 0.1f);
    vector(p + "ssm_conv1d.weight", {uint64_t(c.d_conv), CD}, 0.0f,
           std::sqrt(3.0f / float(c.d_conv)));
    if (o.conv_bias) vector(p + "ssm_conv1d.bias", {CD}, 0.0f, 0.1f);
    matrix(p + "ssm_out.weight", c.d_model, c.d_inner);
    if (o.proj_bias) vector(p + "ssm_out.bias", {D}, 0.0f, 0.1f);

    if (c.arch == Arch::Mamba1) {
      matrix(p + "ssm_x.weight", c.dt_rank + 2 * c.d_state, c.d_inner);
      matrix(p + "ssm_dt.weight", c.d_inner, c.dt_rank);
      add(w, seed, p + "ssm_dt.bias", small, {DI},
          [](Rng& r, uint64_t) { return inv_softplus_dt(r); });
      // S4D-real: A[c, n] = -(n + 1), jittered so channels differ.
      add(w, seed, p + "ssm_a", small, {N, DI},
          [N](Rng& r, uint64_t i) { return -float(i % N + 1) * (1.0f + 0.1f * r.sym()); });
      vector(p + "ssm_d", {DI}, 1.0f, 0.5f);
    } else {
      const auto H = uint64_t(c.n_heads), G = uint64_t(c.n_groups);
      const std::vector<uint64_t> per_head =
          o.flat_vectors ? std::vector<uint64_t>{H} : std::vector<uint64_t>{1, H};
      add(w, seed, p + "ssm_dt.bias", small, {H},
          [](Rng& r, uint64_t) { return inv_softplus_dt(r); });
      add(w, seed, p + "ssm_a", small, per_head,
          [](Rng& r, uint64_t) { return -(1.0f + 15.0f * r.uniform()); });
      vector(p + "ssm_d", per_head, 1.0f, 0.5f);
      vector(p + "ssm_norm.weight",
             o.flat_vectors ? std::vector<uint64_t>{DI} : std::vector<uint64_t>{DI / G, G}, 1.0f,
             0.2f);
    }
  }
  w.write(path);
}

}  // namespace mamba
