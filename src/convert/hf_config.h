// Maps a Hugging Face (or original state-spaces) config.json to ModelConfig.
//
// Supported layouts:
//   MambaForCausalLM        model_type "mamba"         -> Arch::Mamba1
//   FalconMambaForCausalLM  model_type "falcon_mamba"  -> Arch::Mamba1 with dt_b_c_rms
//   Mamba2ForCausalLM       model_type "mamba2"        -> Arch::Mamba2
//   state-spaces config     d_model, n_layer, ssm_cfg {layer: "Mamba1" | "Mamba2", ...}
// Missing keys take the defaults of the library that wrote the config (transformers or
// mamba_ssm), so a config loads here the way it loads there.
//
// n_vocab is left 0: the converter takes it from the embedding's rows, because checkpoints
// pad the vocabulary (to a multiple of 8 or 16) beyond config's vocab_size.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "model/config.h"

namespace mamba::convert {

struct HfConfig {
  ModelConfig model;   // n_vocab = 0 until the weights are seen
  std::string source;  // "MambaForCausalLM", ..., or "state-spaces config"
  bool state_spaces = false;
  int64_t vocab_size = 0;          // config's vocab_size; 0 when absent
  int64_t pad_vocab_multiple = 8;  // what the training code padded the vocab to
  bool tie_embeddings = true;
  bool proj_bias = false;  // in_proj and out_proj have biases
  bool conv_bias = true;   // conv1d has a bias
  // Special token ids from config.json, a fallback for the tokenizer metadata.
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;

  // vocab_size rounded up to pad_vocab_multiple: the embedding rows the training code made.
  int64_t padded_vocab_size() const;
};

// `text` is config.json's contents; `what` names it in messages. Non-finite floats (e.g.
// Mamba-2's time_step_limit) are accepted both as Python's bare Infinity / NaN and as
// transformers 5's {"__float__": "Infinity"}.
HfConfig parse_hf_config(const std::string& text, const std::string& what = "config.json");
// Reads <dir>/config.json.
HfConfig load_hf_config(const std::string& dir);

// Turns the bare Infinity, -Infinity and NaN tokens that Python's json writes into strings
// ("Infinity", ...) so that a strict JSON parser accepts the text. Strings are left intact.
std::string python_json_to_strict(const std::string& text);

}  // namespace mamba::convert
