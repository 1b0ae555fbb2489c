// Model hyper-parameters, shared by the converter (which fills it from HF config.json) and the
// loader (which reads it back from GGUF metadata).
//
// Glossary, tied to the papers (Mamba: Gu & Dao 2023; Mamba-2 / SSD: Dao & Gu 2024):
//   d_model    width of the residual stream (the paper's D).
//   n_layer    number of residual blocks; each is x + Mixer(RMSNorm(x)).
//   d_inner    width inside the mixer, E*D with expansion E = 2: in_proj maps d_model to it.
//   d_state    N, the size of the SSM state per channel (Mamba-1) or per head (Mamba-2).
//   d_conv     width of the causal depthwise conv1d before the SSM (4 in every checkpoint).
//   dt_rank    Mamba-1 only: R, the rank of the low-rank projection that produces dt
//              ("auto" = ceil(d_model / 16)).
//   n_groups   Mamba-2 only: G, the number of B/C groups, like grouped-query attention's KV
//              groups; each run of n_heads/G consecutive heads shares one B and one C. The gated RMSNorm is also
//              applied per group.
//   head_dim   Mamba-2 only: P, channels per head; n_heads = d_inner / head_dim. Each head has a
//              scalar decay A and a scalar dt per step (SSD's "scalar times identity" A).
//   chunk_size Mamba-2 only: Q, the block length of the chunked SSD scan used for prefill. It
//              changes only the order of arithmetic, never the result.
//
// Per-sequence recurrent state (float32), constant in context length:
//   conv state (n_layer, d_conv - 1, conv_dim)    conv_dim = d_inner (Mamba-1) or
//                                                 d_inner + 2*n_groups*d_state (Mamba-2)
//   ssm state  (n_layer, d_inner, d_state)        Mamba-1
//              (n_layer, n_heads, head_dim, d_state)  Mamba-2 (same element count)
#pragma once

#include <cstdint>
#include <limits>
#include <string>

namespace mamba {

namespace gguf {
class File;
class Writer;
}  // namespace gguf

enum class Arch { Mamba1, Mamba2 };
const char* arch_gguf_name(Arch a);  // "mamba" | "mamba2"

struct ModelConfig {
  Arch arch = Arch::Mamba1;
  int64_t n_vocab = 0;   // rows of token_embd, padded as the checkpoint pads it
  int64_t d_model = 0;
  int64_t n_layer = 0;
  int64_t d_inner = 0;
  int64_t d_state = 0;
  int64_t d_conv = 4;
  int64_t dt_rank = 0;     // Mamba-1
  int64_t n_groups = 1;    // Mamba-2
  int64_t n_heads = 0;     // Mamba-2: d_inner / head_dim (GGUF: ssm.time_step_rank)
  int64_t head_dim = 0;    // Mamba-2
  int64_t chunk_size = 256;  // Mamba-2
  float norm_eps = 1e-5f;    // eps of every RMSNorm with a weight (blocks, norm_f, gated norm)
  bool dt_b_c_rms = false;   // Falcon-Mamba: weightless RMSNorm on dt, B and C
  float mixer_rms_eps = 1e-6f;  // eps of that weightless RMSNorm
  float dt_min = 0.0f;       // Mamba-2: dt = clamp(softplus(...), dt_min, dt_max)
  float dt_max = std::numeric_limits<float>::infinity();
  int64_t context_length = 1 << 20;  // informative only: the state does not grow

  int64_t conv_dim() const {  // channels that go through the conv1d
    return arch == Arch::Mamba1 ? d_inner : d_inner + 2 * n_groups * d_state;
  }
  int64_t in_proj_rows() const {  // output width of ssm_in
    return arch == Arch::Mamba1 ? 2 * d_inner : 2 * d_inner + 2 * n_groups * d_state + n_heads;
  }
  // Bytes of recurrent state per sequence (float32 conv + ssm state for all layers).
  uint64_t state_bytes() const;

  // Throws mamba::Error if a field is out of range or the fields contradict each other.
  void validate() const;
};

// Reads the architecture keys (llama.cpp names, plus our optional extensions) and fills
// everything except n_vocab, which the loader takes from token_embd.
ModelConfig config_from_gguf(const gguf::File& f);
// Writes the keys that config_from_gguf reads. n_vocab goes to `<arch>.vocab_size`.
void config_to_gguf(const ModelConfig& c, gguf::Writer& w);

}  // namespace mamba
