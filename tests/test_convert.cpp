// mamba-convert: tiny HF directories built here (config.json + safetensors with seeded random
// weights) are converted and read back with gguf::File; every key, shape and value is checked.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "convert/converter.h"
#include "convert/hf_config.h"
#include "convert/safetensors.h"
#include "gguf/gguf.h"
#include "test_util.h"

using namespace mamba;
using namespace mamba::test;
namespace st = mamba::safetensors;
namespace cv = mamba::convert;
namespace fs = std::filesystem;
using json = nlohmann::json;
using Shape = std::vector<uint64_t>;

namespace {

// ---- building HF directories --------------------------------------------------------------

struct SrcTensor {
  std::string name;
  Shape shape;
  std::vector<float> values;  // exactly representable in the checkpoint's dtype
};

enum class Head { None, Equal, Different };  // lm_head.weight: absent, a copy, its own

struct Spec {
  std::string layout = "mamba";  // mamba | falcon_mamba | mamba2 | ss_mamba1 | ss_mamba2
  int64_t d_model = 32, n_layer = 2, rows = 48, config_vocab = 45;
  int64_t d_state = 8, d_conv = 4, expand = 2;
  int64_t dt_rank = 0;  // 0: "auto" = ceil(d_model / 16)
  int64_t head_dim = 16, n_groups = 1;
  bool proj_bias = false, conv_bias = true;
  bool tie = true;
  Head lm_head = Head::None;
  st::DType dtype = st::DType::F32;
  int shards = 1;
  std::string prefix;  // "model." for repos that nest the backbone

  bool mamba2() const { return layout == "mamba2" || layout == "ss_mamba2"; }
  bool state_spaces() const { return layout.rfind("ss_", 0) == 0; }
  int64_t d_inner() const { return expand * d_model; }
  int64_t rank() const { return dt_rank ? dt_rank : (d_model + 15) / 16; }
  int64_t n_heads() const { return d_inner() / head_dim; }
  int64_t conv_dim() const { return mamba2() ? d_inner() + 2 * n_groups * d_state : d_inner(); }
  int64_t in_rows() const {
    return mamba2() ? 2 * d_inner() + 2 * n_groups * d_state + n_heads() : 2 * d_inner();
  }
  std::string embedding_name() const {
    return prefix + (state_spaces() ? "backbone.embedding.weight" : "backbone.embeddings.weight");
  }
};

std::string tmp_dir(const std::string& name) {
  const std::string dir = std::string(MAMBA_TEST_TMP) + "/convert/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

float round_to(st::DType dt, float v) {
  if (dt == st::DType::F16) return f16_to_f32(f32_to_f16(v));
  if (dt == st::DType::BF16) return bf16_to_f32(f32_to_bf16(v));
  return v;
}

std::string encode(st::DType dt, const std::vector<float>& v) {
  std::string out;
  for (float x : v) {
    if (dt == st::DType::F32) {
      out.append(reinterpret_cast<const char*>(&x), 4);
    } else {
      const uint16_t h = dt == st::DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
      out.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return out;
}

std::vector<SrcTensor> make_tensors(const Spec& s, uint32_t seed = 1234) {
  std::mt19937 rng(seed);
  auto tensor = [&](std::string name, Shape shape, float lo, float hi) {
    uint64_t n = 1;
    for (uint64_t d : shape) n *= d;
    std::uniform_real_distribution<float> dist(lo, hi);
    SrcTensor t{std::move(name), std::move(shape), {}};
    for (uint64_t i = 0; i < n; i++) t.values.push_back(round_to(s.dtype, dist(rng)));
    return t;
  };
  auto u = [](int64_t v) { return uint64_t(v); };
  const uint64_t D = u(s.d_model), E = u(s.d_inner()), N = u(s.d_state), K = u(s.d_conv),
                 C = u(s.conv_dim());
  std::vector<SrcTensor> ts;
  ts.push_back(tensor(s.embedding_name(), {u(s.rows), D}, -1, 1));
  for (int64_t i = 0; i < s.n_layer; i++) {
    const std::string l = s.prefix + "backbone.layers." + std::to_string(i) + ".";
    const std::string m = l + "mixer.";
    ts.push_back(tensor(l + "norm.weight", {D}, 0.5f, 1.5f));
    ts.push_back(tensor(m + "in_proj.weight", {u(s.in_rows()), D}, -1, 1));
    if (s.proj_bias) ts.push_back(tensor(m + "in_proj.bias", {u(s.in_rows())}, -1, 1));
    ts.push_back(tensor(m + "conv1d.weight", {C, 1, K}, -1, 1));
    if (s.conv_bias) ts.push_back(tensor(m + "conv1d.bias", {C}, -1, 1));
    ts.push_back(tensor(m + "A_log", s.mamba2() ? Shape{u(s.n_heads())} : Shape{E, N}, 0, 2.7f));
    ts.push_back(tensor(m + "D", s.mamba2() ? Shape{u(s.n_heads())} : Shape{E}, 0.5f, 1.5f));
    if (s.mamba2()) {
      ts.push_back(tensor(m + "dt_bias", {u(s.n_heads())}, -4, 0));
      ts.push_back(tensor(m + "norm.weight", {E}, 0.5f, 1.5f));
    } else {
      ts.push_back(tensor(m + "x_proj.weight", {u(s.rank()) + 2 * N, E}, -1, 1));
      ts.push_back(tensor(m + "dt_proj.weight", {E, u(s.rank())}, -1, 1));
      ts.push_back(tensor(m + "dt_proj.bias", {E}, -4, 0));
    }
    ts.push_back(tensor(m + "out_proj.weight", {D, E}, -1, 1));
    if (s.proj_bias) ts.push_back(tensor(m + "out_proj.bias", {D}, -1, 1));
  }
  ts.push_back(tensor(s.prefix + "backbone.norm_f.weight", {D}, 0.5f, 1.5f));
  if (s.lm_head == Head::Equal) {
    ts.push_back({s.prefix + "lm_head.weight", ts[0].shape, ts[0].values});
  } else if (s.lm_head == Head::Different) {
    ts.push_back(tensor(s.prefix + "lm_head.weight", {u(s.rows), D}, -1, 1));
  }
  return ts;
}

json make_config(const Spec& s) {
  json c;
  if (s.layout == "mamba" || s.layout == "falcon_mamba") {
    const bool falcon = s.layout == "falcon_mamba";
    c = {{"architectures", {falcon ? "FalconMambaForCausalLM" : "MambaForCausalLM"}},
         {"model_type", s.layout},
         {"hidden_size", s.d_model},
         {"num_hidden_layers", s.n_layer},
         {"state_size", s.d_state},
         {"conv_kernel", s.d_conv},
         {"expand", s.expand},
         {"intermediate_size", s.d_inner()},
         {"use_bias", s.proj_bias},
         {"use_conv_bias", s.conv_bias},
         {"layer_norm_epsilon", 1e-5},
         {"hidden_act", "silu"},
         {"residual_in_fp32", true},
         {"vocab_size", s.config_vocab},
         {"tie_word_embeddings", s.tie},
         {"bos_token_id", 0},
         {"eos_token_id", 0},
         {"pad_token_id", 0}};
    c["time_step_rank"] = s.dt_rank ? json(s.dt_rank) : json("auto");
    if (falcon) c["mixer_rms_eps"] = 3e-6;
  } else if (s.layout == "mamba2") {
    c = {{"architectures", {"Mamba2ForCausalLM"}},
         {"model_type", "mamba2"},
         {"hidden_size", s.d_model},
         {"num_hidden_layers", s.n_layer},
         {"num_heads", s.n_heads()},
         {"head_dim", s.head_dim},
         {"n_groups", s.n_groups},
         {"state_size", s.d_state},
         {"conv_kernel", s.d_conv},
         {"expand", s.expand},
         {"chunk_size", 16},
         {"use_bias", s.proj_bias},
         {"use_conv_bias", s.conv_bias},
         {"layer_norm_epsilon", 1e-5},
         {"rms_norm", true},
         {"norm_before_gate", false},
         {"time_step_limit", {0.0, {{"__float__", "Infinity"}}}},
         {"vocab_size", s.config_vocab},
         {"tie_word_embeddings", s.tie}};
  } else {
    json ssm = {{"d_state", s.d_state},
                {"d_conv", s.d_conv},
                {"expand", s.expand},
                {"bias", s.proj_bias},
                {"conv_bias", s.conv_bias}};
    if (s.layout == "ss_mamba2") {
      ssm["layer"] = "Mamba2";
      ssm["headdim"] = s.head_dim;
      ssm["ngroups"] = s.n_groups;
      ssm["chunk_size"] = 16;
    } else if (s.dt_rank) {
      ssm["dt_rank"] = s.dt_rank;
    }
    c = {{"d_model", s.d_model},
         {"d_intermediate", 0},
         {"n_layer", s.n_layer},
         {"vocab_size", s.config_vocab},
         {"ssm_cfg", ssm},
         {"attn_layer_idx", json::array()},
         {"attn_cfg", json::object()},
         {"rms_norm", true},
         {"residual_in_fp32", true},
         {"fused_add_norm", true},
         {"pad_vocab_size_multiple", s.mamba2() ? 16 : 8},
         {"tie_embeddings", s.tie}};
  }
  return c;
}

void write_weights(const Spec& s, const std::string& dir, const std::vector<SrcTensor>& ts) {
  auto bytes_of = [&](const SrcTensor& t) {
    return st::TensorBytes{t.name, s.dtype, t.shape, encode(s.dtype, t.values)};
  };
  if (s.shards <= 1) {
    std::vector<st::TensorBytes> all;
    for (const auto& t : ts) all.push_back(bytes_of(t));
    st::write_file(dir + "/model.safetensors", all);
    return;
  }
  json map = json::object();
  for (int k = 0; k < s.shards; k++) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, s.shards);
    std::vector<st::TensorBytes> part;
    for (size_t i = size_t(k); i < ts.size(); i += size_t(s.shards)) {
      part.push_back(bytes_of(ts[i]));
      map[ts[i].name] = name;
    }
    st::write_file(dir + "/" + name, part);
  }
  write_text(dir + "/model.safetensors.index.json",
             json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump(1));
}

// Writes config.json and the weights into a fresh directory.
std::string write_model(const Spec& s, const std::string& name,
                        std::vector<SrcTensor>* out = nullptr, const json* config = nullptr) {
  const std::string dir = tmp_dir(name);
  const auto ts = make_tensors(s);
  write_text(dir + "/config.json", (config ? *config : make_config(s)).dump(2));
  write_weights(s, dir, ts);
  if (out) *out = ts;
  return dir;
}

struct Converted {
  cv::ConvertResult result;
  std::unique_ptr<gguf::File> file;
  std::vector<std::string> warnings;
};

Converted run_convert(const std::string& dir, cv::OutType outtype = cv::OutType::Auto,
                      bool vocab_only = false) {
  Converted c;
  cv::ConvertOptions opt;
  opt.hf_dir = dir;
  opt.out_path = dir + "/out.gguf";
  opt.outtype = outtype;
  opt.vocab_only = vocab_only;
  opt.warn = [&](const std::string& w) { c.warnings.push_back(w); };
  c.result = cv::convert(opt);
  c.file = gguf::File::open(opt.out_path);
  return c;
}

// Converting `dir` must throw an Error whose one-line message contains `needle`, and must
// leave no output file behind.
void expect_convert_error(const std::string& dir, const std::string& needle) {
  const std::string out = dir + "/out.gguf";
  std::error_code ec;
  fs::remove(out, ec);
  cv::ConvertOptions opt;
  opt.hf_dir = dir;
  opt.out_path = out;
  opt.warn = [](const std::string&) {};
  try {
    cv::convert(opt);
    FAIL("no error; expected one mentioning '" << needle << "'");
  } catch (const Error& e) {
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
  CHECK_FALSE(fs::exists(out, ec));
}

// ---- checking a converted file ------------------------------------------------------------

enum class Op { Matrix, F32, NegExp };

struct Expected {
  std::string name;  // GGUF
  std::string src;   // checkpoint
  Op op;
  Shape ne;
};

std::vector<Expected> expected_tensors(const Spec& s) {
  auto u = [](int64_t v) { return uint64_t(v); };
  const uint64_t D = u(s.d_model), E = u(s.d_inner()), N = u(s.d_state), K = u(s.d_conv),
                 C = u(s.conv_dim()), R = u(s.rank()), H = u(s.n_heads()), G = u(s.n_groups),
                 V = u(s.rows), I = u(s.in_rows());
  std::vector<Expected> e = {
      {"token_embd.weight", s.embedding_name(), Op::Matrix, {D, V}},
      {"output_norm.weight", s.prefix + "backbone.norm_f.weight", Op::F32, {D}}};
  if (!s.tie) e.push_back({"output.weight", s.prefix + "lm_head.weight", Op::Matrix, {D, V}});
  for (int64_t i = 0; i < s.n_layer; i++) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const std::string l = s.prefix + "backbone.layers." + std::to_string(i) + ".";
    const std::string m = l + "mixer.";
    e.push_back({b + "attn_norm.weight", l + "norm.weight", Op::F32, {D}});
    e.push_back({b + "ssm_in.weight", m + "in_proj.weight", Op::Matrix, {D, I}});
    if (s.proj_bias) e.push_back({b + "ssm_in.bias", m + "in_proj.bias", Op::F32, {I}});
    e.push_back({b + "ssm_conv1d.weight", m + "conv1d.weight", Op::F32, {K, C}});
    if (s.conv_bias) e.push_back({b + "ssm_conv1d.bias", m + "conv1d.bias", Op::F32, {C}});
    if (s.mamba2()) {
      e.push_back({b + "ssm_dt.bias", m + "dt_bias", Op::F32, {H}});
      e.push_back({b + "ssm_a", m + "A_log", Op::NegExp, {1, H}});
      e.push_back({b + "ssm_d", m + "D", Op::F32, {1, H}});
      e.push_back({b + "ssm_norm.weight", m + "norm.weight", Op::F32, {E / G, G}});
    } else {
      e.push_back({b + "ssm_x.weight", m + "x_proj.weight", Op::Matrix, {E, R + 2 * N}});
      e.push_back({b + "ssm_dt.weight", m + "dt_proj.weight", Op::Matrix, {R, E}});
      e.push_back({b + "ssm_dt.bias", m + "dt_proj.bias", Op::F32, {E}});
      e.push_back({b + "ssm_a", m + "A_log", Op::NegExp, {N, E}});
      e.push_back({b + "ssm_d", m + "D", Op::F32, {E}});
    }
    e.push_back({b + "ssm_out.weight", m + "out_proj.weight", Op::Matrix, {E, D}});
    if (s.proj_bias) e.push_back({b + "ssm_out.bias", m + "out_proj.bias", Op::F32, {D}});
  }
  return e;
}

// Bitwise comparison of a GGUF tensor with what its source values must become.
void check_values(const gguf::TensorInfo& t, const SrcTensor& src, Op op) {
  REQUIRE(t.n_elements == src.values.size());
  size_t mismatches = 0;
  for (size_t i = 0; i < src.values.size(); i++) {
    const float v = op == Op::NegExp ? float(-std::exp(double(src.values[i]))) : src.values[i];
    if (t.dtype == gguf::DType::F32) {
      float got;
      std::memcpy(&got, t.data + 4 * i, 4);
      mismatches += std::memcmp(&got, &v, 4) != 0;
    } else {
      uint16_t got;
      std::memcpy(&got, t.data + 2 * i, 2);
      mismatches += got != (t.dtype == gguf::DType::F16 ? f32_to_f16(v) : f32_to_bf16(v));
    }
  }
  CHECK_MESSAGE(mismatches == 0, t.name << ": " << mismatches << " values differ");
}

void check_model(const Spec& s, const std::vector<SrcTensor>& src, const gguf::File& f,
                 gguf::DType matrix) {
  const std::string a = s.mamba2() ? "mamba2" : "mamba";
  CHECK(f.get_str("general.architecture") == a);
  CHECK(f.get_int(a + ".embedding_length") == s.d_model);
  CHECK(f.get_int(a + ".block_count") == s.n_layer);
  CHECK(f.get_int(a + ".vocab_size") == s.rows);
  CHECK(f.get_int(a + ".ssm.inner_size") == s.d_inner());
  CHECK(f.get_int(a + ".ssm.state_size") == s.d_state);
  CHECK(f.get_int(a + ".ssm.conv_kernel") == s.d_conv);
  CHECK(f.get_float(a + ".attention.layer_norm_rms_epsilon") == doctest::Approx(1e-5));
  CHECK(f.get_int("general.file_type") == (matrix == gguf::DType::F32   ? 0
                                           : matrix == gguf::DType::F16 ? 1
                                                                        : 32));
  if (s.mamba2()) {
    CHECK(f.get_int(a + ".ssm.time_step_rank") == s.n_heads());
    CHECK(f.get_int(a + ".ssm.group_count") == s.n_groups);
    CHECK(f.get_int(a + ".ssm.chunk_size") == 16);
    CHECK_FALSE(f.has(a + ".ssm.time_step_max"));  // [0, inf] is the default
  } else {
    CHECK(f.get_int(a + ".ssm.time_step_rank") == s.rank());
    CHECK(f.get_bool(a + ".ssm.dt_b_c_rms") == (s.layout == "falcon_mamba"));
    if (s.layout == "falcon_mamba")
      CHECK(f.get_float(a + ".ssm.dt_b_c_rms_epsilon") == doctest::Approx(3e-6));
  }

  std::map<std::string, const SrcTensor*> by_name;
  for (const auto& t : src) by_name[t.name] = &t;
  const auto expected = expected_tensors(s);
  CHECK(f.tensors().size() == expected.size());
  for (const auto& e : expected) {
    INFO("tensor " << e.name);
    const gguf::TensorInfo* t = f.find_tensor(e.name);
    REQUIRE(t != nullptr);
    CHECK(t->ne == e.ne);
    CHECK(t->dtype == (e.op == Op::Matrix ? matrix : gguf::DType::F32));
    REQUIRE(by_name.count(e.src));
    check_values(*t, *by_name[e.src], e.op);
  }
}

// Builds, converts and checks one model.
void round_trip(const Spec& s, const std::string& name, cv::OutType outtype, gguf::DType matrix) {
  std::vector<SrcTensor> src;
  const std::string dir = write_model(s, name, &src);
  const Converted c = run_convert(dir, outtype);
  CHECK(c.result.n_tensors == expected_tensors(s).size());
  CHECK(c.result.output_tied == s.tie);
  CHECK(c.file->get_str("general.name") == name.substr(name.rfind('/') + 1));
  check_model(s, src, *c.file, matrix);
}

}  // namespace

// ---- conversions --------------------------------------------------------------------------

TEST_CASE("convert: Mamba-1, no biases, dt_rank auto, tied: output.weight omitted") {
  Spec s;
  round_trip(s, "m1_tied", cv::OutType::Auto, gguf::DType::F32);
}

TEST_CASE("convert: Mamba-1 with biases, explicit dt_rank, untied lm_head") {
  Spec s;
  s.proj_bias = true;
  s.dt_rank = 5;
  s.tie = false;
  s.lm_head = Head::Different;
  round_trip(s, "m1_bias_untied", cv::OutType::Auto, gguf::DType::F32);
  s.conv_bias = false;
  s.dtype = st::DType::BF16;
  round_trip(s, "m1_noconvbias_bf16", cv::OutType::Auto, gguf::DType::BF16);
}

TEST_CASE("convert: every source dtype with every outtype; 16-bit rounding is exact") {
  const st::DType sources[] = {st::DType::F32, st::DType::F16, st::DType::BF16};
  const cv::OutType outs[] = {cv::OutType::Auto, cv::OutType::F32, cv::OutType::F16,
                              cv::OutType::BF16};
  for (st::DType sd : sources) {
    for (cv::OutType ot : outs) {
      Spec s;
      s.n_layer = 1;
      s.dtype = sd;
      s.tie = false;
      s.lm_head = Head::Different;
      gguf::DType want = ot == cv::OutType::F32    ? gguf::DType::F32
                         : ot == cv::OutType::F16  ? gguf::DType::F16
                         : ot == cv::OutType::BF16 ? gguf::DType::BF16
                         : sd == st::DType::F16    ? gguf::DType::F16
                         : sd == st::DType::BF16   ? gguf::DType::BF16
                                                   : gguf::DType::F32;
      const std::string name =
          "dtypes_" + std::string(st::dtype_name(sd)) + "_" + std::to_string(int(ot));
      INFO(name);
      round_trip(s, name, ot, want);
    }
  }
}

TEST_CASE("convert: lm_head vs tie_word_embeddings") {
  Spec s;
  s.lm_head = Head::Equal;  // tied config, lm_head a copy of the embedding: omitted
  round_trip(s, "head_equal_tied", cv::OutType::Auto, gguf::DType::F32);

  s.lm_head = Head::Different;  // tied config wins, as in transformers, with a warning
  const std::string dir = write_model(s, "head_different_tied");
  const Converted c = run_convert(dir);
  CHECK(c.file->find_tensor("output.weight") == nullptr);
  REQUIRE(c.warnings.size() == 2);  // and the missing tokenizer
  CHECK(c.warnings[0].find("lm_head.weight differs") != std::string::npos);

  s.tie = false;  // untied config with a copy: kept
  s.lm_head = Head::Equal;
  round_trip(s, "head_equal_untied", cv::OutType::Auto, gguf::DType::F32);

  s.lm_head = Head::None;  // untied config without lm_head: nothing to use
  expect_convert_error(write_model(s, "head_missing_untied"), "missing tensor 'lm_head.weight'");
}

TEST_CASE("convert: Falcon-Mamba sets dt_b_c_rms and its epsilon") {
  Spec s;
  s.layout = "falcon_mamba";
  s.tie = false;
  s.lm_head = Head::Different;
  round_trip(s, "falcon", cv::OutType::Auto, gguf::DType::F32);
}

TEST_CASE("convert: Mamba-2 with one and two groups; A, D and the gated norm reshaped") {
  Spec s;
  s.layout = "mamba2";
  s.tie = false;
  s.lm_head = Head::Different;
  round_trip(s, "m2_g1", cv::OutType::Auto, gguf::DType::F32);
  s.n_groups = 2;
  s.head_dim = 8;
  s.proj_bias = true;
  s.dtype = st::DType::F16;
  round_trip(s, "m2_g2", cv::OutType::BF16, gguf::DType::BF16);
}

TEST_CASE("convert: state-spaces configs (Mamba1 and Mamba2), padded vocab") {
  Spec s;
  s.layout = "ss_mamba1";
  s.config_vocab = 45;  // padded to 48 in the checkpoint
  round_trip(s, "ss_m1", cv::OutType::Auto, gguf::DType::F32);
  s.dt_rank = 3;
  round_trip(s, "ss_m1_rank", cv::OutType::F16, gguf::DType::F16);

  s = Spec();
  s.layout = "ss_mamba2";
  s.n_groups = 2;
  s.config_vocab = 37;
  round_trip(s, "ss_m2", cv::OutType::Auto, gguf::DType::F32);
}

TEST_CASE("convert: sharded checkpoint and the model. prefix") {
  Spec s;
  s.shards = 3;
  s.tie = false;
  s.lm_head = Head::Different;
  round_trip(s, "sharded", cv::OutType::Auto, gguf::DType::F32);

  s = Spec();
  s.layout = "mamba2";
  s.prefix = "model.";
  s.shards = 2;
  round_trip(s, "prefixed", cv::OutType::Auto, gguf::DType::F32);
}

TEST_CASE("convert: --vocab-only writes config keys and no tensors") {
  Spec s;
  s.layout = "mamba2";
  const std::string dir = write_model(s, "vocab_only");
  Converted c = run_convert(dir, cv::OutType::Auto, true);
  CHECK(c.file->tensors().empty());
  CHECK(c.file->get_int("mamba2.vocab_size") == 48);  // the embedding's rows
  CHECK(c.file->get_int("mamba2.ssm.group_count") == 1);
  CHECK_FALSE(c.file->has("general.file_type"));

  fs::remove(dir + "/model.safetensors");  // no weights: vocab_size padded to 16
  c = run_convert(dir, cv::OutType::Auto, true);
  CHECK(c.file->get_int("mamba2.vocab_size") == 48);
  CHECK(c.result.n_tensors == 0);
  json cfg = make_config(s);
  cfg["vocab_size"] = 50277;
  write_text(dir + "/config.json", cfg.dump());
  c = run_convert(dir, cv::OutType::Auto, true);
  CHECK(c.file->get_int("mamba2.vocab_size") == 50288);
}

TEST_CASE("convert: the tiny reference checkpoints in tests/fixtures convert") {
  const fs::path root = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/models";
  if (!fs::exists(root)) {
    MESSAGE("skipped: no " << root);
    return;
  }
  int n = 0;
  for (const auto& d : fs::directory_iterator(root)) {
    if (!fs::exists(d.path() / "hf/config.json") || !fs::exists(d.path() / "ref.json")) continue;
    const json ref = json::parse(slurp(d.path() / "ref.json"));
    INFO(d.path().string());
    cv::ConvertOptions opt;
    opt.hf_dir = (d.path() / "hf").string();
    opt.out_path = tmp_dir("fixture_" + d.path().filename().string()) + "/out.gguf";
    opt.warn = [](const std::string&) {};
    const auto r = cv::convert(opt);
    auto f = gguf::File::open(opt.out_path);
    // Falcon-Mamba is the mamba architecture with dt_b_c_rms set.
    const std::string arch = ref["arch"].get<std::string>();
    CHECK(f->get_str("general.architecture") == (arch == "mamba2" ? "mamba2" : "mamba"));
    CHECK(f->get_bool("mamba.ssm.dt_b_c_rms", false) == (arch == "falcon_mamba"));
    CHECK(r.n_vocab == ref["n_vocab"].get<int64_t>());
    CHECK(f->find_tensor("token_embd.weight")->ne[1] == ref["n_vocab"].get<uint64_t>());
    n++;
  }
  MESSAGE(n << " fixture checkpoints converted");
}

// ---- errors -------------------------------------------------------------------------------

TEST_CASE("convert: problems with the directory and its files are named") {
  Spec s;
  std::string dir = write_model(s, "err_no_config");
  fs::remove(dir + "/config.json");
  expect_convert_error(dir, "config.json");

  dir = write_model(s, "err_arch");
  write_text(dir + "/config.json", R"({"architectures": ["GPT2LMHeadModel"]})");
  expect_convert_error(dir, "unsupported architecture 'GPT2LMHeadModel'");

  dir = write_model(s, "err_no_weights");
  fs::remove(dir + "/model.safetensors");
  expect_convert_error(dir, "has no model.safetensors");
  write_text(dir + "/pytorch_model.bin", "x");
  expect_convert_error(dir, "PyTorch .bin weights");

  dir = write_model(s, "err_weights_dir");
  fs::remove(dir + "/model.safetensors");
  fs::create_directory(dir + "/model.safetensors");
  expect_convert_error(dir, "is a directory");

  dir = write_model(s, "err_truncated");
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") - 10);
  expect_convert_error(dir, "runs past the end of the file");

  dir = write_model(s, "err_header_len");
  {
    std::fstream f(dir + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t huge = uint64_t(1) << 40;
    f.write(reinterpret_cast<const char*>(&huge), 8);
  }
  expect_convert_error(dir, "header length 1099511627776 runs past the end");

  const std::string file_dir = tmp_dir("err_file_as_dir");
  write_text(file_dir + "/f", "x");
  expect_convert_error(file_dir + "/f", "is a file; expected a model directory");
  expect_convert_error(file_dir + "/nope", "does not exist");

  dir = write_model(s, "err_out_is_dir");
  cv::ConvertOptions opt;
  opt.hf_dir = dir;
  opt.out_path = dir;
  CHECK_THROWS_WITH_AS(cv::convert(opt), doctest::Contains("is a directory"), Error);
}

TEST_CASE("convert: tensors that are missing, extra, misshapen or contradict the config") {
  Spec s;
  std::vector<SrcTensor> ts = make_tensors(s);
  auto write_with = [&](const std::string& name, const std::vector<SrcTensor>& list,
                        const json& config) {
    const std::string dir = tmp_dir(name);
    write_text(dir + "/config.json", config.dump());
    write_weights(s, dir, list);
    return dir;
  };
  auto without = [&](const std::string& name) {
    std::vector<SrcTensor> out;
    for (const auto& t : ts)
      if (t.name != name) out.push_back(t);
    return out;
  };

  expect_convert_error(
      write_with("err_missing", without("backbone.layers.1.mixer.x_proj.weight"), make_config(s)),
      "missing tensor 'backbone.layers.1.mixer.x_proj.weight'");
  expect_convert_error(
      write_with("err_no_embd", without("backbone.embeddings.weight"), make_config(s)),
      "missing tensor 'backbone.embeddings.weight'");

  auto extra = ts;
  extra.push_back({"backbone.layers.0.mixer.foo.weight", {2}, {1, 2}});
  expect_convert_error(
      write_with("err_extra", extra, make_config(s)),
      "unexpected tensor 'backbone.layers.0.mixer.foo.weight' in model.safetensors");
  extra = ts;
  extra.push_back({"backbone.layers.2.norm.weight", {32}, std::vector<float>(32, 1.0f)});
  expect_convert_error(write_with("err_extra_layer", extra, make_config(s)),
                       "(config.json has 2 layers)");
  extra = ts;
  extra.push_back({"model.backbone.norm_f.weight", {32}, std::vector<float>(32, 1.0f)});
  expect_convert_error(write_with("err_twice", extra, make_config(s)), "under two names");

  json cfg = make_config(s);
  cfg["state_size"] = 4;  // x_proj has rows for d_state 8
  expect_convert_error(write_with("err_shape", ts, cfg),
                       "tensor 'backbone.layers.0.mixer.x_proj.weight' has shape (18, 64), "
                       "expected (10, 64)");
  cfg = make_config(s);
  cfg["hidden_size"] = 16;
  cfg["intermediate_size"] = 32;
  expect_convert_error(write_with("err_width", ts, cfg), "backbone.embeddings.weight' has shape");
  cfg = make_config(s);
  cfg["vocab_size"] = 60;
  expect_convert_error(write_with("err_vocab", ts, cfg),
                       "vocab_size (60) is larger than the embedding's 48 rows");
  cfg = make_config(s);
  cfg["use_bias"] = true;
  expect_convert_error(write_with("err_bias_missing", ts, cfg),
                       "missing tensor 'backbone.layers.0.mixer.in_proj.bias' (use_bias = true)");
  cfg = make_config(s);
  cfg["use_conv_bias"] = false;
  expect_convert_error(write_with("err_bias_extra", ts, cfg),
                       "unexpected tensor 'backbone.layers.0.mixer.conv1d.bias' (config.json has "
                       "use_conv_bias = false)");

  // Integer tensors are not weights this converter can read.
  {
    const std::string dir =
        write_with("err_int_dtype", without("backbone.layers.0.mixer.D"), make_config(s));
    std::vector<st::TensorBytes> list;
    for (const auto& t : without("backbone.layers.0.mixer.D"))
      list.push_back({t.name, st::DType::F32, t.shape, encode(st::DType::F32, t.values)});
    list.push_back({"backbone.layers.0.mixer.D", st::DType::I32, {64}, std::string(256, '\0')});
    st::write_file(dir + "/model.safetensors", list);
    expect_convert_error(dir, "tensor 'backbone.layers.0.mixer.D' has dtype I32");
  }

  // A Mamba-2 checkpoint whose config claims more heads than dt_bias has.
  Spec m2;
  m2.layout = "mamba2";
  const std::string dir = write_model(m2, "err_m2_heads");
  json c2 = make_config(m2);
  c2["num_heads"] = 8;
  c2["head_dim"] = 8;
  write_text(dir + "/config.json", c2.dump());
  expect_convert_error(dir, "in_proj.weight' has shape");

  // A shard the index names but that is not there; a shard name that leaves the directory.
  Spec sh;
  sh.shards = 2;
  std::string sd = write_model(sh, "err_shard_missing");
  fs::remove(sd + "/model-00002-of-00002.safetensors");
  expect_convert_error(sd, "which is missing");
  sd = write_model(sh, "err_shard_escape");
  write_text(sd + "/model.safetensors.index.json",
             R"({"weight_map": {"backbone.norm_f.weight": "../x.safetensors"}})");
  expect_convert_error(sd, "is not a plain file name");
}

// ---- the command line ---------------------------------------------------------------------

namespace {
struct Run {
  int status;
  std::string out, err;
};
Run run_tool(const std::string& args, const std::string& scratch) {
  Run r;
  r.status = run(std::string("\"") + MAMBA_BIN_DIR + "/mamba-convert\" " + args, &r.out, &r.err,
                 scratch + "/stderr.txt");
  return r;
}
}  // namespace

TEST_CASE("cli: mamba-convert exits 0 on a good directory and 1 with one error line on a bad one") {
  if (!fs::exists(std::string(MAMBA_BIN_DIR) + "/mamba-convert")) {
    MESSAGE("skipped: mamba-convert is not built");
    return;
  }
  Spec s;
  s.layout = "mamba2";
  const std::string dir = write_model(s, "cli_good");
  Run r = run_tool("\"" + dir + "\" -o \"" + dir + "/m.gguf\" --outtype bf16", dir);
  CHECK(r.status == 0);
  CHECK(r.out.rfind("wrote " + dir + "/m.gguf (20 tensors, ", 0) == 0);
  CHECK(r.out.find("arch mamba2)\n") != std::string::npos);
  CHECK(r.err.find("warning: no tokenizer.json or tokenizer.model") != std::string::npos);
  CHECK(gguf::File::open(dir + "/m.gguf")->get_int("general.file_type") == 32);

  const std::string bad = tmp_dir("cli_bad");
  r = run_tool("\"" + bad + "\" -o \"" + bad + "/m.gguf\"", bad);
  CHECK(r.status == 1);
  CHECK(r.err.rfind("error: missing ", 0) == 0);
  CHECK(r.err.find("config.json") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(bad + "/m.gguf"));

  r = run_tool("\"" + dir + "\" -o \"" + dir + "/x.gguf\" --outtype q4", dir);
  CHECK(r.status == 1);
  CHECK(r.err.rfind("error: unknown outtype 'q4'", 0) == 0);
}
