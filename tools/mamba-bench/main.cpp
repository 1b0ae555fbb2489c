// mamba-bench: prompt processing (pp) and token generation (tg) speed, llama-bench style.
//
//   mamba-bench -m MODEL [-m MODEL2] [-p 512] [-n 128] [-b 1,8,64] [-d 0,16384] [-r 5]
//               [-t 8,16] [--device cpu,cuda] [-o md|csv|json] [--plot FILE.svg]
//
// Every list option takes comma-separated values and/or repeats; the tool runs the product.
// ppP: prefill of P random tokens (t/s = P / s); tgN xB: N decode steps of B sequences
// together (t/s = B * N / s); "@ dD": the state already holds D tokens. Each test runs once
// untimed, then -r times; t/s is the mean ± sample stdev over the repetitions. tg rows also
// show the memory traffic they achieve against the device's measured copy bandwidth (the
// accounting is in src/bench/bench.h and docs/benchmarks.md). The table goes to stdout, the
// copy bandwidth and warnings to stderr.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/svg_plot.h"
#include "common/error.h"
#include "common/tool_main.h"

using namespace mamba;

int main(int argc, char** argv) {
  CLI::App app{"mamba-bench: prompt processing and generation speed"};
  bench::BenchOptions o;
  // List options arrive as strings, split at commas and over repeated flags, so that every
  // bad value gets the same one-line message.
  std::vector<std::string> pp, tg, batch, depth, threads, devices;
  std::string output = "md", plot;
  int copy_mib = 1024;
  app.add_option("-m,--model", o.models, "GGUF model file(s)")->required()->delimiter(',');
  app.add_option("-p,--n-prompt", pp, "prompt lengths (default 512; 0: no pp test)")->delimiter(',');
  app.add_option("-n,--n-gen", tg, "generation lengths (default 128; 0: no tg test)")->delimiter(',');
  app.add_option("-b,--batch-size", batch, "sequences decoding together in tg (default 1)")
      ->delimiter(',');
  app.add_option("-d,--n-depth", depth, "tokens already in the state (default 0)")->delimiter(',');
  app.add_option("-t,--threads", threads, "CPU thread counts (default: all cores)")->delimiter(',');
  app.add_option("--device", devices, "cpu, cuda or cuda:N (default cpu)")->delimiter(',');
  app.add_option("-r,--repetitions", o.reps, "timed repetitions per test (default 5)");
  app.add_option("-o,--output", output, "output format: md, csv or json (default md)");
  app.add_option("--plot", plot, "also draw tg t/s against batch size and depth into this SVG");
  app.add_option("--seed", o.seed, "seed of the random token ids");
  app.add_flag("--greedy", o.greedy,
               "tg steps pick each row's next token greedily, as a batch of greedy requests does "
               "(on a GPU that picks on the device, the logits stay there)");
  app.add_option("--copy-mib", copy_mib, "buffer size of the CPU copy-bandwidth probe (MiB)");
  return tool_main(app, argc, argv, [&] {
    if (!pp.empty()) o.n_prompt = bench::parse_int_list(pp, "-p", 0);
    if (!tg.empty()) o.n_gen = bench::parse_int_list(tg, "-n", 0);
    if (!batch.empty()) o.n_batch = bench::parse_int_list(batch, "-b", 1);
    if (!depth.empty()) o.n_depth = bench::parse_int_list(depth, "-d", 0);
    if (!threads.empty()) o.n_threads = bench::parse_int_list(threads, "-t", 1);
    if (!devices.empty()) o.devices = devices;
    if (copy_mib < 1) fail("--copy-mib must be >= 1");
    o.cpu_copy_bytes = size_t(copy_mib) << 20;
    const auto report = bench::make_report(output, stdout);
    bench::validate(o);
    // Find out now, not after the whole run, that the plot cannot be written.
    if (!plot.empty() && !std::ofstream(plot)) fail("--plot: cannot open ", plot, " for writing");

    std::vector<bench::TestResult> results;
    report->begin();
    bench::run(
        o,
        [&](const bench::TestResult& r) {
          report->add(r);
          results.push_back(r);
        },
        [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
    report->end();
    if (!plot.empty()) {
      bench::write_plot(results, plot);
      std::fprintf(stderr, "plot: %s\n", plot.c_str());
    }
    return 0;
  });
}
