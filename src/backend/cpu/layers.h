// What the CPU block loop (cpu_backend.cpp) hands to a mixer layer (mamba1_layer.cpp,
// mamba2_layer.cpp): a batch of T token rows that may belong to several sequences, each
// continuing the recurrent state of its own slot.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/cpu/threadpool.h"
#include "model/model.h"

namespace mamba::cpu {

// One sequence's share of a forward call: rows [t0, t0 + len) of every activation buffer.
struct Seq {
  int64_t t0 = 0, len = 0;
  float* conv_state = nullptr;  // (n_layer, d_conv - 1, conv_dim)  the slot's
  float* ssm_state = nullptr;   // (n_layer, d_inner, d_state)
};

// Activation buffers, sized once for the largest batch; row t belongs to token t.
struct Scratch {
  std::vector<float> xn;    // (T, d_model)          RMSNorm(h) * attn_norm
  std::vector<float> proj;  // (T, in_proj_rows)     in_proj output
  std::vector<float> xc;    // (T, conv_dim)         SiLU(conv1d(...))
  std::vector<float> dbl;   // (T, dt_rank + 2*d_state)  Mamba-1 x_proj output
  std::vector<float> dt;    // (T, d_inner)          Mamba-1 dt after dt_proj
  std::vector<float> y;     // (T, d_inner)          scan output, then the gated value
};

struct LayerArgs {
  ThreadPool& pool;
  const ModelConfig& c;
  const LayerWeights& w;
  const float* conv_w_t;  // (d_conv, conv_dim)  conv1d weight, transposed for channel vectors
  int il;                 // layer index, selects the layer's part of the slot states
  int64_t T;              // rows in this batch
  std::span<const Seq> seqs;
  Scratch& s;
  bool chunked_scan;  // Mamba-2: chunked SSD instead of the token-by-token scan
};

// h (T, d_model) += Mixer(s.xn): the residual stream is updated in place.
void mamba1_layer(const LayerArgs& a, float* h);
void mamba2_layer(const LayerArgs& a, float* h);

}  // namespace mamba::cpu
