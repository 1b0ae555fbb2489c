// Hand-written SVG plot of decode throughput (see svg_plot.h for the layout).
#include "bench/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include "common/error.h"

namespace mamba::bench {

namespace {

// ---- page geometry (pixels) ----
constexpr double kWidth = 1200;
constexpr double kPlotTop = 84;      // top of both plot areas
constexpr double kPlotH = 360;       // height of both plot areas
constexpr double kPlotW = 460;       // width of each plot area
constexpr double kLeftX[2] = {90, 690};  // left edge of each plot area
constexpr double kLegendRow = 22;    // height of one legend row
constexpr int kLegendCols = 3;       // legend entries per row

// Tableau 10: distinct and readable on white.
const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v) {  // coordinates: one decimal is plenty
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", v);
  return b;
}

// Tick labels: 0, 5, 250, 1.5k, 12k, 2M.
std::string si(double v) {
  char b[32];
  const double a = std::fabs(v);
  if (a >= 1e6)
    std::snprintf(b, sizeof b, "%gM", std::round(v / 1e5) / 10);
  else if (a >= 1e3)
    std::snprintf(b, sizeof b, "%gk", std::round(v / 1e2) / 10);
  else
    std::snprintf(b, sizeof b, "%g", std::round(v * 100) / 100);
  return b;
}

// The smallest of 1, 2, 2.5, 5, 10 times a power of ten that is >= v (v > 0).
double nice_step(double v) {
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * p >= v * (1 - 1e-9)) return m * p;
  return 10 * p;
}

// One axis: data range, scale, and where its ticks go.
struct Axis {
  double lo = 0, hi = 1;     // in scale units (log2 or log10 of the value when log)
  int log_base = 0;          // 0 linear, else 2 or 10
  std::vector<double> ticks; // values (not scale units)

  double scaled(double v) const {
    if (log_base == 2) return std::log2(v);
    if (log_base == 10) return std::log10(v);
    return v;
  }
  // 0 at lo, 1 at hi.
  double frac(double v) const { return (scaled(v) - lo) / (hi - lo); }
};

// Linear axis from 0 to a round number above vmax, about 5 ticks; integer ticks if `integer`.
Axis linear_axis(double vmax, bool integer) {
  Axis a;
  if (!(vmax > 0)) {
    a.hi = 1;
    a.ticks = {0};
    return a;
  }
  double step = nice_step(vmax / 5);
  if (integer) step = std::max(1.0, std::round(step));
  a.hi = std::ceil(vmax * 1.04 / step) * step;
  for (double t = 0; t <= a.hi * (1 + 1e-9); t += step) a.ticks.push_back(t);
  return a;
}

// log2 axis over [vmin, vmax] (batch sizes), ticks at powers of two.
Axis log2_axis(double vmin, double vmax) {
  Axis a;
  a.log_base = 2;
  a.lo = std::floor(std::log2(vmin));
  a.hi = std::ceil(std::log2(vmax));
  if (a.hi - a.lo < 1) {
    a.lo -= 1;
    a.hi += 1;
  }
  a.lo -= 0.25;  // a little room so the end points do not sit on the frame
  a.hi += 0.25;
  const int every = a.hi - a.lo > 12 ? 2 : 1;
  for (int e = int(std::ceil(a.lo)); e <= int(std::floor(a.hi)); e++)
    if (e >= 0 && e % every == 0) a.ticks.push_back(std::ldexp(1.0, e));
  return a;
}

// log10 axis over [vmin, vmax] (vmin > 0): decades, with 2x and 5x ticks over a short span.
Axis log10_axis(double vmin, double vmax) {
  Axis a;
  a.log_base = 10;
  a.lo = std::floor(std::log10(vmin));
  a.hi = std::ceil(std::log10(vmax));
  if (a.hi - a.lo < 1) a.hi = a.lo + 1;
  for (int e = int(a.lo); e <= int(a.hi); e++) {
    const double p = std::pow(10.0, e);
    a.ticks.push_back(p);
    if (a.hi - a.lo <= 3 && e < int(a.hi)) {
      a.ticks.push_back(2 * p);
      a.ticks.push_back(5 * p);
    }
  }
  std::sort(a.ticks.begin(), a.ticks.end());
  return a;
}

// Throughput axis: log10 when the values span more than a factor of 10, else linear from 0.
Axis ts_axis(double vmin, double vmax) {
  if (vmin > 0 && vmax / vmin > 10) return log10_axis(vmin, vmax);
  return linear_axis(vmax, false);
}

struct Point {
  double x, y, sd;    // value, mean t/s, stdev
  double roof;        // roofline t/s at this point
  std::string what;   // tooltip
};

struct Series {
  std::string label;
  std::string roof_key;    // model path + device: one roofline per key
  std::string roof_label;  // the model (and device) the roofline belongs to
  const char* color;
  std::vector<Point> by_batch;  // at the smallest depth
  std::vector<Point> by_depth;  // at the smallest batch
};

class Svg {
 public:
  std::string s;
  void text(double x, double y, const std::string& t, const char* anchor = "middle",
            int size = 12, const char* extra = "") {
    s += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" text-anchor=\"" + anchor +
         "\" font-size=\"" + std::to_string(size) + "\"" + extra + ">" + esc(t) + "</text>\n";
  }
  void line(double x1, double y1, double x2, double y2, const char* stroke, double w,
            const char* extra = "") {
    s += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
         num(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + num(w) + "\"" + extra + "/>\n";
  }
};

// Draws one panel: frame, grid, ticks, labels, then every series' roofline and data.
void panel(Svg& g, int which, const std::string& title, const std::string& xlabel,
           const Axis& xa, const Axis& ya, const std::vector<Series>& series, bool by_batch) {
  const double x0 = kLeftX[which], y0 = kPlotTop, w = kPlotW, h = kPlotH;
  auto px = [&](double v) { return x0 + xa.frac(v) * w; };
  auto py = [&](double v) { return y0 + h - ya.frac(v) * h; };

  g.text(x0 + w / 2, y0 - 14, title, "middle", 14, " font-weight=\"bold\"");
  // Grid and tick labels.
  for (double t : ya.ticks) {
    const double y = py(t);
    g.line(x0, y, x0 + w, y, "#e6e6e6", 1);
    g.text(x0 - 8, y + 4, si(t), "end", 11, " fill=\"#444\"");
  }
  for (double t : xa.ticks) {
    const double x = px(t);
    g.line(x, y0, x, y0 + h, "#e6e6e6", 1);
    g.text(x, y0 + h + 18, si(t), "middle", 11, " fill=\"#444\"");
  }
  // Frame with tick marks, as one path.
  std::string d = "M" + num(x0) + " " + num(y0) + " V" + num(y0 + h) + " H" + num(x0 + w);
  for (double t : ya.ticks) d += " M" + num(x0 - 5) + " " + num(py(t)) + " h5";
  for (double t : xa.ticks) d += " M" + num(px(t)) + " " + num(y0 + h) + " v5";
  g.s += "<path d=\"" + d + "\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.2\"/>\n";
  g.text(x0 + w / 2, y0 + h + 42, xlabel, "middle", 13);
  const double yl = y0 + h / 2;
  g.s += "<text x=\"" + num(x0 - 58) + "\" y=\"" + num(yl) +
         "\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 " + num(x0 - 58) +
         " " + num(yl) + ")\">tokens / s" + (ya.log_base ? " (log scale)" : "") + "</text>\n";

  bool any = false;
  std::set<std::string> roofs_drawn;
  for (const Series& sr : series) {
    const std::vector<Point>& pts = by_batch ? sr.by_batch : sr.by_depth;
    if (pts.empty()) continue;
    any = true;
    if (roofs_drawn.insert(sr.roof_key).second) {
      std::string p;
      for (const Point& q : pts) p += num(px(q.x)) + "," + num(py(q.roof)) + " ";
      if (pts.size() == 1) {  // a lone point: show the roofline as a short level
        p = num(px(pts[0].x) - 20) + "," + num(py(pts[0].roof)) + " " + num(px(pts[0].x) + 20) +
            "," + num(py(pts[0].roof));
      }
      g.s += std::string("<polyline points=\"") + p + "\" fill=\"none\" stroke=\"" + sr.color +
             "\" stroke-width=\"1.6\" stroke-dasharray=\"7 4\" opacity=\"0.85\"><title>roofline: " +
             esc(sr.label) + "</title></polyline>\n";
    }
    std::string p;
    for (const Point& q : pts) p += num(px(q.x)) + "," + num(py(q.y)) + " ";
    g.s += std::string("<polyline points=\"") + p + "\" fill=\"none\" stroke=\"" + sr.color +
           "\" stroke-width=\"2.2\" stroke-linejoin=\"round\"/>\n";
    for (const Point& q : pts) {
      const double x = px(q.x);
      if (q.sd > 0) {  // error bar, clipped to the axis on a log scale
        const double lo = ya.log_base ? std::max(q.y - q.sd, q.y * 0.5) : std::max(0.0, q.y - q.sd);
        g.line(x, py(lo), x, py(q.y + q.sd), sr.color, 1.2);
      }
      g.s += "<circle cx=\"" + num(x) + "\" cy=\"" + num(py(q.y)) + "\" r=\"3.6\" fill=\"" +
             sr.color + "\" stroke=\"white\" stroke-width=\"1\"><title>" + esc(q.what) +
             "</title></circle>\n";
    }
  }
  if (!any) g.text(x0 + w / 2, y0 + h / 2, "no tg results", "middle", 14, " fill=\"#888\"");
}

}  // namespace

std::string plot_svg(const std::vector<TestResult>& results) {
  std::vector<const TestResult*> tg;
  for (const TestResult& r : results)
    if (r.is_gen() && r.avg_ts > 0) tg.push_back(&r);

  int b_min = 0, d_min = 0;
  if (!tg.empty()) {
    b_min = (*std::min_element(tg.begin(), tg.end(), [](auto a, auto b) { return a->n_batch < b->n_batch; }))->n_batch;
    d_min = (*std::min_element(tg.begin(), tg.end(), [](auto a, auto b) { return a->n_depth < b->n_depth; }))->n_depth;
  }

  // Which parts of the label vary across the lines (only those are printed).
  std::set<std::string> devices, paths;
  std::set<int> threads, gens;
  for (const TestResult* r : tg) {
    devices.insert(r->device);
    paths.insert(r->model_path);
    threads.insert(r->n_threads);
    gens.insert(r->n_gen);
  }

  std::vector<Series> series;
  std::map<std::string, size_t> index;  // series key -> position
  for (const TestResult* r : tg) {
    const std::string key = r->model_path + "|" + r->device + "|" + std::to_string(r->n_threads) +
                            "|" + std::to_string(r->n_gen);
    if (!index.count(key)) {
      Series s;
      s.label = r->model;
      std::set<std::string> labels;
      for (const TestResult* o : tg) labels.insert(o->model);
      if (labels.size() < paths.size()) s.label += " (" + r->model_path + ")";
      if (devices.size() > 1) s.label += ", " + r->device;
      if (threads.size() > 1 && r->n_threads > 0) s.label += ", " + std::to_string(r->n_threads) + (r->n_threads == 1 ? " thread" : " threads");
      if (gens.size() > 1) s.label += ", tg" + std::to_string(r->n_gen);
      s.roof_key = r->model_path + "|" + r->device;
      s.roof_label = r->model + (devices.size() > 1 ? ", " + r->device : "");
      s.color = kPalette[series.size() % (sizeof kPalette / sizeof kPalette[0])];
      index[key] = series.size();
      series.push_back(s);
    }
    Series& s = series[index[key]];
    char what[160];
    std::snprintf(what, sizeof what, "%s: %.1f ± %.1f t/s (roofline %.1f)", r->test.c_str(),
                  r->avg_ts, r->stddev_ts, r->roofline_ts);
    if (r->n_depth == d_min)
      s.by_batch.push_back({double(r->n_batch), r->avg_ts, r->stddev_ts, r->roofline_ts, what});
    if (r->n_batch == b_min)
      s.by_depth.push_back({double(r->n_depth), r->avg_ts, r->stddev_ts, r->roofline_ts, what});
  }
  for (Series& s : series) {
    auto by_x = [](const Point& a, const Point& b) { return a.x < b.x; };
    std::sort(s.by_batch.begin(), s.by_batch.end(), by_x);
    std::sort(s.by_depth.begin(), s.by_depth.end(), by_x);
  }

  // Axis ranges over data, error bars and rooflines.
  double bx_min = 1, bx_max = 1, by_min = 0, by_max = 0, dx_max = 0, dy_max = 0;
  bool first = true;
  for (const Series& s : series) {
    for (const Point& p : s.by_batch) {
      const double lo = std::min(p.y, p.roof > 0 ? p.roof : p.y), hi = std::max(p.y + p.sd, p.roof);
      if (first) {
        bx_min = bx_max = p.x;
        by_min = lo;
        first = false;
      }
      bx_min = std::min(bx_min, p.x);
      bx_max = std::max(bx_max, p.x);
      by_min = std::min(by_min, lo);
      by_max = std::max(by_max, hi);
    }
    for (const Point& p : s.by_depth) {
      dx_max = std::max(dx_max, p.x);
      dy_max = std::max({dy_max, p.y + p.sd, p.roof});
    }
  }
  const Axis bx = log2_axis(bx_min, bx_max), bya = ts_axis(by_min, by_max);
  const Axis dxa = linear_axis(dx_max, true), dya = linear_axis(dy_max, false);

  std::set<std::string> roof_keys;
  for (const Series& s : series) roof_keys.insert(s.roof_key);
  const size_t n_entries = series.size() + roof_keys.size();
  const int legend_rows = int((n_entries + kLegendCols - 1) / kLegendCols);
  const double legend_top = kPlotTop + kPlotH + 74;
  const double height = legend_top + legend_rows * kLegendRow + 16;

  Svg g;
  g.s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(kWidth) + "\" height=\"" +
        num(height) + "\" viewBox=\"0 0 " + num(kWidth) + " " + num(height) +
        "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  g.s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  g.text(kWidth / 2, 32, "mamba-bench: decode throughput", "middle", 18, " font-weight=\"bold\"");
  panel(g, 0, "tokens/s vs batch size (depth " + std::to_string(d_min) + ")",
        "batch size (sequences decoding together)", bx, bya, series, true);
  panel(g, 1, "tokens/s vs depth (batch " + std::to_string(b_min) + ")",
        "depth (tokens already in the state)", dxa, dya, series, false);

  // Legend: one entry per line, then one per roofline (dashed, in the colour it is drawn in).
  struct Entry {
    std::string label;
    const char* color;
    bool dashed;
  };
  std::vector<Entry> legend;
  std::set<std::string> roofs;
  for (const Series& s : series) {
    legend.push_back({s.label, s.color, false});
    if (roofs.insert(s.roof_key).second)  // the roofline right after its first line
      legend.push_back({"roofline: " + s.roof_label, s.color, true});
  }
  const double col_w = (kWidth - 2 * kLeftX[0]) / kLegendCols;
  for (size_t i = 0; i < legend.size(); i++) {
    const double x = kLeftX[0] + double(i % kLegendCols) * col_w;
    const double y = legend_top + double(i / kLegendCols) * kLegendRow;
    g.line(x, y - 4, x + 28, y - 4, legend[i].color, legend[i].dashed ? 1.6 : 2.6,
           legend[i].dashed ? " stroke-dasharray=\"7 4\"" : "");
    g.text(x + 36, y, legend[i].label, "start", 12);
  }
  g.s += "</svg>\n";
  return g.s;
}

void write_plot(const std::vector<TestResult>& results, const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  if (!f) fail("--plot: cannot open ", path, " for writing");
  f << plot_svg(results);
  f.close();
  if (!f) fail("--plot: failed writing ", path);
}

}  // namespace mamba::bench
