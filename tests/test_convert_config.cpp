// Mapping config.json (transformers' Mamba, Falcon-Mamba and Mamba-2 configs, and mamba_ssm's
// own) to ModelConfig: defaults, and the configs that must be refused.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "common/error.h"
#include "convert/hf_config.h"

using namespace mamba;
namespace cv = mamba::convert;

TEST_CASE("hf_config: defaults follow the library that wrote the config") {
  auto m1 = cv::parse_hf_config(R"({"model_type": "mamba", "hidden_size": 40,
                                    "num_hidden_layers": 3})");
  CHECK(m1.model.arch == Arch::Mamba1);
  CHECK(m1.model.d_inner == 80);
  CHECK(m1.model.d_state == 16);
  CHECK(m1.model.d_conv == 4);
  CHECK(m1.model.dt_rank == 3);  // ceil(40 / 16)
  CHECK(m1.tie_embeddings);
  CHECK_FALSE(m1.proj_bias);
  CHECK(m1.conv_bias);

  auto falcon = cv::parse_hf_config(R"({"architectures": ["FalconMambaForCausalLM"],
      "hidden_size": 64, "num_hidden_layers": 2, "expand": 16, "intermediate_size": 128})");
  CHECK(falcon.model.dt_b_c_rms);
  CHECK(falcon.model.mixer_rms_eps == doctest::Approx(1e-6));
  CHECK(falcon.model.d_inner == 128);  // the explicit width wins over expand

  // Python's json writes bare Infinity; transformers 5 writes {"__float__": "Infinity"}.
  auto m2 = cv::parse_hf_config(R"({"model_type": "mamba2", "hidden_size": 64,
      "num_hidden_layers": 2, "num_heads": 8, "head_dim": 16, "time_step_limit": [0.5, Infinity],
      "note": "Infinity stays a string here"})");
  CHECK(m2.model.arch == Arch::Mamba2);
  CHECK(m2.model.n_groups == 8);
  CHECK(m2.model.d_state == 128);
  CHECK(m2.model.dt_min == 0.5f);
  CHECK(std::isinf(m2.model.dt_max));
  CHECK_FALSE(m2.tie_embeddings);
  CHECK(m2.pad_vocab_multiple == 16);

  auto ss2 = cv::parse_hf_config(R"({"d_model": 64, "n_layer": 2, "vocab_size": 50277,
      "ssm_cfg": {"layer": "Mamba2"}, "pad_vocab_size_multiple": 16})");
  CHECK(ss2.state_spaces);
  CHECK(ss2.model.arch == Arch::Mamba2);
  CHECK(ss2.model.d_state == 128);
  CHECK(ss2.model.head_dim == 64);
  CHECK(ss2.model.n_heads == 2);
  CHECK(ss2.model.n_groups == 1);
  CHECK(ss2.model.chunk_size == 256);
  CHECK(ss2.padded_vocab_size() == 50288);
  CHECK(ss2.tie_embeddings);

  auto ss1 = cv::parse_hf_config(R"({"d_model": 48, "n_layer": 2, "vocab_size": 50277,
                                     "ssm_cfg": {}})");
  CHECK(ss1.model.arch == Arch::Mamba1);
  CHECK(ss1.model.d_state == 16);
  CHECK(ss1.model.dt_rank == 3);
  CHECK(ss1.padded_vocab_size() == 50280);
}

TEST_CASE("hf_config: unsupported or contradictory configs are refused by name") {
  auto err = [](const std::string& text, const std::string& needle) {
    INFO(text);
    CHECK_THROWS_WITH_AS(cv::parse_hf_config(text), doctest::Contains(needle.c_str()), Error);
  };
  err(R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})",
      "unsupported architecture 'LlamaForCausalLM' (supported: MambaForCausalLM, "
      "Mamba2ForCausalLM, FalconMambaForCausalLM, state-spaces config)");
  err(R"({"model_type": "jamba"})", "unsupported architecture 'jamba'");
  err(R"({"foo": 1})", "unsupported architecture");
  err("{", "not valid JSON");
  err(R"({"model_type": "mamba", "num_hidden_layers": 2})", "missing 'hidden_size'");
  err(R"({"model_type": "mamba", "hidden_size": "64", "num_hidden_layers": 2})",
      "'hidden_size' must be an integer");
  err(R"({"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,
          "hidden_act": "gelu"})",
      "hidden_act");
  err(R"({"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 8,
          "head_dim": 8})",
      "num_heads (8) x head_dim (8) != expand x hidden_size (128)");
  err(R"({"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 8,
          "head_dim": 16, "norm_before_gate": true})",
      "norm_before_gate");
  err(R"({"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 8,
          "head_dim": 16, "rms_norm": false})",
      "rms_norm");
  err(R"({"model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 8,
          "head_dim": 16, "intermediate_size": 100})",
      "intermediate_size (100)");
  err(R"({"d_model": 64, "n_layer": 2, "attn_layer_idx": [1]})",
      "hybrid attention layers are not supported");
  err(R"({"d_model": 64, "n_layer": 2, "d_intermediate": 256})", "d_intermediate");
  err(R"({"d_model": 64, "n_layer": 2, "ssm_cfg": {"layer": "Mamba3"}})", "layer 'Mamba3'");
  err(R"({"d_model": 64, "n_layer": 2, "ssm_cfg": {"layer": "Mamba2", "headdim": 48}})",
      "not a multiple of headdim");
  // Sizes beyond 2^31 - 1 are refused before any product of them can overflow (found by
  // fuzz_hf_config: num_heads x head_dim overflowed int64).
  err(R"({"model_type": "mamba2", "hidden_size": 16, "num_hidden_layers": 2,
          "num_heads": 222222222222222216})",
      "'num_heads' = 222222222222222216 is out of range (at most 2147483647)");
  err(R"({"model_type": "mamba", "hidden_size": 9223372036854775807, "num_hidden_layers": 2})",
      "'hidden_size' = 9223372036854775807 is out of range");
  err(R"({"model_type": "mamba", "hidden_size": 2147483647, "num_hidden_layers": 2,
          "expand": 1000})",
      "'expand' x hidden size = ");
}

TEST_CASE("hf_config: more fields: architectures lists, dt limits, explicit ranks") {
  // The first supported class in the list is used.
  auto h = cv::parse_hf_config(R"({"architectures": ["SomethingElse", "MambaForCausalLM"],
      "hidden_size": 64, "num_hidden_layers": 2, "time_step_rank": 7, "use_bias": true,
      "use_conv_bias": false, "layer_norm_epsilon": 1e-6, "tie_word_embeddings": false,
      "bos_token_id": 3, "eos_token_id": [4, 5], "pad_token_id": null})");
  CHECK(h.source == "MambaForCausalLM");
  CHECK(h.model.dt_rank == 7);
  CHECK(h.proj_bias);
  CHECK_FALSE(h.conv_bias);
  CHECK(h.model.norm_eps == doctest::Approx(1e-6));
  CHECK_FALSE(h.tie_embeddings);
  CHECK(h.bos_token_id == 3);
  CHECK(h.eos_token_id == 4);
  CHECK_FALSE(h.pad_token_id.has_value());

  auto ss = cv::parse_hf_config(R"({"d_model": 64, "n_layer": 2, "norm_epsilon": 1e-6,
      "ssm_cfg": {"layer": "Mamba2", "headdim": 32, "ngroups": 2, "d_state": 64,
                  "dt_limit": [0.001, 0.5], "bias": true, "conv_bias": false},
      "tie_embeddings": false})");
  CHECK(ss.model.n_heads == 4);
  CHECK(ss.model.n_groups == 2);
  CHECK(ss.model.d_state == 64);
  CHECK(ss.model.dt_min == 0.001f);
  CHECK(ss.model.dt_max == 0.5f);
  CHECK(ss.model.norm_eps == doctest::Approx(1e-6));
  CHECK(ss.proj_bias);
  CHECK_FALSE(ss.conv_bias);
  CHECK_FALSE(ss.tie_embeddings);

  CHECK_THROWS_WITH_AS(cv::parse_hf_config(R"({"model_type": "mamba", "hidden_size": 64,
                           "num_hidden_layers": 2, "time_step_rank": "big"})"),
                       doctest::Contains("time_step_rank"), Error);
  CHECK_THROWS_WITH_AS(cv::parse_hf_config(R"({"d_model": 64, "n_layer": 2,
                           "ssm_cfg": {"layer": "Mamba2", "norm_before_gate": true}})"),
                       doctest::Contains("norm_before_gate"), Error);
  CHECK_THROWS_WITH_AS(cv::parse_hf_config(R"({"model_type": "mamba2", "hidden_size": 64,
                           "num_hidden_layers": 2, "num_heads": 8, "head_dim": 16,
                           "time_step_limit": [0.0]})"),
                       doctest::Contains("time_step_limit must be [min, max]"), Error);
}

TEST_CASE("hf_config: Python's non-finite floats become strings, outside strings only") {
  CHECK(cv::python_json_to_strict(R"([Infinity, -Infinity, NaN, "Infinity \" NaN", 1])") ==
        R"(["Infinity", "-Infinity", "NaN", "Infinity \" NaN", 1])");
}
