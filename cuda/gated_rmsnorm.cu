#include "gated_rmsnorm.cuh"

namespace mamba::cuda {
namespace {

// Block (group, row). Reading y and z a second time (from cache) is cheaper than keeping a
// group of up to 8192 values in registers. Each thread rereads only elements it read itself,
// so writing `out` in place of `y` is safe.
__global__ void gated_rmsnorm_kernel(const float* y, const float* __restrict__ z, int64_t ldz,
                                     const float* __restrict__ w, int d_inner, int group_size,
                                     float eps, float* out) {
  pdl_start();
  __shared__ float scratch[32];
  const int grp = blockIdx.x;
  const int64_t row = blockIdx.y;
  const int64_t off = row * d_inner + int64_t(grp) * group_size;
  const float* zr = z + row * ldz + int64_t(grp) * group_size;
  float ss = 0.0f;
  for (int j = threadIdx.x; j < group_size; j += blockDim.x) {
    const float g = y[off + j] * silu(zr[j]);
    ss += g * g;
  }
  ss = block_sum(ss, scratch);
  const float scale = rsqrtf(ss / float(group_size) + eps);
  const float* wg = w + int64_t(grp) * group_size;
  for (int j = threadIdx.x; j < group_size; j += blockDim.x)
    out[off + j] = y[off + j] * silu(zr[j]) * scale * wg[j];
}

}  // namespace

void gated_rmsnorm(const float* y, const float* z, int64_t ldz, const float* w, int n,
                   int d_inner, int n_groups, float eps, float* out, cudaStream_t stream) {
  require(y && z && w && out, "gated_rmsnorm", "null pointer");
  require(n >= 0 && n <= 65535 && d_inner > 0 && n_groups > 0 && d_inner % n_groups == 0,
          "gated_rmsnorm", "bad shape");
  require(ldz >= d_inner, "gated_rmsnorm", "bad ldz");
  if (n == 0) return;
  const int group_size = d_inner / n_groups;
  const int threads = group_size >= 1024 ? 256 : group_size >= 128 ? 128 : 32;
  launch_pdl(gated_rmsnorm_kernel, dim3(unsigned(n_groups), unsigned(n)), dim3(threads), 0, stream,
             y, z, ldz, w, d_inner, group_size, eps, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace mamba::cuda
