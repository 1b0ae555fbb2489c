// Mamba-2: the mixer tensors of one layer.
//
// PyTorch module (mixer = Mamba2Mixer)    GGUF name                shape (PyTorch order)
//   dt_bias                               blk.N.ssm_dt.bias        (n_heads)
//   -exp(A_log)                           blk.N.ssm_a              (n_heads, 1) or (n_heads)
//   D                                     blk.N.ssm_d              (n_heads, 1) or (n_heads)
//   norm.weight                           blk.N.ssm_norm.weight    (n_groups, d_inner / n_groups)
//                                                                  or (d_inner)
// A and D get a trailing 1 and the norm weight is split per group by llama.cpp's converter,
// which only changes the shape, not the memory order; both layouts load the same.
#include "model/model.h"

namespace mamba {

void load_mamba2_layer(TensorLoader& tl, const ModelConfig& c, int il, LayerWeights& w) {
  const std::string p = "blk." + std::to_string(il) + ".";
  w.dt_bias = tl.vec(p + "ssm_dt.bias", {c.n_heads});
  w.A = tl.vec(p + "ssm_a", {c.n_heads, 1}, {c.n_heads});
  w.D = tl.vec(p + "ssm_d", {c.n_heads, 1}, {c.n_heads});
  w.norm = tl.vec(p + "ssm_norm.weight", {c.n_groups, c.d_inner / c.n_groups}, {c.d_inner});
}

}  // namespace mamba
