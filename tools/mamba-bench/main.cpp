// mamba-bench: prompt processing (pp) and token generation (tg) speed, llama-bench style.
//
//   mamba-bench -m MODEL [-p 128,512] [-n 128] [-t 1,2] [-r 5] [--device cpu]
//
// ppN: prefill of N random tokens into an empty state, N / seconds.
// tgN: N single-token decode steps from an empty state, N / seconds.
// Each test runs once untimed (warm-up), then -r timed repetitions; the table shows the mean
// and standard deviation of the per-repetition tokens per second (wall clock, steady_clock).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "model/model.h"

using namespace mamba;
using clock_type = std::chrono::steady_clock;

namespace {

std::string model_label(const Model& m) {
  const char* arch = m.config().arch == Arch::Mamba1
                         ? (m.config().dt_b_c_rms ? "falcon-mamba" : "mamba")
                         : "mamba2";
  const double p = double(m.n_params);
  char size[32];
  if (p >= 1e9)
    std::snprintf(size, sizeof size, "%.1fB", p / 1e9);
  else
    std::snprintf(size, sizeof size, "%.0fM", p / 1e6);
  const char* dtype = m.layers.empty() ? "?" : gguf::dtype_name(m.layers[0].in_proj.dtype);
  return std::string(arch) + " " + size + " " + dtype;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t n_vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

// Seconds for one run of the test.
double run_pp(Backend& be, const std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  be.reset_slot(0);
  const auto t0 = clock_type::now();
  be.prefill(0, tokens, false, logits);
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double run_tg(Backend& be, const std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  const int slot[1] = {0};
  be.reset_slot(0);
  const auto t0 = clock_type::now();
  for (const int32_t& id : tokens) be.decode(slot, std::span<const int32_t>(&id, 1), logits);
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-bench: prompt processing and generation speed"};
  std::vector<std::string> models;
  std::vector<int> pp = {512}, tg = {128}, threads;
  int reps = 5;
  std::string device = "cpu";
  app.add_option("-m,--model", models, "GGUF model file(s)")->required();
  app.add_option("-p,--n-prompt", pp, "prompt lengths, comma-separated")->delimiter(',');
  app.add_option("-n,--n-gen", tg, "generation lengths, comma-separated")->delimiter(',');
  app.add_option("-t,--threads", threads, "thread counts, comma-separated")->delimiter(',');
  app.add_option("-r,--repetitions", reps, "timed repetitions per test");
  app.add_option("--device", device, "cpu or cuda");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (threads.empty()) threads.push_back(int(std::max(1u, std::thread::hardware_concurrency())));

  try {
    if (reps < 1) fail("-r must be >= 1");
    std::printf("| model | size | params | backend | threads | test | t/s |\n");
    std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    for (const std::string& path : models) {
      const auto model = Model::load(path);
      for (const std::string& w : model->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      for (int nt : threads) {
        BackendOptions bo;
        bo.device = device;
        bo.n_threads = nt;
        const auto be = make_backend(*model, bo);
        struct Test {
          bool prompt;
          int n;
        };
        std::vector<Test> tests;
        for (int n : pp)
          if (n > 0) tests.push_back({true, n});
        for (int n : tg)
          if (n > 0) tests.push_back({false, n});
        for (const Test& t : tests) {
          const auto tokens = random_tokens(t.n, model->config().n_vocab, uint64_t(t.n));
          auto once = [&] { return t.prompt ? run_pp(*be, tokens) : run_tg(*be, tokens); };
          once();  // warm-up: page in the weights, size the buffers, wake the threads
          std::vector<double> tps;
          for (int r = 0; r < reps; r++) tps.push_back(t.n / once());
          double mean = 0, var = 0;
          for (double v : tps) mean += v / double(tps.size());
          for (double v : tps) var += (v - mean) * (v - mean);
          const double sd = tps.size() > 1 ? std::sqrt(var / double(tps.size() - 1)) : 0.0;
          std::printf("| %s | %.2f MiB | %.2f M | %s | %d | %s%d | %.2f ± %.2f |\n",
                      model_label(*model).c_str(), double(model->weight_bytes) / 1048576.0,
                      double(model->n_params) / 1e6, be->name().c_str(), nt, t.prompt ? "pp" : "tg",
                      t.n, mean, sd);
          std::fflush(stdout);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
