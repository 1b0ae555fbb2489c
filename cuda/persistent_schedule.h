// The persistent decode step's schedule (persistent_decode.cu): which warp multiplies which
// weight chunks of which layer, and in what order. Host and device code without CUDA headers,
// so that a CPU test (tests/cuda/test_persistent_schedule.cpp) checks it: every chunk of every
// layer taken exactly once, by the unit linear_decode would give it to, and each warp's weight
// stream (what its ring requests ahead) in exactly the order the warp's phases consume it.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef __CUDACC__
#define MAMBA_PD_HD __host__ __device__ __forceinline__
#else
#define MAMBA_PD_HD inline
#endif

namespace mamba::cuda::persistent {

constexpr int kChunk = 32;    // K values of a chunk, as in linear_decode
constexpr int kResidues = 4;  // linear_decode's warps per K slice (kLinearDecodeWarps)
// The weight phases of a layer, in the order they run.
enum Phase { kIn = 0, kX = 1, kDt = 2, kOut = 3, kPhases = 4 };

// One projection's walk, the same in every layer. A unit is what one warp multiplies in one go:
// for in_proj, x_proj and out_proj one of linear_decode's warps, (16-row tile, K slice,
// residue w), which takes chunks ch0 + w, ch0 + w + 4, ... of its slice and leaves its partial
// sums in the workspace; for dt_proj a whole 16-row tile (one slice; the warp keeps the four
// residues' sums apart and adds them itself), whose 16 channels the same warp then scans.
struct ProjShape {
  int M = 0, K = 0;          // outputs, inputs
  int tiles = 0;             // ceil(M / 16)
  int splits = 1, cps = 0;   // K slices, chunks per slice (LinearDecodeSplit)
  int nch = 0;               // ceil(K / 32)
  int units = 0;
  int mpad = 0;              // tiles * 16: rows of a partial-sum plane
};

inline ProjShape shape_of(int M, int K, int splits, int chunks_per_split, bool whole_tiles) {
  ProjShape r;
  r.M = M;
  r.K = K;
  r.tiles = (M + 15) / 16;
  r.mpad = r.tiles * 16;
  r.splits = splits;
  r.cps = chunks_per_split;
  r.nch = (K + kChunk - 1) / kChunk;
  r.units = whole_tiles ? r.tiles : r.tiles * r.splits * kResidues;
  return r;
}

// Unit u of phase ph: its tile, slice and residue; its chunks are ch0 + step * i, i < count.
struct Unit {
  int tile = 0, slice = 0, w = 0, ch0 = 0, step = 1, count = 0;
};
MAMBA_PD_HD Unit unit_of(const ProjShape& s, int ph, int u) {
  Unit r;
  if (ph == kDt) {
    r.tile = u;
    r.count = s.nch;
    return r;
  }
  r.tile = u / (s.splits * kResidues);
  const int rem = u % (s.splits * kResidues);
  r.slice = rem / kResidues;
  r.w = rem % kResidues;
  const int ch0 = r.slice * s.cps, ch1 = s.nch < ch0 + s.cps ? s.nch : ch0 + s.cps;
  r.ch0 = ch0 + r.w;
  r.step = kResidues;
  r.count = ch1 - ch0 > r.w ? (ch1 - ch0 - r.w + kResidues - 1) / kResidues : 0;
  return r;
}

struct Schedule {
  ProjShape sh[kPhases];
  int n_layer = 0;
  int units_layer = 0;        // units of one layer, all phases
  int before[kPhases] = {};   // units of the layer's earlier phases
  int total_warps = 0;        // of the grid

  // The first unit of (layer, phase) that warp `wid` takes; it then takes every
  // total_warps-th. The start rotates with the units before it in the step, so the warps left
  // without a unit in one phase take the first ones of the next.
  MAMBA_PD_HD int first_unit(int wid, int layer, int ph) const {
    const int64_t rot = (int64_t(layer) * units_layer + before[ph]) % total_warps;
    return int((wid - rot + total_warps) % total_warps);
  }
};

inline Schedule make_schedule(int n_layer, const ProjShape (&sh)[kPhases], int total_warps) {
  Schedule s;
  s.n_layer = n_layer;
  s.total_warps = total_warps;
  for (int ph = 0; ph < kPhases; ph++) {
    s.sh[ph] = sh[ph];
    s.before[ph] = s.units_layer;
    s.units_layer += sh[ph].units;
  }
  return s;
}

// A position in warp wid's weight stream: chunk i of unit u of (layer, ph). The stream is
// every chunk of every unit the warp takes, layer by layer, phase by phase, unit by unit, in
// the order the phases multiply them; units without a chunk are passed over.
struct Cursor {
  int layer = 0, ph = 0, u = 0, i = 0;
  Unit unit;

  MAMBA_PD_HD bool done(const Schedule& s) const { return layer >= s.n_layer; }
  MAMBA_PD_HD int chunk() const { return unit.ch0 + unit.step * i; }

  MAMBA_PD_HD void start(const Schedule& s, int wid) {
    layer = ph = i = 0;
    u = s.first_unit(wid, 0, 0);
    settle(s, wid);
  }
  MAMBA_PD_HD void next(const Schedule& s, int wid) {
    if (++i < unit.count) return;
    i = 0;
    u += s.total_warps;
    settle(s, wid);
  }

 private:
  // Moves to the first unit with a chunk at or after unit u of (layer, ph).
  MAMBA_PD_HD void settle(const Schedule& s, int wid) {
    while (layer < s.n_layer) {
      for (; u < s.sh[ph].units; u += s.total_warps) {
        unit = unit_of(s.sh[ph], ph, u);
        if (unit.count > 0) return;
      }
      if (++ph == kPhases) ph = 0, layer++;
      if (layer < s.n_layer) u = s.first_unit(wid, layer, ph);
    }
  }
};

}  // namespace mamba::cuda::persistent
