// Random-weight models of any shape, written as GGUF files exactly like a converted checkpoint.
// Tests use them to check the backends against independent reference code; benchmarks use
// them to measure speed at real model sizes without downloading anything.
//
// The values are not a trained model but are scaled like one (unit-variance projections,
// Mamba's usual A, D and dt initialisations), so activations stay in a realistic range and
// the logits are not all equal. The same options and seed always give the same file.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "gguf/gguf.h"
#include "model/config.h"

namespace mamba {

struct RandomModelOptions {
  Arch arch = Arch::Mamba1;
  int64_t d_model = 64;
  int64_t n_layer = 2;
  int64_t n_vocab = 256;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;        // d_inner = expand * d_model
  int64_t dt_rank = 0;       // Mamba-1; 0 = "auto" = ceil(d_model / 16)
  int64_t n_groups = 1;      // Mamba-2
  int64_t head_dim = 16;     // Mamba-2
  int64_t chunk_size = 256;  // Mamba-2
  float dt_min = 0.0f;       // Mamba-2 time_step_limit
  float dt_max = std::numeric_limits<float>::infinity();
  bool falcon = false;     // Mamba-1 with weightless RMSNorm on dt, B, C (Falcon-Mamba)
  bool conv_bias = true;   // conv1d.bias present
  bool proj_bias = false;  // in_proj.bias and out_proj.bias present
  bool tied = true;        // no output.weight: the LM head reuses token_embd
  gguf::DType dtype = gguf::DType::F32;        // big matrices
  gguf::DType small_dtype = gguf::DType::F32;  // norms, biases, conv, A, D
  float weight_scale = 1.0f;                   // multiplies every projection's init range
  uint64_t seed = 1;
  int32_t eos_id = -1;        // written as tokenizer.ggml.eos_token_id when >= 0
  bool flat_vectors = false;  // Mamba-2: write A, D and the norm as plain 1-D tensors
};

// The config such a file loads as (validated).
ModelConfig random_model_config(const RandomModelOptions& o);

// Writes the model; throws mamba::Error on bad options or I/O failure.
void write_random_model(const RandomModelOptions& o, const std::string& path);

}  // namespace mamba
