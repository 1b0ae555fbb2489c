// Mamba-1 (and Falcon-Mamba): the mixer tensors of one layer.
//
// PyTorch module (mixer = MambaMixer)     GGUF name              shape (PyTorch order)
//   x_proj.weight                         blk.N.ssm_x.weight     (dt_rank + 2*d_state, d_inner)
//   dt_proj.weight                        blk.N.ssm_dt.weight    (d_inner, dt_rank)
//   dt_proj.bias                          blk.N.ssm_dt.bias      (d_inner)
//   -exp(A_log)                           blk.N.ssm_a            (d_inner, d_state)
//   D                                     blk.N.ssm_d            (d_inner)
// The converter stores A already negated and exponentiated, so the loader reads it as is.
#include "model/model.h"

namespace mamba {

void load_mamba1_layer(TensorLoader& tl, const ModelConfig& c, int il, LayerWeights& w) {
  const std::string p = "blk." + std::to_string(il) + ".";
  w.x_proj = tl.matrix(p + "ssm_x.weight", c.dt_rank + 2 * c.d_state, c.d_inner);
  w.dt_proj = tl.matrix(p + "ssm_dt.weight", c.d_inner, c.dt_rank);
  w.dt_bias = tl.vec(p + "ssm_dt.bias", {c.d_inner});
  w.A = tl.vec(p + "ssm_a", {c.d_inner, c.d_state});
  w.D = tl.vec(p + "ssm_d", {c.d_inner});
}

}  // namespace mamba
