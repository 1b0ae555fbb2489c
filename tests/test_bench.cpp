// mamba-bench: the statistics and decode-traffic accounting against hand-computed numbers, and
// the tool itself run as a process on a tiny random model (every output format, the plot, and
// bad arguments). No timing is asserted: only that the matrix, the fields and the files are
// right and the speeds positive.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/svg_plot.h"
#include "common/error.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

using namespace mamba;
using namespace mamba::bench;
using namespace mamba::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "bench";
const std::string kBench = (fs::path(MAMBA_BIN_DIR) / "mamba-bench").string();

const fs::path kErr = kTmp / "stderr.txt";  // the tool's stderr, read back after each run

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  for (std::string l; std::getline(ss, l);)
    if (!l.empty()) v.push_back(l);
  return v;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \n");
  const size_t b = s.find_last_not_of(" \n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Cells of a markdown table row, trimmed.
std::vector<std::string> md_cells(const std::string& row) {
  std::vector<std::string> cells;
  std::stringstream ss(row);
  std::string c;
  std::getline(ss, c, '|');  // before the first bar
  while (std::getline(ss, c, '|')) cells.push_back(trim(c));
  return cells;
}

// Fields of a CSV line (double-quoted fields may hold commas).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> f(1);
  bool quoted = false;
  for (size_t i = 0; i < line.size(); i++) {
    const char c = line[i];
    if (quoted && c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
      f.back() += '"';
      i++;
    } else if (c == '"') {
      quoted = !quoted;
    } else if (c == ',' && !quoted) {
      f.emplace_back();
    } else {
      f.back() += c;
    }
  }
  return f;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) n++;
  return n;
}

// The shapes the hand counts below are made for.
RandomModelOptions mamba1_tiny() {
  RandomModelOptions o;  // f32, tied, conv bias, no projection bias
  o.arch = Arch::Mamba1;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 301;
  o.d_state = 16;
  o.seed = 5;
  return o;
}

RandomModelOptions mamba2_tiny_untied_f16() {
  RandomModelOptions o;
  o.arch = Arch::Mamba2;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 301;
  o.d_state = 16;
  o.head_dim = 16;
  o.n_groups = 1;
  o.dtype = gguf::DType::F16;
  o.tied = false;
  o.seed = 6;
  return o;
}

std::string write_model(const std::string& name, const RandomModelOptions& o) {
  return test::write_model_file(kTmp, name, o);
}

// The arguments of the tool runs: 2 prompt lengths x 2 depths pp rows, 2 batch sizes x 2
// depths tg rows; tiny copy-bandwidth buffers so the probe takes milliseconds.
const std::string kArgs = " -p 8,16 -n 4 -b 1 -b 2 -d 0,8 -r 2 -t 1 --copy-mib 8";
const std::set<std::string> kTests = {"pp8",      "pp16",      "tg4",      "tg4 x2",
                                      "pp8 @ d8", "pp16 @ d8", "tg4 @ d8", "tg4 x2 @ d8"};

}  // namespace

TEST_CASE("bench: mean and sample standard deviation") {
  const std::vector<double> v = {1, 2, 3, 4};
  const Stats s = mean_stdev(v);
  CHECK(s.mean == doctest::Approx(2.5));
  // sum of squares about the mean = 2.25 + 0.25 + 0.25 + 2.25 = 5; / (n - 1) = 5/3
  CHECK(s.stdev == doctest::Approx(std::sqrt(5.0 / 3.0)));
  const std::vector<double> one = {7};
  CHECK(mean_stdev(one).mean == 7);
  CHECK(mean_stdev(one).stdev == 0);
  CHECK(mean_stdev(std::vector<double>{}).mean == 0);
}

TEST_CASE("bench: test names and list parsing") {
  CHECK(test_name(512, 0, 1, 0) == "pp512");
  CHECK(test_name(0, 128, 1, 0) == "tg128");
  CHECK(test_name(0, 128, 64, 0) == "tg128 x64");
  CHECK(test_name(0, 128, 1, 16384) == "tg128 @ d16384");
  CHECK(test_name(0, 128, 64, 16384) == "tg128 x64 @ d16384");
  CHECK(test_name(512, 0, 1, 4096) == "pp512 @ d4096");
  CHECK(test_name(0, 128, 64, 0, true) == "tg128 x64 greedy");
  CHECK(test_name(512, 0, 1, 0, true) == "pp512");  // only tg steps pick
  CHECK(parse_int_list({"8", "16", "0"}, "-p", 0) == std::vector<int>{8, 16, 0});
  CHECK_THROWS_WITH_AS(parse_int_list({"-1"}, "-p", 0),
                       "-p: '-1' is not a valid value (expected an integer >= 0)", Error);
  CHECK_THROWS_AS(parse_int_list({"0"}, "-b", 1), Error);
  CHECK_THROWS_AS(parse_int_list({"4x"}, "-n", 0), Error);
  CHECK_THROWS_AS(parse_int_list({""}, "-n", 0), Error);
  CHECK_THROWS_AS(parse_int_list({"99999999999"}, "-n", 0), Error);
}

TEST_CASE("bench: decode traffic of a tied f32 Mamba-1, counted by hand") {
  const auto m = Model::load(write_model("m1.gguf", mamba1_tiny()));
  // d_model 32, d_inner 64, d_state 16, dt_rank ceil(32/16) = 2, d_conv 4, 2 layers, f32.
  // Per layer, bytes: attn_norm 32*4 = 128; in_proj 128x32 *4 = 16384; conv_w 64x4 *4 = 1024;
  // conv_b 64*4 = 256; x_proj (2+2*16)x64 *4 = 8704; dt_proj 64x2 *4 = 512; dt_bias 256;
  // A 64x16 *4 = 4096; D 256; out_proj 32x64 *4 = 8192.  Sum 39808, x2 layers = 79616.
  const DecodeTraffic t = decode_traffic(*m);
  CHECK(t.layer_bytes == 79616);
  CHECK(t.norm_bytes == 128);
  CHECK(t.head_bytes == 301 * 32 * 4);  // = token_embd, read once as the head
  CHECK(t.embd_row_bytes == 0);         // tied: no separate embedding rows
  // State: conv 2 layers x 3 x 64 + ssm 2 x 64 x 16 = 384 + 2048 floats.
  CHECK(t.state_bytes == 2432 * 4);
  CHECK(decode_weight_bytes(t, 1) == 118272);
  CHECK(decode_weight_bytes(t, 8) == 118272);
  CHECK(decode_step_bytes(t, 2) == 118272 + 2 * 2 * 9728);
}

TEST_CASE("bench: decode traffic of an untied f16 Mamba-2, counted by hand") {
  const auto m = Model::load(write_model("m2.gguf", mamba2_tiny_untied_f16()));
  // d_inner 64, head_dim 16 -> 4 heads, 1 group, d_state 16: conv_dim 64 + 2*16 = 96,
  // in_proj rows 2*64 + 2*16 + 4 = 164. Per layer: in_proj 164x32 *2 = 10496; conv_w 96x4 *4
  // = 1536; conv_b 384; dt_bias, A, D 4*4 = 16 each; norm 64*4 = 256; attn_norm 128;
  // out_proj 32x64 *2 = 4096. Sum 16944, x2 = 33888.
  const DecodeTraffic t = decode_traffic(*m);
  CHECK(t.layer_bytes == 33888);
  CHECK(t.norm_bytes == 128);
  CHECK(t.head_bytes == 301 * 32 * 2);
  CHECK(t.embd_row_bytes == 32 * 2);  // one f16 row per sequence
  CHECK(t.state_bytes == (2 * 3 * 96 + 2 * 64 * 16) * 4);  // 10496
  CHECK(decode_weight_bytes(t, 1) == 33888 + 128 + 19264 + 64);
  CHECK(decode_weight_bytes(t, 4) == 53280 + 4 * 64);
  CHECK(decode_step_bytes(t, 4) == 53536 + 4 * 2 * 10496);  // 137504

  // Bandwidth and roofline of a tg x4 row at 1000 t/s on a 10 GB/s device.
  TestResult r;
  r.n_gen = 16;
  r.n_batch = 4;
  r.avg_ts = 1000;
  set_traffic(r, t, 10.0);
  CHECK(r.bytes_per_step == 137504);
  CHECK(r.weight_bytes_per_step == 53536);
  CHECK(r.achieved_gbps == doctest::Approx(137504.0 * 250 / 1e9));  // 250 steps/s
  CHECK(r.roofline_ts == doctest::Approx(10e9 / 137504.0 * 4));
  CHECK(r.pct_of_copy == doctest::Approx(100.0 * 1000 / (10e9 / 137504.0 * 4)));
  CHECK(roofline_tps(3000, 2'000'000'000ull, 1) == doctest::Approx(1500));

  TestResult pp;  // prompt rows carry the device bandwidth but no traffic
  pp.n_prompt = 8;
  pp.avg_ts = 500;
  set_traffic(pp, t, 10.0);
  CHECK(pp.copy_gbps == 10.0);
  CHECK(pp.bytes_per_step == 0);
  CHECK(pp.roofline_ts == 0);
}

TEST_CASE("bench: the host copy-bandwidth probe returns a positive figure") {
  CHECK(cpu_copy_bandwidth(size_t(1) << 20, 2) > 0);
  CHECK(device_copy_bandwidth("cpu", size_t(1) << 20, 1) > 0);
  CHECK_THROWS_AS(device_copy_bandwidth("tpu", 1 << 20, 1), Error);
}

TEST_CASE("bench: -o json has the whole matrix with every field") {
  const std::string model = write_model("tool.gguf", mamba1_tiny());
  std::string out, err;
  REQUIRE(run(kBench + " -m " + model + kArgs + " -o json", &out, &err, kErr) == 0);
  const json j = json::parse(out);
  REQUIRE(j.is_array());
  CHECK(j.size() == kTests.size());
  std::set<std::string> names;
  const auto m = Model::load(model);
  const DecodeTraffic t = decode_traffic(*m);
  for (const json& r : j) {
    names.insert(r["test"].get<std::string>());
    CHECK(r["model_path"] == model);
    CHECK(r["arch"] == "mamba");
    CHECK(r["weight_type"] == "F32");
    CHECK(r["backend"] == "cpu");
    CHECK(r["n_threads"] == 1);
    CHECK(r["model_bytes"] == m->weight_bytes);
    CHECK(r["model_params"] == m->n_params);
    CHECK(r["reps"] == 2);
    REQUIRE(r["samples_ts"].size() == 2);
    REQUIRE(r["samples_ns"].size() == 2);
    for (const json& v : r["samples_ts"]) CHECK(v.get<double>() > 0);
    CHECK(r["avg_ts"].get<double>() > 0);
    CHECK(r["avg_ns"].get<double>() > 0);
    CHECK(r["stddev_ts"].get<double>() >= 0);
    CHECK(r["copy_gbps"].get<double>() > 0);
    const bool tg = r["n_gen"].get<int>() > 0;
    if (tg) {
      const int b = r["n_batch"];
      CHECK(r["n_gen"] == 4);
      CHECK(r["n_prompt"] == 0);
      CHECK(r["bytes_per_step"] == decode_step_bytes(t, b));
      CHECK(r["state_bytes"] == m->config().state_bytes());
      CHECK(r["roofline_ts"].get<double>() ==
            doctest::Approx(roofline_tps(r["copy_gbps"], decode_step_bytes(t, b), b)));
      CHECK(r["achieved_gbps"].get<double>() > 0);
    } else {
      CHECK(r["n_batch"] == 1);
      CHECK((r["n_prompt"] == 8 || r["n_prompt"] == 16));
      CHECK(r["bytes_per_step"] == 0);
    }
    // avg_ts is the mean of the samples
    const double mean = (r["samples_ts"][0].get<double>() + r["samples_ts"][1].get<double>()) / 2;
    CHECK(r["avg_ts"].get<double>() == doctest::Approx(mean));
  }
  CHECK(names == kTests);
  // The copy bandwidth goes to stderr, once.
  CHECK(count(err, "copy bandwidth") == 1);
}

TEST_CASE("bench: --greedy times the tg steps of greedy requests and names them so") {
  const std::string model = write_model("tool.gguf", mamba1_tiny());
  std::string out, err;
  const std::string args = " -p 0 -n 3 -b 1,2 -r 1 -t 1 --copy-mib 8 --greedy -o json";
  REQUIRE(run(kBench + " -m " + model + args, &out, &err, kErr) == 0);
  const json j = json::parse(out);
  REQUIRE(j.size() == 2);
  std::set<std::string> names;
  for (const json& r : j) {
    names.insert(r["test"].get<std::string>());
    CHECK(r["avg_ts"].get<double>() > 0);
  }
  CHECK(names == std::set<std::string>{"tg3 greedy", "tg3 x2 greedy"});
}

TEST_CASE("bench: -o csv has a header and one line per test") {
  const std::string model = write_model("tool.gguf", mamba1_tiny());
  std::string out, err;
  REQUIRE(run(kBench + " -m " + model + kArgs + " -o csv", &out, &err, kErr) == 0);
  const std::vector<std::string> ls = lines(out);
  REQUIRE(ls.size() == 1 + kTests.size());
  CHECK(ls[0] == csv_header());
  const std::vector<std::string> head = csv_fields(ls[0]);
  const size_t test_col = size_t(std::find(head.begin(), head.end(), "test") - head.begin());
  const size_t ts_col = size_t(std::find(head.begin(), head.end(), "avg_ts") - head.begin());
  REQUIRE(test_col < head.size());
  REQUIRE(ts_col < head.size());
  std::set<std::string> names;
  for (size_t i = 1; i < ls.size(); i++) {
    const std::vector<std::string> f = csv_fields(ls[i]);
    REQUIRE(f.size() == head.size());
    names.insert(f[test_col]);
    CHECK(std::stod(f[ts_col]) > 0);
  }
  CHECK(names == kTests);
}

TEST_CASE("bench: the markdown table and the SVG plot") {
  const std::string model = write_model("tool.gguf", mamba1_tiny());
  const std::string svg_path = (kTmp / "plot.svg").string();
  fs::remove(svg_path);
  std::string out, err;
  REQUIRE(run(kBench + " -m " + model + kArgs + " --plot " + svg_path, &out, &err, kErr) == 0);
  const std::vector<std::string> ls = lines(out);
  REQUIRE(ls.size() == 2 + kTests.size());
  const std::vector<std::string> head = md_cells(ls[0]);
  REQUIRE(head.size() >= 7);
  CHECK(head[0] == "model");
  CHECK(head[5] == "test");
  CHECK(head[6] == "t/s");
  std::set<std::string> names;
  for (size_t i = 2; i < ls.size(); i++) {
    const std::vector<std::string> c = md_cells(ls[i]);
    REQUIRE(c.size() == head.size());
    names.insert(c[5]);
    CHECK(c[3] == "cpu");
    CHECK(c[4] == "1");
    CHECK(c[6].find(" ± ") != std::string::npos);
    // tg rows have the traffic columns, pp rows leave them blank
    CHECK(c[9].empty() == (c[5].rfind("pp", 0) == 0));
  }
  CHECK(names == kTests);

  const std::string svg = trim(slurp(svg_path));
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.size() > 6);
  CHECK(svg.substr(svg.size() - 6) == "</svg>");
  CHECK(count(svg, "<svg") == 1);
  CHECK(count(svg, "<polyline") >= 2);  // a line and its roofline
  CHECK(count(svg, "<path") == 2);      // the two frames
  // One marker per tg point: batch 1 and 2 at depth 0, depth 0 and 8 at batch 1.
  CHECK(count(svg, "<circle") == 4);
  CHECK(count(svg, "<text") == count(svg, "</text>"));
  CHECK(svg.find("batch size") != std::string::npos);
  CHECK(svg.find("depth") != std::string::npos);
  CHECK(svg.find("roofline") != std::string::npos);
}

TEST_CASE("bench: the SVG of results without tg rows still is a document") {
  TestResult r;
  r.n_prompt = 8;
  r.avg_ts = 10;
  const std::string svg = plot_svg({r});
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("no tg results") != std::string::npos);
  CHECK(trim(svg).substr(trim(svg).size() - 6) == "</svg>");
}

TEST_CASE("bench: bad arguments give one error line and exit 1") {
  const std::string model = write_model("tool.gguf", mamba1_tiny());
  struct Case {
    std::string args;
    std::string expect;  // part of the message
  };
  const std::vector<Case> cases = {
      {" -p -1", "-p: '-1'"},
      {" -b 0", "-b: '0'"},
      {" -n 4,x", "-n: 'x'"},
      {" -d -8", "-d: '-8'"},
      {" -o xml", "unknown output format 'xml'"},
      {" --device tpu", "unknown device 'tpu'"},
      {" -r 0", "-r"},
      {" -p 0 -n 0", "nothing to run"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    std::string out, err;
    CHECK(run(kBench + " -m " + model + " --copy-mib 8" + c.args, &out, &err, kErr) == 1);
    CHECK(out.empty());
    const std::vector<std::string> ls = lines(err);
    REQUIRE(ls.size() == 1);
    CHECK(ls[0].rfind("error: ", 0) == 0);
    CHECK(ls[0].find(c.expect) != std::string::npos);
  }
  std::string out, err;
  CHECK(run(kBench + " -m " + (kTmp / "missing.gguf").string() + " -p 8 -n 0", &out, &err,
            kErr) == 1);
  CHECK(lines(err).size() == 1);
}
