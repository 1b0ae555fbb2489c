// mamba-bench --plot: decode (tg) throughput as a self-contained SVG, written by hand.
//
// Two panels side by side:
//   left   t/s against batch size (log2 x axis), at the smallest depth measured
//   right  t/s against depth (linear x axis), at the smallest batch size measured
// One solid line per model / device / thread count / tg length, with ± stdev error bars; the
// roofline of each model on each device (measured copy bandwidth / bytes per decode step x
// batch) dashed in the same colour. A legend below names every line.
#pragma once

#include <string>
#include <vector>

#include "bench/bench.h"

namespace mamba::bench {

// The SVG document ("<svg ...>...</svg>"). pp results are ignored; with no tg results the
// panels say so.
std::string plot_svg(const std::vector<TestResult>& results);

// Writes plot_svg(results) to `path`. Throws mamba::Error when the file cannot be written.
void write_plot(const std::vector<TestResult>& results, const std::string& path);

}  // namespace mamba::bench
