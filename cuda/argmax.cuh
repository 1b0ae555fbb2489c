// Greedy picks on the device: each row's greedy_argmax (sampler.h), so that a decode step of
// greedy sequences copies ids to the host instead of its logits.
#pragma once

#include "common.cuh"

namespace mamba::cuda {

// ids[r] = the index of the largest of x[r][0 .. V), the lowest on ties, never a NaN and never
// banned[r] (when >= 0; banned may be null: none), and 0 when no value is above -inf, for the
// n rows of x (n, ld). ids is device memory, n entries.
void argmax_rows(const float* x, int64_t ld, int n, int V, const int32_t* banned, int32_t* ids,
                 cudaStream_t stream);

}  // namespace mamba::cuda
