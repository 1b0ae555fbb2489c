// The Mamba-1 decode step of up to 8 rows, every layer, as one persistent kernel.
//
// Why. A decode step of one sequence reads every weight once (mamba-1.4b: 2.7 GB, under a
// millisecond of an H100's memory bandwidth), but as separate kernels it is a chain of six
// dependent launches a layer (norm, in_proj with the conv, x_proj, dt_proj, scan, out_proj),
// each paying a launch, the ramp-up of its weight stream and its tail: the step ran at 40% of
// the bandwidth. Here one block per SM runs the whole step, the layers' phases separated by
// grid barriers. Each warp streams its share of the weights, in the order it will multiply
// them, through a ring of shared-memory slots that cp.async fills; the ring runs ahead across
// the barriers, so the memory keeps streaming while the small phases and the barriers pass.
//
// A layer, the PyTorch lines (MambaMixer.slow_forward, one token) it computes:
//   P1  xn = RMSNorm(h) * w                 every block, into its shared memory
//       xz = xn @ in_proj.T                 warp units -> partial sums
//   P2  x, z = xz (+ bias)                  thread per (row, channel): partials summed,
//       x = silu(conv1d(state ++ x) + b)    conv state shifted
//   P3  dbl = x @ x_proj.T                  warp units -> partial sums
//   P4  dt_low, B, C = dbl                  every block sums all of it
//       dt = dt_low @ dt_proj.T             warp per 16 channels, which it then scans:
//       h = exp(softplus(dt + dt_bias) * A) * h + dt * B * x;  y = (h . C + D * x) * silu(z)
//   P5  out = y @ out_proj.T                warp units -> partial sums
//   P6  h += out (+ bias)                   thread per (row, feature); the last layer writes
//                                           out instead, which the final norm adds
//
// Exactness. Every output is the per-kernel path's value, bit for bit: the projections take
// the same mma.sync products in the same K order and add them in linear_decode's order (a warp
// unit is one of linear_decode's warps: its (tile, slice, residue); LinearDecodeSplit), and the
// norm, conv and scan are the same formulas (rmsnorm_row_scale, conv1d_step_one and
// selective_scan_step_lanes are shared). So a sequence's logits do not depend on whether it
// stepped here, alone, or in a batch of 64 through the separate kernels
// (tests/cuda/test_cuda_model.cpp checks that).
//
// Status (H100, docs/benchmarks.md): exact, but slower than the per-kernel path (mamba-1.4b
// tg128 430 against 527 tok/s): a phase and its grid barrier cost about 5 us, more than the
// kernel boundary they replace. The backend runs it only when asked (CudaOptions,
// MAMBA_PERSISTENT=1).
#pragma once

#include <string>

#include "common.cuh"
#include "linear_decode.cuh"

namespace mamba::cuda {

constexpr int kPersistentMaxRows = 8;

// One layer's weights and state (device pointers). Projections: f16 or bf16, all the same.
struct PersistentDecodeLayer {
  const void* proj[4] = {};        // in_proj (2 d_inner, d_model), x_proj (dt_rank + 2 d_state,
                                   // d_inner), dt_proj (d_inner, dt_rank), out_proj (d_model,
                                   // d_inner)
  const float* in_proj_b = nullptr;   // (2 d_inner) or null
  const float* out_proj_b = nullptr;  // (d_model) or null
  const float* norm_w = nullptr;      // (d_model) attn_norm
  const float* conv_w = nullptr;      // (d_inner, d_conv)
  const float* conv_b = nullptr;      // (d_inner) or null
  const float* dt_bias = nullptr;     // (d_inner)
  const float* A = nullptr;           // (d_inner, d_state), -exp(A_log)
  const float* D = nullptr;           // (d_inner)
  StateRef conv_state;                // per slot (d_conv - 1, d_inner)
  StateRef ssm_state;                 // per slot (d_inner, d_state)
};

struct PersistentDecodeConfig {
  int n_layer = 0, d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0;
  float norm_eps = 0;
  bool bf16 = false;
  LinearDecodeSplit split[4];  // linear_decode_split of in_proj, x_proj, dt_proj, out_proj
};

struct PersistentDecodeArgs {
  const PersistentDecodeLayer* layers = nullptr;  // device, n_layer entries
  int n = 0;                          // rows, 1 ..= kPersistentMaxRows
  const int32_t* slots = nullptr;     // device (n), distinct
  float* h = nullptr;                 // (n, d_model) residual stream: in, the embeddings;
                                      // out, h before the last layer's output is added
  float* out = nullptr;               // (n, d_model) the last layer's mixer output
  float* xc = nullptr;                // (n, d_inner) conv output
  float* z = nullptr;                 // (n, d_inner) gate
  float* y = nullptr;                 // (n, d_inner) scan output
  float* part = nullptr;              // persistent_decode_part_floats(cfg) floats
  unsigned* sync = nullptr;           // one counter (the grid barrier's)
};

// Why this config cannot run here ("" when it can): the shapes the kernel takes (every
// projection's K a multiple of 8, dt_proj in one K slice, d_state a multiple of 4 up to 64,
// d_conv up to 8), the shared memory it needs for 8 rows, and one block resident per SM.
std::string persistent_decode_unsupported(const PersistentDecodeConfig& cfg);

// The partial-sum workspace, in floats.
size_t persistent_decode_part_floats(const PersistentDecodeConfig& cfg);

// One decode step of every layer for rows [0, n). Then, as after the per-kernel layers:
// logits = output(RMSNorm(h += out) * output_norm).
void persistent_decode(const PersistentDecodeConfig& cfg, const PersistentDecodeArgs& a,
                       cudaStream_t stream);

}  // namespace mamba::cuda
