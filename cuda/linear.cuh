// Projections and the LM head: y = x W^T (+ bias) through cuBLAS.
//
// Weights keep their stored dtype on the device. f32 weights run as an exact float32 GEMM
// (no TF32). f16/bf16 weights run on tensor cores: the float32 activations are rounded to the
// weight's dtype into a scratch buffer first, the products accumulate in float32, and the
// output is float32.
#pragma once

#include "common.cuh"
#include "gguf/gguf.h"

namespace mamba::cuda {

// A row-major (rows, cols) weight matrix in device memory.
struct DeviceMatrix {
  const void* data = nullptr;
  gguf::DType dtype = gguf::DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

struct LinearScratch {
  void* data = nullptr;  // room for (n, W.cols) 16-bit values when W is f16/bf16
  size_t bytes = 0;
};

// y (n, ldy): the first W.rows columns = x (n, ldx), first W.cols columns, times W^T,
// plus bias (W.rows) when it is not null. `handle` is bound to `stream` by the call.
// x_rounded (f16/bf16 weights only; ignored for f32): the producer of x has already written
// it rounded to W's dtype into the scratch, as (n, W.cols) contiguous (an Out16 output), so
// the rounding pass is skipped and x itself is not read (it may be null).
void linear(cublasHandle_t handle, const DeviceMatrix& W, const float* x, int64_t ldx, int n,
            float* y, int64_t ldy, const float* bias, const LinearScratch& scratch,
            cudaStream_t stream, bool x_rounded = false);

// Bytes of scratch linear() needs for n rows of this weight (0 for f32 weights).
size_t linear_scratch_bytes(const DeviceMatrix& W, int n);

}  // namespace mamba::cuda
