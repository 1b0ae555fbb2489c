#include "gated_rmsnorm.cuh"

namespace mamba::cuda {
namespace {

// Block (group, row). A thread's share of the group (up to kHeld values, strided by the block)
// stays in registers between the sum of squares and the scaling, and all its loads are issued
// together; larger groups read y and z a second time (from cache). Each thread rereads only
// elements it read itself, so writing `out` in place of `y` is safe.
constexpr int kHeld = 16;

__global__ void gated_rmsnorm_kernel(const float* y, const float* __restrict__ z, int64_t ldz,
                                     const float* __restrict__ w, int d_inner, int group_size,
                                     float eps, float* out, Out16 out16) {
  pdl_start();
  __shared__ float scratch[32];
  const int grp = blockIdx.x;
  const int64_t row = blockIdx.y;
  const int64_t off = row * d_inner + int64_t(grp) * group_size;
  const float* zr = z + row * ldz + int64_t(grp) * group_size;
  const float* wg = w + int64_t(grp) * group_size;
  const int tid = int(threadIdx.x), nt = int(blockDim.x);
  float ss = 0.0f;
  if (group_size <= kHeld * nt) {
    float yv[kHeld], zv[kHeld];
#pragma unroll
    for (int i = 0; i < kHeld; i++) {
      const int j = tid + i * nt;
      yv[i] = j < group_size ? y[off + j] : 0.0f;
      zv[i] = j < group_size ? zr[j] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kHeld; i++) {
      yv[i] = yv[i] * silu(zv[i]);  // the gated value g
      if (tid + i * nt < group_size) ss += yv[i] * yv[i];
    }
    ss = block_sum(ss, scratch);
    const float scale = rsqrtf(ss / float(group_size) + eps);
#pragma unroll
    for (int i = 0; i < kHeld; i++) {
      const int j = tid + i * nt;
      if (j < group_size) {
        const float v = yv[i] * scale * wg[j];
        if (out) out[off + j] = v;
        if (out16.data) store16(out16, row, int64_t(grp) * group_size + j, d_inner, v);
      }
    }
    return;
  }
  for (int j = tid; j < group_size; j += nt) {
    const float g = y[off + j] * silu(zr[j]);
    ss += g * g;
  }
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(group_size) + eps);
  for (int j = tid; j < group_size; j += nt) {
    const float v = y[off + j] * silu(zr[j]) * scale * wg[j];
    if (out) out[off + j] = v;
    if (out16.data) store16(out16, row, int64_t(grp) * group_size + j, d_inner, v);
  }
}

}  // namespace

void gated_rmsnorm(const float* y, const float* z, int64_t ldz, const float* w, int n,
                   int d_inner, int n_groups, float eps, float* out, Out16 out16,
                   cudaStream_t stream) {
  require(y && z && w && (out || out16.data), "gated_rmsnorm", "null pointer");
  require(n >= 0 && n <= 65535 && d_inner > 0 && n_groups > 0 && d_inner % n_groups == 0,
          "gated_rmsnorm", "bad shape");
  require(ldz >= d_inner, "gated_rmsnorm", "bad ldz");
  if (n == 0) return;
  const int group_size = d_inner / n_groups;
  // Enough threads that a group fits in registers (kHeld values each) up to 8192 values.
  const int threads = group_size > 4096   ? 512
                      : group_size >= 1024 ? 256
                      : group_size >= 128  ? 128
                                           : 32;
  launch_pdl(gated_rmsnorm_kernel, dim3(unsigned(n_groups), unsigned(n)), dim3(threads), 0, stream,
             y, z, ldz, w, d_inner, group_size, eps, out, out16);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
