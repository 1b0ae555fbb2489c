// The test matrix, its timing loop, the statistics and the decode-traffic accounting.
// See bench.h for what each test measures and how the bytes are counted.
#include "bench/bench.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <thread>

#include "backend/backend.h"
#include "common/error.h"
#include "model/model.h"
#ifdef MAMBA_HAVE_CUDA
#include "bandwidth.cuh"
#endif

namespace mamba::bench {

using clock_type = std::chrono::steady_clock;

// Depth states are built by prefilling in pieces of this many tokens: the result is the same
// as one long prefill (the state carries over) and the activation buffers stay small.
constexpr int kDepthChunk = 512;
// The CUDA backend holds at most 4096 slots; one is the spare that keeps the depth state.
constexpr int kMaxBatch = 4095;

// ---- options ------------------------------------------------------------------------------

std::vector<int> parse_int_list(const std::vector<std::string>& values, const char* flag,
                                int min) {
  std::vector<int> out;
  for (const std::string& s : values) {
    int v = 0;
    const char* end = s.data() + s.size();
    const auto [p, ec] = std::from_chars(s.data(), end, v);
    if (s.empty() || ec != std::errc() || p != end || v < min)
      fail(flag, ": '", s, "' is not a valid value (expected an integer >= ", min, ")");
    out.push_back(v);
  }
  return out;
}

// "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; anything else throws.
static int device_index(const std::string& device) {
  if (device == "cpu") return -1;
  const bool cuda = device == "cuda" || device.rfind("cuda:", 0) == 0;
#ifndef MAMBA_HAVE_CUDA
  if (cuda) fail("--device ", device, ": the CUDA backend is not available in this build");
#endif
  if (device == "cuda") return 0;
  if (cuda) return parse_int_list({device.substr(5)}, "--device", 0)[0];
  fail("--device: unknown device '", device, "' (expected cpu, cuda or cuda:N)");
}

void validate(const BenchOptions& o) {
  if (o.models.empty()) fail("-m: no model given");
  if (o.reps < 1) fail("-r: repetitions must be >= 1, got ", o.reps);
  const bool any_pp = std::any_of(o.n_prompt.begin(), o.n_prompt.end(), [](int n) { return n > 0; });
  const bool any_tg = std::any_of(o.n_gen.begin(), o.n_gen.end(), [](int n) { return n > 0; });
  if (!any_pp && !any_tg) fail("nothing to run: every -p and -n value is 0");
  if (o.n_batch.empty() || o.n_depth.empty() || o.devices.empty())
    fail("-b, -d and --device need at least one value");
  for (int b : o.n_batch)
    if (b < 1 || b > kMaxBatch) fail("-b: batch size ", b, " is out of range (1..", kMaxBatch, ")");
  for (int d : o.n_depth)
    if (d < 0) fail("-d: depth ", d, " must be >= 0");
  for (int t : o.n_threads)
    if (t < 1) fail("-t: thread count ", t, " must be >= 1");
  for (const std::string& d : o.devices) device_index(d);
  if (o.cpu_copy_bytes < 4096) fail("the copy-bandwidth buffer must be at least 4 KiB");
}

// ---- statistics ---------------------------------------------------------------------------

Stats mean_stdev(std::span<const double> v) {
  Stats s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  if (v.size() < 2) return s;
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.stdev = std::sqrt(ss / double(v.size() - 1));
  return s;
}

// ---- decode traffic -----------------------------------------------------------------------

static uint64_t matrix_bytes(const Matrix& m) {
  if (m.data == nullptr) return 0;  // a tensor this architecture does not have
  return uint64_t(m.rows) * uint64_t(m.cols) * gguf::dtype_size(m.dtype);
}

static uint64_t vec_bytes(const std::vector<float>& v) { return v.size() * sizeof(float); }

DecodeTraffic decode_traffic(const Model& m) {
  DecodeTraffic t;
  for (const LayerWeights& w : m.layers) {
    t.layer_bytes += matrix_bytes(w.in_proj) + matrix_bytes(w.out_proj) +
                     matrix_bytes(w.x_proj) + matrix_bytes(w.dt_proj);
    for (const std::vector<float>* v : {&w.attn_norm, &w.in_proj_bias, &w.conv_w, &w.conv_b,
                                        &w.dt_bias, &w.A, &w.D, &w.out_proj_bias, &w.norm})
      t.layer_bytes += vec_bytes(*v);
  }
  t.norm_bytes = vec_bytes(m.output_norm);
  t.head_bytes = matrix_bytes(m.output);
  t.embd_row_bytes =
      m.tied ? 0 : uint64_t(m.token_embd.cols) * gguf::dtype_size(m.token_embd.dtype);
  t.state_bytes = m.config().state_bytes();
  return t;
}

uint64_t decode_weight_bytes(const DecodeTraffic& t, int n_batch) {
  return t.layer_bytes + t.norm_bytes + t.head_bytes + uint64_t(n_batch) * t.embd_row_bytes;
}

uint64_t decode_step_bytes(const DecodeTraffic& t, int n_batch) {
  return decode_weight_bytes(t, n_batch) + uint64_t(n_batch) * 2 * t.state_bytes;
}

double roofline_tps(double gbps, uint64_t step_bytes, int n_batch) {
  if (step_bytes == 0) return 0;
  return gbps * 1e9 / double(step_bytes) * double(n_batch);
}

void set_traffic(TestResult& r, const DecodeTraffic& t, double copy_gbps) {
  r.copy_gbps = copy_gbps;
  if (!r.is_gen()) return;
  r.weight_bytes_per_step = decode_weight_bytes(t, r.n_batch);
  r.state_bytes = t.state_bytes;
  r.bytes_per_step = decode_step_bytes(t, r.n_batch);
  r.achieved_gbps = double(r.bytes_per_step) * r.avg_ts / double(r.n_batch) / 1e9;
  r.pct_of_copy = copy_gbps > 0 ? 100.0 * r.achieved_gbps / copy_gbps : 0;
  r.roofline_ts = roofline_tps(copy_gbps, r.bytes_per_step, r.n_batch);
}

// ---- copy bandwidth -----------------------------------------------------------------------

double cpu_copy_bandwidth(size_t bytes, int n_threads) {
  n_threads = std::max(1, n_threads);
  std::unique_ptr<uint8_t[]> src(new uint8_t[bytes]), dst(new uint8_t[bytes]);
  // Touch every page first so the timed copies do not include page faults.
  std::memset(src.get(), 1, bytes);
  std::memset(dst.get(), 0, bytes);
  auto copy = [&] {
    std::vector<std::thread> pool;
    const size_t part = bytes / size_t(n_threads);
    const auto t0 = clock_type::now();
    for (int i = 0; i < n_threads; i++) {
      const size_t begin = part * size_t(i);
      const size_t end = i + 1 == n_threads ? bytes : begin + part;
      pool.emplace_back([&, begin, end] { std::memcpy(dst.get() + begin, src.get() + begin, end - begin); });
    }
    for (std::thread& t : pool) t.join();
    return std::chrono::duration<double>(clock_type::now() - t0).count();
  };
  copy();  // warm-up
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i < 3; i++) best = std::min(best, copy());
  return 2.0 * double(bytes) / best / 1e9;
}

double device_copy_bandwidth(const std::string& device, size_t cpu_bytes, int cpu_threads) {
  const int index = device_index(device);
  if (index < 0) return cpu_copy_bandwidth(cpu_bytes, cpu_threads);
#ifdef MAMBA_HAVE_CUDA
  return cuda_copy_bandwidth(index);
#else
  fail("the CUDA backend is not available in this build");
#endif
}

// ---- names --------------------------------------------------------------------------------

std::string test_name(int n_prompt, int n_gen, int n_batch, int n_depth, bool greedy) {
  std::string s = n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
  if (n_prompt == 0 && n_batch > 1) s += " x" + std::to_string(n_batch);
  if (n_depth > 0) s += " @ d" + std::to_string(n_depth);
  if (n_prompt == 0 && greedy) s += " greedy";
  return s;
}

static std::string arch_name(const Model& m) {
  if (m.config().arch == Arch::Mamba2) return "mamba2";
  return m.config().dt_b_c_rms ? "falcon-mamba" : "mamba";
}

static std::string weight_type(const Model& m) {
  if (m.layers.empty()) return "?";
  std::string s = gguf::dtype_name(m.layers[0].in_proj.dtype);
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string model_label(const Model& m) {
  const double p = double(m.n_params);
  char size[32];
  if (p >= 1e9)
    std::snprintf(size, sizeof size, "%.1fB", p / 1e9);
  else if (p >= 1e6)
    std::snprintf(size, sizeof size, "%.0fM", p / 1e6);
  else
    std::snprintf(size, sizeof size, "%.0fK", p / 1e3);
  return arch_name(m) + " " + size + " " + weight_type(m);
}

static std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---- running ------------------------------------------------------------------------------

static std::vector<int32_t> random_tokens(size_t n, int64_t n_vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, int32_t(n_vocab - 1));
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = d(rng);
  return t;
}

// One backend (one model, device and thread count) and the slots the tests use: slots
// [0, max_batch) are the working sequences, slot `spare` keeps the depth state.
struct Bench {
  Bench(Backend& be_, const BenchOptions& o_, int spare_) : be(be_), o(o_), spare(spare_) {}
  Backend& be;
  const BenchOptions& o;
  int spare = 0;
  int depth = 0;               // what the spare slot holds
  std::vector<float> logits;   // reused output buffer

  // Puts the depth state into `slot`.
  void restore(int slot) {
    if (depth == 0)
      be.reset_slot(slot);
    else
      be.copy_slot(spare, slot);
  }

  void make_depth_state(int d) {
    be.reset_slot(spare);
    const std::vector<int32_t> tokens = random_tokens(size_t(d), be.config().n_vocab, o.seed + 1);
    for (int i = 0; i < d; i += kDepthChunk) {
      const size_t n = size_t(std::min(kDepthChunk, d - i));
      be.prefill(spare, std::span<const int32_t>(tokens.data() + i, n), false, logits);
    }
    depth = d;
  }

  // Nanoseconds of one pp run.
  double run_pp(const std::vector<int32_t>& tokens) {
    restore(0);
    const auto t0 = clock_type::now();
    be.prefill(0, tokens, false, logits);
    return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
  }

  // Nanoseconds of one tg run: tokens is (n_gen, n_batch), one row per step. Each step's
  // logits reach the host as the scheduler gets them (decode_view: the backend's own buffer,
  // no second copy into a vector, which at 64 rows of a 50k vocabulary is 13 MB a step).
  // With `greedy`, each step is the scheduler's for a batch of plain greedy requests: where
  // the backend picks on the device, decode_greedy (nothing banned), and only the picked ids
  // reach the host; elsewhere decode_view, as without it (the picks run on the scheduler's
  // threads, which no tg test times).
  double run_tg(const std::vector<int32_t>& tokens, const std::vector<int>& slots, bool greedy) {
    greedy = greedy && be.picks_on_device();
    for (int s : slots) restore(s);
    const size_t b = slots.size();
    const std::vector<int32_t> banned(b, -1);
    const auto t0 = clock_type::now();
    for (size_t i = 0; i < tokens.size(); i += b) {
      const std::span<const int32_t> step(tokens.data() + i, b);
      if (greedy)
        be.decode_greedy(slots, step, banned);
      else
        be.decode_view(slots, step);
    }
    return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
  }
};

static uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  return seed * 0x9E3779B97F4A7C15ull + a * 0xBF58476D1CE4E5B9ull + b * 0x94D049BB133111EBull;
}

void run(const BenchOptions& o, const std::function<void(const TestResult&)>& on_result,
         const std::function<void(const std::string&)>& log) {
  validate(o);
  const int max_batch = *std::max_element(o.n_batch.begin(), o.n_batch.end());
  const int all_cores = int(std::max(1u, std::thread::hardware_concurrency()));
  const std::vector<int> cpu_threads = o.n_threads.empty() ? std::vector<int>{all_cores}
                                                            : o.n_threads;
  std::map<std::string, double> copy_gbps;  // per device, measured at its first use

  for (const std::string& path : o.models) {
    const auto model = Model::load(path);
    for (const std::string& w : model->warnings) log("warning: " + w);
    const DecodeTraffic traffic = decode_traffic(*model);

    for (const std::string& device : o.devices) {
      const bool cpu = device == "cpu";
      if (!copy_gbps.count(device)) {
        const int nt = *std::max_element(cpu_threads.begin(), cpu_threads.end());
        const double gbps = device_copy_bandwidth(device, o.cpu_copy_bytes, nt);
        copy_gbps[device] = gbps;
        char line[200];
        if (cpu)
          std::snprintf(line, sizeof line,
                        "%s: copy bandwidth %.1f GB/s (read + write; %d threads, %.0f MiB buffers)",
                        device.c_str(), gbps, nt, double(o.cpu_copy_bytes) / 1048576.0);
        else
          std::snprintf(line, sizeof line,
                        "%s: copy bandwidth %.1f GB/s (read + write; device-to-device copies of 1024 MiB)",
                        device.c_str(), gbps);
        log(line);
      }
      // Threads matter on the CPU only: another device runs each test once.
      for (int nt : cpu ? cpu_threads : std::vector<int>{0}) {
        BackendOptions bo;
        bo.device = device;
        bo.n_threads = nt;
        bo.n_slots = max_batch + 1;
        const auto be = make_backend(*model, bo);
        Bench b(*be, o, max_batch);

        TestResult base;
        base.model_path = path;
        base.model = model_label(*model);
        base.arch = arch_name(*model);
        base.weight_type = weight_type(*model);
        base.model_bytes = model->weight_bytes;
        base.model_params = model->n_params;
        base.backend = be->name();
        base.device = device;
        base.n_threads = nt;

        auto measure = [&](TestResult r, const std::function<double()>& once, double tokens) {
          r.test = test_name(r.n_prompt, r.n_gen, r.n_batch, r.n_depth, o.greedy);
          once();  // warm-up
          for (int i = 0; i < o.reps; i++) {
            const double ns = once();
            r.samples_ns.push_back(ns);
            r.samples_ts.push_back(tokens / (ns * 1e-9));
          }
          const Stats ns = mean_stdev(r.samples_ns), ts = mean_stdev(r.samples_ts);
          r.avg_ns = ns.mean;
          r.stddev_ns = ns.stdev;
          r.avg_ts = ts.mean;
          r.stddev_ts = ts.stdev;
          set_traffic(r, traffic, copy_gbps[device]);
          r.test_time = utc_now();
          on_result(r);
        };

        for (int d : o.n_depth) {
          b.make_depth_state(d);
          for (int p : o.n_prompt) {
            if (p <= 0) continue;
            TestResult r = base;
            r.n_prompt = p;
            r.n_depth = d;
            const auto tokens = random_tokens(size_t(p), model->config().n_vocab, mix_seed(o.seed, 1, uint64_t(p)));
            measure(r, [&] { return b.run_pp(tokens); }, double(p));
          }
          for (int n : o.n_gen) {
            if (n <= 0) continue;
            for (int nb : o.n_batch) {
              TestResult r = base;
              r.n_gen = n;
              r.n_batch = nb;
              r.n_depth = d;
              std::vector<int> slots(static_cast<size_t>(nb));
              for (int i = 0; i < nb; i++) slots[size_t(i)] = i;
              const auto tokens = random_tokens(size_t(n) * size_t(nb), model->config().n_vocab,
                                                mix_seed(o.seed, 2 + uint64_t(nb), uint64_t(n)));
              measure(r, [&] { return b.run_tg(tokens, slots, o.greedy); },
                      double(n) * double(nb));
            }
          }
        }
      }
    }
  }
}

}  // namespace mamba::bench
