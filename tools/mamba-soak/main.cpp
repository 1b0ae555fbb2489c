// mamba-soak: one very long generation, watched. Decodes N tokens in a single sequence (each
// token sampled from the previous step's logits and fed back) and every --report-every tokens
// prints one JSON line: tokens so far, tok/s over the interval, resident host memory, device
// memory in use, and the range of the logits. A recurrent model's state is constant-size, so
// memory must stay flat, tok/s must hold, and the logits must stay finite for as long as it
// runs. Exits 1 on the first non-finite logit or when memory grew past the first report.
//
//   mamba-soak -m MODEL --device cuda -n 1000000 --report-every 50000
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#ifdef MAMBA_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "backend/backend.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "engine/sampler.h"
#include "model/model.h"

using namespace mamba;

namespace {

uint64_t host_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  uint64_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * uint64_t(sysconf(_SC_PAGESIZE));
}

// Bytes in use on the current device (total - free), or 0 on the CPU.
uint64_t device_used_bytes(const std::string& device) {
#ifdef MAMBA_HAVE_CUDA
  if (device.rfind("cuda", 0) == 0) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return total_b - free_b;
  }
#endif
  (void)device;
  return 0;
}

int run(const std::string& path, const std::string& device, int64_t n_tokens, int64_t every,
        float temp, uint64_t seed, int threads) {
  if (n_tokens < 1 || every < 1) fail("-n and --report-every must be >= 1");
  const auto model = Model::load(path);
  BackendOptions bo;
  bo.device = device;
  bo.n_threads = threads;
  const auto be = make_backend(*model, bo);
  const int32_t V = int32_t(be->config().n_vocab);
  SamplerParams sp;
  sp.temp = temp;
  sp.top_k = 0;
  sp.top_p = 1.0f;
  sp.min_p = 0.0f;
  sp.seed = seed;
  Sampler sampler(sp, V);

  std::vector<float> logits;
  const int32_t first = model->eos_id >= 0 ? model->eos_id : 0;
  be->reset_slot(0);
  be->prefill(0, std::span<const int32_t>(&first, 1), false, logits);
  const int slot[1] = {0};
  using clock = std::chrono::steady_clock;
  auto t_last = clock::now();
  const auto t_start = t_last;
  uint64_t rss0 = 0, dev0 = 0;
  int64_t reports = 0;
  for (int64_t i = 1; i <= n_tokens; i++) {
    const int32_t id = sampler.sample(logits);
    sampler.accept(id);
    be->decode(slot, std::span<const int32_t>(&id, 1), logits);
    float lo = INFINITY, hi = -INFINITY;
    bool finite = true;
    for (int32_t v = 0; v < V; v++) {
      const float x = logits[size_t(v)];
      finite &= std::isfinite(x);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    if (!finite) {
      std::printf("{\"tokens\": %lld, \"error\": \"non-finite logits\"}\n", (long long)i);
      return 1;
    }
    if (i % every == 0 || i == n_tokens) {
      const auto now = clock::now();
      const double secs = std::chrono::duration<double>(now - t_last).count();
      const int64_t in_interval = i % every == 0 ? every : i % every;
      const uint64_t rss = host_rss_bytes(), dev = device_used_bytes(device);
      if (reports++ == 0) rss0 = rss, dev0 = dev;
      std::printf("{\"tokens\": %lld, \"tok_s\": %.1f, \"host_rss_mib\": %.1f, "
                  "\"device_used_mib\": %.1f, \"logit_min\": %.3f, \"logit_max\": %.3f}\n",
                  (long long)i, double(in_interval) / secs, double(rss) / 1048576.0,
                  double(dev) / 1048576.0, lo, hi);
      std::fflush(stdout);
      t_last = now;
      // A few MiB of allocator noise is allowed; growth with the tokens is not.
      if (rss > rss0 + (uint64_t(16) << 20) || dev > dev0 + (uint64_t(16) << 20)) {
        std::printf("{\"tokens\": %lld, \"error\": \"memory grew\"}\n", (long long)i);
        return 1;
      }
    }
  }
  const double total = std::chrono::duration<double>(clock::now() - t_start).count();
  std::fprintf(stderr, "%lld tokens in %.1f s (%.1f tok/s), logits finite throughout\n",
               (long long)n_tokens, total, double(n_tokens) / total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-soak: a very long single-sequence generation, watched for drift"};
  std::string model = MAMBA_DEFAULT_MODEL, device = "cpu";
  int64_t n = 1000000, every = 50000;
  float temp = 1.0f;
  uint64_t seed = 1;
  int threads = 0;
  app.add_option("-m,--model", model, "GGUF model file (default: the bundled demo model)");
  app.add_option("--device", device, "cpu or cuda[:N]");
  app.add_option("-n,--n-predict", n, "tokens to generate");
  app.add_option("--report-every", every, "tokens between report lines");
  app.add_option("--temp", temp, "sampling temperature (0 = greedy)");
  app.add_option("-s,--seed", seed, "sampling seed");
  app.add_option("-t,--threads", threads, "CPU threads");
  return mamba::tool_main(app, argc, argv,
                         [&] { return run(model, device, n, every, temp, seed, threads); });
}
