// Token embedding lookup: the first step of every forward pass.
#pragma once

#include "common.cuh"
#include "gguf/gguf.h"

namespace mamba::cuda {

// out (n, d_model) float32 = table[ids[i]] for each of the n token ids (device).
// table (n_vocab, d_model) is stored as f32, f16 or bf16. Ids must lie in [0, n_vocab): the
// caller checks them on the host; a row for an out-of-range id is left as zeros.
void embedding(const void* table, gguf::DType dtype, int64_t n_vocab, int64_t d_model,
               const int32_t* ids, int n, float* out, cudaStream_t stream);

}  // namespace mamba::cuda
