// Markdown, CSV and JSON output of benchmark results (see report.h).
#include "bench/report.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mamba::bench {

using nlohmann::json;

static std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string format_gib(uint64_t bytes) {
  const double gib = double(bytes) / double(1ull << 30);
  if (gib >= 1.0) return fmt("%.2f GiB", gib);
  return fmt("%.1f MiB", double(bytes) / double(1ull << 20));
}

std::string format_params(uint64_t n) {
  if (n >= 1000000000ull) return fmt("%.2f B", double(n) / 1e9);
  if (n >= 1000000ull) return fmt("%.1f M", double(n) / 1e6);
  return fmt("%.1f K", double(n) / 1e3);
}

// ---- markdown -----------------------------------------------------------------------------

// Column widths (the table is valid markdown at any width; these only line the rows up).
struct Col {
  const char* title;
  int width;
  bool right;  // right-aligned (numbers)
};
static const Col kCols[] = {
    {"model", 24, false},   {"size", 10, true},    {"params", 9, true},  {"backend", 7, false},
    {"threads", 7, true},   {"test", 20, true},    {"t/s", 20, true},    {"GB/s", 9, true},
    {"% copy bw", 9, true}, {"roofline t/s", 12, true},
};
constexpr size_t kNCols = sizeof kCols / sizeof kCols[0];

static std::string md_line(const std::string (&cells)[kNCols]) {
  std::string s = "|";
  for (size_t i = 0; i < kNCols; i++) {
    const std::string& c = cells[i];
    const size_t pad = c.size() < size_t(kCols[i].width) ? size_t(kCols[i].width) - c.size() : 0;
    s += ' ';
    if (kCols[i].right) s.append(pad, ' ');
    s += c;
    if (!kCols[i].right) s.append(pad, ' ');
    s += " |";
  }
  return s;
}

std::string md_header() {
  std::string title[kNCols], rule[kNCols];
  for (size_t i = 0; i < kNCols; i++) {
    title[i] = kCols[i].title;
    rule[i] = std::string(size_t(kCols[i].width) - (kCols[i].right ? 1 : 0), '-');
    if (kCols[i].right) rule[i] += ':';
  }
  return md_line(title) + "\n" + md_line(rule);
}

std::string md_row(const TestResult& r) {
  std::string c[kNCols];
  c[0] = r.model;
  c[1] = format_gib(r.model_bytes);
  c[2] = format_params(r.model_params);
  c[3] = r.backend;
  c[4] = r.n_threads > 0 ? std::to_string(r.n_threads) : "-";
  c[5] = r.test;
  c[6] = fmt("%.2f", r.avg_ts) + " ± " + fmt("%.2f", r.stddev_ts);
  if (r.is_gen()) {
    c[7] = fmt("%.1f", r.achieved_gbps);
    c[8] = fmt("%.1f%%", r.pct_of_copy);
    c[9] = fmt("%.1f", r.roofline_ts);
  }
  return md_line(c);
}

// ---- csv ----------------------------------------------------------------------------------

static std::string csv_quote(const std::string& s) {
  std::string q = "\"";
  for (char ch : s) {
    if (ch == '"') q += '"';
    q += ch;
  }
  return q + "\"";
}

static std::string joined(const std::vector<double>& v, const char* f) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) s += (i ? " " : "") + fmt(f, v[i]);
  return s;
}

std::string csv_header() {
  return "model_path,model,arch,weight_type,model_bytes,model_params,backend,device,n_threads,"
         "n_prompt,n_gen,n_batch,n_depth,test,reps,avg_ns,stddev_ns,avg_ts,stddev_ts,copy_gbps,"
         "weight_bytes_per_step,state_bytes,bytes_per_step,achieved_gbps,pct_of_copy,"
         "roofline_ts,test_time,samples_ns,samples_ts";
}

std::string csv_row(const TestResult& r) {
  std::string s;
  auto add = [&](const std::string& v) { s += (s.empty() ? "" : ",") + v; };
  auto num = [&](double v) { add(fmt("%.6g", v)); };
  auto uint = [&](uint64_t v) { add(std::to_string(v)); };
  add(csv_quote(r.model_path));
  add(csv_quote(r.model));
  add(csv_quote(r.arch));
  add(csv_quote(r.weight_type));
  uint(r.model_bytes);
  uint(r.model_params);
  add(csv_quote(r.backend));
  add(csv_quote(r.device));
  add(std::to_string(r.n_threads));
  add(std::to_string(r.n_prompt));
  add(std::to_string(r.n_gen));
  add(std::to_string(r.n_batch));
  add(std::to_string(r.n_depth));
  add(csv_quote(r.test));
  add(std::to_string(r.samples_ns.size()));
  add(fmt("%.0f", r.avg_ns));
  add(fmt("%.0f", r.stddev_ns));
  num(r.avg_ts);
  num(r.stddev_ts);
  num(r.copy_gbps);
  uint(r.weight_bytes_per_step);
  uint(r.state_bytes);
  uint(r.bytes_per_step);
  num(r.achieved_gbps);
  num(r.pct_of_copy);
  num(r.roofline_ts);
  add(csv_quote(r.test_time));
  add(csv_quote(joined(r.samples_ns, "%.0f")));
  add(csv_quote(joined(r.samples_ts, "%.6g")));
  return s;
}

// ---- json ---------------------------------------------------------------------------------

std::string json_object(const TestResult& r) {
  json j = {
      {"model_path", r.model_path},
      {"model", r.model},
      {"arch", r.arch},
      {"weight_type", r.weight_type},
      {"model_bytes", r.model_bytes},
      {"model_params", r.model_params},
      {"backend", r.backend},
      {"device", r.device},
      {"n_threads", r.n_threads},
      {"n_prompt", r.n_prompt},
      {"n_gen", r.n_gen},
      {"n_batch", r.n_batch},
      {"n_depth", r.n_depth},
      {"test", r.test},
      {"reps", r.samples_ns.size()},
      {"avg_ns", r.avg_ns},
      {"stddev_ns", r.stddev_ns},
      {"avg_ts", r.avg_ts},
      {"stddev_ts", r.stddev_ts},
      {"samples_ns", r.samples_ns},
      {"samples_ts", r.samples_ts},
      {"copy_gbps", r.copy_gbps},
      {"weight_bytes_per_step", r.weight_bytes_per_step},
      {"state_bytes", r.state_bytes},
      {"bytes_per_step", r.bytes_per_step},
      {"achieved_gbps", r.achieved_gbps},
      {"pct_of_copy", r.pct_of_copy},
      {"roofline_ts", r.roofline_ts},
      {"test_time", r.test_time},
      {"version", MAMBA_VERSION},
  };
  return j.dump(2);
}

// ---- streaming printers -------------------------------------------------------------------

namespace {

class MdReport : public Report {
 public:
  explicit MdReport(std::FILE* out) : out_(out) {}
  void begin() override { put(md_header()); }
  void add(const TestResult& r) override { put(md_row(r)); }

 private:
  void put(const std::string& s) {
    std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }
  std::FILE* out_;
};

class CsvReport : public Report {
 public:
  explicit CsvReport(std::FILE* out) : out_(out) {}
  void begin() override { put(csv_header()); }
  void add(const TestResult& r) override { put(csv_row(r)); }

 private:
  void put(const std::string& s) {
    std::fprintf(out_, "%s\n", s.c_str());
    std::fflush(out_);
  }
  std::FILE* out_;
};

class JsonReport : public Report {
 public:
  explicit JsonReport(std::FILE* out) : out_(out) {}
  void begin() override { std::fputs("[\n", out_); }
  void add(const TestResult& r) override {
    std::fprintf(out_, "%s%s", n_++ ? ",\n" : "", json_object(r).c_str());
    std::fflush(out_);
  }
  void end() override {
    std::fputs("\n]\n", out_);
    std::fflush(out_);
  }

 private:
  std::FILE* out_;
  size_t n_ = 0;  // objects written so far
};

}  // namespace

std::unique_ptr<Report> make_report(const std::string& format, std::FILE* out) {
  if (format == "md") return std::make_unique<MdReport>(out);
  if (format == "csv") return std::make_unique<CsvReport>(out);
  if (format == "json") return std::make_unique<JsonReport>(out);
  fail("-o: unknown output format '", format, "' (expected md, csv or json)");
}

}  // namespace mamba::bench
