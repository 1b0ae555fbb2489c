// The CUDA backend: the whole forward pass on one GPU, from the kernel library in cuda/.
//
// The weights are uploaded once, in their stored dtype. Every state slot is a fixed region of
// one device buffer laid out exactly like save_slot()'s bytes (conv state of every layer, then
// SSM state of every layer, float32), so slots are reset, copied, saved and loaded with plain
// memory copies. A decode step for a given batch size is captured once as a CUDA graph against
// fixed input/output buffers, on the second step of that size, and replayed for every token.
//
// This header needs no CUDA headers: the library's generic code (make_backend) includes it.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace mamba {

struct CudaOptions {
  bool graphs = true;            // decode through captured CUDA graphs (false: plain launches)
  int max_prefill_tokens = 512;  // rows per forward pass; longer prompts go through in pieces
  // Mamba-1 decode steps of up to 8 rows with 16-bit weights run every layer in one persistent
  // kernel (cuda/persistent_decode.cuh; the same bits as the per-kernel path). Off: on the
  // H100 it is still slower than the per-kernel path (docs/benchmarks.md). MAMBA_PERSISTENT=1
  // turns it on, MAMBA_NO_PERSISTENT=1 off, whatever this says, for timing both with one build.
  bool persistent_decode = false;
};

// opts.device is "cuda" or "cuda:N" (device N). Throws mamba::Error when no device is usable
// or the model does not fit ("out of GPU memory allocating <what> ...").
std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opts,
                                           const CudaOptions& cuda = {});

// Whether b is a CUDA backend whose decode steps of up to 8 rows run the persistent kernel.
bool cuda_persistent_decode(const Backend& b);

}  // namespace mamba
