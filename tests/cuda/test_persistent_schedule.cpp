// The persistent decode step's schedule (cuda/persistent_schedule.h), on the CPU: at the
// published shapes and grids of several sizes, every weight chunk of every layer is multiplied
// exactly once, by the unit (tile, K slice, residue) that linear_decode gives it to, every
// unit is taken by exactly one warp, and each warp's weight stream (what its ring requests
// ahead) is exactly the sequence its phases consume. A mismatch would deadlock the ring or
// multiply the wrong weights, so it is checked here, without a GPU.
#include <doctest/doctest.h>

#include <map>
#include <tuple>
#include <vector>

#include "persistent_schedule.h"

using namespace mamba::cuda::persistent;

namespace {

struct Model {
  const char* name;
  int n_layer, d_model, d_inner, dt_rank, d_state;
  int want[kPhases];  // K slices asked for (as linear_decode's splits_for would give)
};

// linear_decode_split: chunks per slice for the slices asked for, then no empty slice.
ProjShape shape(int M, int K, int want, bool whole_tiles) {
  const int nch = (K + kChunk - 1) / kChunk;
  const int cps = (nch + want - 1) / want;
  return shape_of(M, K, (nch + cps - 1) / cps, cps, whole_tiles);
}

Schedule schedule(const Model& m, int total_warps) {
  const int E = m.dt_rank + 2 * m.d_state;
  const ProjShape sh[kPhases] = {shape(2 * m.d_inner, m.d_model, m.want[kIn], false),
                                 shape(E, m.d_inner, m.want[kX], false),
                                 shape(m.d_inner, m.dt_rank, m.want[kDt], true),
                                 shape(m.d_model, m.d_inner, m.want[kOut], false)};
  return make_schedule(m.n_layer, sh, total_warps);
}

using Chunk = std::tuple<int, int, int, int, int>;  // layer, phase, unit, tile, chunk

}  // namespace

TEST_CASE("persistent decode schedule: each chunk once, by linear_decode's unit, in stream order") {
  const Model models[] = {
      {"mamba-1.4b", 3, 2048, 4096, 128, 16, {2, 8, 1, 5}},
      {"mamba-130m", 3, 768, 1536, 48, 16, {3, 6, 1, 6}},
      {"mamba-2.8b", 2, 2560, 5120, 160, 16, {2, 8, 1, 4}},
      {"test d_model 128", 2, 128, 256, 8, 16, {1, 1, 1, 1}},
      {"odd tiles", 2, 200, 392, 24, 4, {3, 5, 1, 7}},
  };
  for (const Model& m : models) {
    for (int total_warps : {1, 16, 37, 132 * 16}) {
      INFO(m.name, ", ", total_warps, " warps");
      const Schedule s = schedule(m, total_warps);
      std::map<std::tuple<int, int, int, int>, int> taken;  // (layer, phase, tile, chunk)
      std::map<std::tuple<int, int, int>, int> units;       // (layer, phase, unit)
      bool streams_match = true;
      int64_t wrong_unit = 0;
      for (int wid = 0; wid < total_warps; wid++) {
        // What the phases consume, in their order.
        std::vector<Chunk> consumed;
        for (int l = 0; l < m.n_layer; l++)
          for (int ph = 0; ph < kPhases; ph++) {
            const ProjShape& sh = s.sh[ph];
            for (int u = s.first_unit(wid, l, ph); u < sh.units; u += total_warps) {
              units[{l, ph, u}]++;
              const Unit un = unit_of(sh, ph, u);
              for (int i = 0; i < un.count; i++)
                consumed.emplace_back(l, ph, u, un.tile, un.ch0 + un.step * i);
            }
          }
        // What the ring requests ahead.
        std::vector<Chunk> streamed;
        Cursor c;
        for (c.start(s, wid); !c.done(s); c.next(s, wid))
          streamed.emplace_back(c.layer, c.ph, c.u, c.unit.tile, c.chunk());
        streams_match = streams_match && consumed == streamed;
        for (const auto& [l, ph, u, tile, ch] : consumed) {
          taken[{l, ph, tile, ch}]++;
          if (ph == kDt) continue;
          // linear_decode's warp for this chunk: slice ch / cps, residue (ch - slice start) % 4.
          const Unit un = unit_of(s.sh[ph], ph, u);
          const int slice = ch / s.sh[ph].cps;
          wrong_unit += un.slice != slice || un.w != (ch - slice * s.sh[ph].cps) % kResidues;
        }
      }
      CHECK(streams_match);
      CHECK(wrong_unit == 0);
      int64_t missing = 0, repeated = 0, unit_errors = 0;
      for (int l = 0; l < m.n_layer; l++)
        for (int ph = 0; ph < kPhases; ph++) {
          const ProjShape& sh = s.sh[ph];
          for (int tile = 0; tile < sh.tiles; tile++)
            for (int ch = 0; ch < sh.nch; ch++) {
              const auto it = taken.find({l, ph, tile, ch});
              missing += it == taken.end();
              repeated += it != taken.end() && it->second != 1;
            }
          // Every unit once, those without chunks too (their partial sums, zeros, are read).
          for (int u = 0; u < sh.units; u++) {
            const auto it = units.find({l, ph, u});
            unit_errors += it == units.end() || it->second != 1;
          }
        }
      CHECK(taken.size() > 0);
      CHECK(missing == 0);
      CHECK(repeated == 0);
      CHECK(unit_errors == 0);
    }
  }
}
