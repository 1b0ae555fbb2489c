// mamba-bench's output formats, printed one result at a time as the tests finish:
//   md    a markdown table (llama-bench's columns, plus the decode-traffic columns: achieved
//         GB/s, % of the measured copy bandwidth, and the roofline t/s; blank for pp rows)
//   csv   one header line, then one line per test with every scalar field; the per-repetition
//         samples as one space-separated field
//   json  an array of objects, one per test, with every field including the raw samples
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "bench/bench.h"

namespace mamba::bench {

class Report {
 public:
  virtual ~Report() = default;
  virtual void begin() {}
  virtual void add(const TestResult& r) = 0;
  virtual void end() {}
};

// format: "md", "csv" or "json". Writes to `out` (flushed after every line, so a long run
// shows its progress). Throws mamba::Error on an unknown format.
std::unique_ptr<Report> make_report(const std::string& format, std::FILE* out);

// The pieces, for tests and other callers.
std::string md_header();
std::string md_row(const TestResult& r);
std::string csv_header();
std::string csv_row(const TestResult& r);
std::string json_object(const TestResult& r);  // one pretty-printed object, no trailing newline

// "1.23 GiB", "493.1 MiB"
std::string format_gib(uint64_t bytes);
// "2.78 B", "129.1 M"
std::string format_params(uint64_t n);

}  // namespace mamba::bench
