// The Mamba-2 mixer on the CPU. Each step is preceded by the line of PyTorch (transformers'
// Mamba2Mixer.torch_forward) that it computes.
#include <algorithm>

#include "backend/cpu/layers.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/simd.h"

namespace mamba::cpu {

void mamba2_layer(const LayerArgs& a, float* h) {
  const ModelConfig& c = a.c;
  const LayerWeights& w = a.w;
  Scratch& s = a.s;
  const int64_t T = a.T, DM = c.d_model, DI = c.d_inner, N = c.d_state;
  const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, CD = c.conv_dim();
  const int64_t ld_proj = c.in_proj_rows();
  float* proj = s.proj.data();  // (T, in_proj_rows): z (DI) | xBC (CD) | dt (H)
  float* xc = s.xc.data();      // (T, CD): x (DI) | B (G*N) | C (G*N)
  float* y = s.y.data();        // (T, DI)

  // zxbcdt = self.in_proj(hidden_states); gate, xBC, dt = split(zxbcdt, [DI, CD, H])
  matmul(a.pool, w.in_proj, s.xn.data(), DM, T, proj, ld_proj,
         w.in_proj_bias.empty() ? nullptr : w.in_proj_bias.data());

  // xBC = act(conv1d(cat(conv_state, xBC))[..., :seq_len]); conv_state = last d_conv-1 inputs
  a.pool.parallel_for(CD, simd::W, [&](int64_t c0, int64_t c1) {
    for (const Seq& q : a.seqs)
      conv1d_silu(proj + q.t0 * ld_proj + DI, ld_proj, q.len, c0, c1, a.conv_w_t, w.conv_b.data(),
                  c.d_conv, CD, q.conv_state + int64_t(a.il) * (c.d_conv - 1) * CD, xc + q.t0 * CD,
                  CD);
  });

  // Per head from here to the scan output: one pass over each part of the heads.
  a.pool.parallel_for(H, 1, [&](int64_t h0, int64_t h1) {
    // dt = softplus(dt + dt_bias); dt = clamp(dt, time_step_min, time_step_max)
    float* dt = proj + DI + CD;  // (T, ld_proj), H columns
    for (int64_t t = 0; t < T; t++)
      dt_softplus(dt + t * ld_proj + h0, w.dt_bias.data() + h0, h1 - h0, c.dt_min, c.dt_max);
    // hidden_states, B, C = split(xBC, [DI, G*N, G*N])
    // for each t:
    //   ssm_state = exp(dt * A) * ssm_state + dt * x B^T      (per head, B of its group)
    //   y = ssm_state @ C + D * x
    for (const Seq& q : a.seqs) {
      const Mamba2ScanArgs sa{.T = q.len,
                              .H = H,
                              .P = P,
                              .G = G,
                              .N = N,
                              .x = xc + q.t0 * CD,
                              .ldx = CD,
                              .dt = dt + q.t0 * ld_proj,
                              .lddt = ld_proj,
                              .B = xc + q.t0 * CD + DI,
                              .C = xc + q.t0 * CD + DI + G * N,
                              .ldbc = CD,
                              .A = w.A.data(),
                              .D = w.D.data(),
                              .state = q.ssm_state + int64_t(a.il) * DI * N,
                              .y = y + q.t0 * DI,
                              .ldy = DI};
      // The chunked form only pays off over more than one token.
      if (a.chunked_scan && q.len > 1)
        mamba2_scan_chunked(sa, h0, h1, c.chunk_size);
      else
        mamba2_scan(sa, h0, h1);
    }
  });

  // scan_output = self.norm(y, gate): y * silu(gate), then RMSNorm over each group
  a.pool.parallel_for(T, 2, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
      gated_rmsnorm(y + t * DI, proj + t * ld_proj, w.norm.data(), DI, G, c.norm_eps);
  });

  // out = self.out_proj(scan_output); hidden_states = residual + out
  matmul(a.pool, w.out_proj, y, DI, T, h, DM,
         w.out_proj_bias.empty() ? nullptr : w.out_proj_bias.data(), /*accumulate=*/true);
}

}  // namespace mamba::cpu
