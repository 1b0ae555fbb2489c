// The Mamba-1 mixer (also Falcon-Mamba) on the CPU. Each step is preceded by the line of
// PyTorch (transformers' MambaMixer.slow_forward) that it computes.
#include <limits>

#include "backend/cpu/layers.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/simd.h"

namespace mamba::cpu {

void mamba1_layer(const LayerArgs& a, float* h) {
  const ModelConfig& c = a.c;
  const LayerWeights& w = a.w;
  Scratch& s = a.s;
  const int64_t T = a.T, DM = c.d_model, DI = c.d_inner, N = c.d_state, R = c.dt_rank;
  const int64_t ld_proj = 2 * DI, ld_dbl = R + 2 * N;
  float* proj = s.proj.data();  // (T, 2*DI): x | z
  float* xc = s.xc.data();      // (T, DI)
  float* dbl = s.dbl.data();    // (T, R + 2N): dt | B | C
  float* dt = s.dt.data();      // (T, DI)
  float* y = s.y.data();        // (T, DI)

  // projected_states = self.in_proj(hidden_states); hidden_states, gate = chunk(2)
  matmul(a.pool, w.in_proj, s.xn.data(), DM, T, proj, ld_proj,
         w.in_proj_bias.empty() ? nullptr : w.in_proj_bias.data());

  // hidden_states = act(conv1d(cat(conv_state, hidden_states))[..., :seq_len])
  // conv_state = last d_conv - 1 inputs
  a.pool.parallel_for(DI, simd::W, [&](int64_t c0, int64_t c1) {
    for (const Seq& q : a.seqs)
      conv1d_silu(proj + q.t0 * ld_proj, ld_proj, q.len, c0, c1, a.conv_w_t, w.conv_b.data(),
                  c.d_conv, DI, q.conv_state + int64_t(a.il) * (c.d_conv - 1) * DI, xc + q.t0 * DI,
                  DI);
  });

  // ssm_parameters = self.x_proj(hidden_states)
  // time_step, B, C = split(ssm_parameters, [dt_rank, d_state, d_state])
  matmul(a.pool, w.x_proj, xc, DI, T, dbl, ld_dbl);

  if (c.dt_b_c_rms) {
    // Falcon-Mamba: B = rms_forward(B); C = rms_forward(C); time_step = rms_forward(time_step)
    // (no weight, eps = mixer_rms_eps)
    a.pool.parallel_for(T, 8, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) {
        float* row = dbl + t * ld_dbl;
        rmsnorm(row, R, nullptr, c.mixer_rms_eps, row);
        rmsnorm(row + R, N, nullptr, c.mixer_rms_eps, row + R);
        rmsnorm(row + R + N, N, nullptr, c.mixer_rms_eps, row + R + N);
      }
    });
  }

  // discrete_time_step = self.dt_proj(time_step)   (the bias is added with the softplus)
  matmul(a.pool, w.dt_proj, dbl, ld_dbl, T, dt, DI);

  // Everything from here to the gate is independent per channel: one pass over each part
  // of the channels.
  a.pool.parallel_for(DI, simd::W, [&](int64_t c0, int64_t c1) {
    const int64_t nc = c1 - c0;
    // discrete_time_step = softplus(discrete_time_step + dt_proj.bias)
    for (int64_t t = 0; t < T; t++)
      dt_softplus(dt + t * DI + c0, w.dt_bias.data() + c0, nc, 0.0f,
                  std::numeric_limits<float>::infinity());
    // for each t:
    //   ssm_state = exp(A * dt) * ssm_state + dt * B * x
    //   y = ssm_state @ C + x * D
    for (const Seq& q : a.seqs) {
      const Mamba1ScanArgs sa{.T = q.len,
                              .N = N,
                              .x = xc + q.t0 * DI,
                              .ldx = DI,
                              .dt = dt + q.t0 * DI,
                              .lddt = DI,
                              .B = dbl + q.t0 * ld_dbl + R,
                              .C = dbl + q.t0 * ld_dbl + R + N,
                              .ldbc = ld_dbl,
                              .A = w.A.data(),
                              .D = w.D.data(),
                              .state = q.ssm_state + int64_t(a.il) * DI * N,
                              .y = y + q.t0 * DI,
                              .ldy = DI};
      mamba1_scan(sa, c0, c1);
    }
    // scan_output = scan_output * act(gate)
    for (int64_t t = 0; t < T; t++) mul_silu(y + t * DI + c0, proj + t * ld_proj + DI + c0, nc);
  });

  // contextualized_states = self.out_proj(scan_output); hidden_states = residual + that
  matmul(a.pool, w.out_proj, y, DI, T, h, DM,
         w.out_proj_bias.empty() ? nullptr : w.out_proj_bias.data(), /*accumulate=*/true);
}

}  // namespace mamba::cpu
