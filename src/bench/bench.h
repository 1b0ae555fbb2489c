// The benchmark behind mamba-bench: a llama-bench-style matrix of prompt-processing (pp) and
// token-generation (tg) tests, their statistics, and the memory-traffic accounting that turns a
// decode speed into a bandwidth and a fraction of the device's roofline.
//
// Tests (each list option multiplies the matrix; the tool runs the full product):
//   ppP [@ dD]        prefill of P random tokens into one sequence whose state already holds
//                     D tokens (D = 0: a zero state). t/s = P / seconds. Prefill is one
//                     sequence at a time in the Backend API, so prefilling B sequences one
//                     after another would give the same t/s: pp tests run once, not per -b.
//   tgN [xB] [@ dD]   N decode steps of B sequences together (one Backend::decode_view call of
//                     B rows per step: every row's logits reach the host, as a sampling
//                     scheduler gets them), each sequence starting from the same depth-D state.
//                     t/s = B * N / seconds.
//   ... greedy        (--greedy) the same steps as a batch of plain greedy requests runs them:
//                     Backend::decode_greedy where the backend picks on the device (then only
//                     the picked ids reach the host), else as without --greedy.
// Each test runs once untimed (warm-up: pages in the weights, sizes buffers, captures CUDA
// graphs), then `reps` timed repetitions, each from the same starting state. The depth state
// is made once per depth (untimed prefill of D random tokens into a spare slot) and copied
// into the working slots before every run with Backend::copy_slot.
//
// Decode traffic (what one tg step must move through memory at the least), per step of B rows:
//   weights:  every tensor of every layer, once (matrices in their stored dtype, the small
//             vectors as the float32 the backends keep them in)
//             + the final norm
//             + the output head (n_vocab, d_model) in its stored dtype
//             + the token embedding: B rows of d_model when the head is a separate tensor;
//               nothing more when tied (the head read already reads the whole matrix)
//   state:    B * 2 * state_bytes (each sequence's conv + SSM state read, then written back)
// achieved bandwidth = bytes per step * steps per second; the roofline is the device's measured
// copy bandwidth (bytes read + bytes written per second) divided by the bytes per step, times
// B tokens per step.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace mamba {

class Model;

namespace bench {

// ---- options ------------------------------------------------------------------------------

struct BenchOptions {
  std::vector<std::string> models;          // GGUF paths (-m)
  std::vector<int> n_prompt = {512};        // pp lengths (-p); 0 = no pp test
  std::vector<int> n_gen = {128};           // tg lengths (-n); 0 = no tg test
  std::vector<int> n_batch = {1};           // sequences decoding together (-b), >= 1
  std::vector<int> n_depth = {0};           // tokens in the state before timing (-d)
  std::vector<std::string> devices = {"cpu"};  // "cpu", "cuda", "cuda:N" (--device)
  std::vector<int> n_threads;               // CPU threads (-t); empty = all cores
  int reps = 5;                             // timed repetitions per test (-r)
  uint64_t seed = 42;                       // random token ids
  bool greedy = false;                      // tg steps pick greedily (--greedy)
  size_t cpu_copy_bytes = size_t(1) << 30;  // buffer size of the CPU copy-bandwidth probe
};

// Parses one list option's values ("8,16" and repeated flags arrive as separate strings
// already split at commas). Throws mamba::Error naming `flag` on a non-integer or a value
// below `min`, e.g. "-p: '-1' is not a valid value (expected an integer >= 0)".
std::vector<int> parse_int_list(const std::vector<std::string>& values, const char* flag,
                                int min);

// Throws mamba::Error when the options cannot run (no model, nothing to test, bad device
// name, ...).
void validate(const BenchOptions& o);

// ---- statistics ---------------------------------------------------------------------------

struct Stats {
  double mean = 0;
  double stdev = 0;  // sample standard deviation (n - 1); 0 for fewer than 2 values
};
Stats mean_stdev(std::span<const double> v);

// ---- decode traffic -----------------------------------------------------------------------

// Bytes that one decode step reads, split as in the header comment.
struct DecodeTraffic {
  uint64_t layer_bytes = 0;     // all tensors of all layers
  uint64_t norm_bytes = 0;      // final norm (output_norm), float32
  uint64_t head_bytes = 0;      // output head (n_vocab, d_model), stored dtype
  uint64_t embd_row_bytes = 0;  // one token_embd row; 0 when tied (the head covers it)
  uint64_t state_bytes = 0;     // one sequence's recurrent state (conv + SSM, float32)
};
DecodeTraffic decode_traffic(const Model& m);

// Weight bytes read by one decode step of `n_batch` rows.
uint64_t decode_weight_bytes(const DecodeTraffic& t, int n_batch);
// Weight bytes + n_batch * 2 * state_bytes.
uint64_t decode_step_bytes(const DecodeTraffic& t, int n_batch);
// Tokens per second when one step of n_batch rows moves `step_bytes` at `gbps` (GB/s, 1e9).
double roofline_tps(double gbps, uint64_t step_bytes, int n_batch);

// ---- copy bandwidth -----------------------------------------------------------------------

// Memory copy bandwidth on the host: `n_threads` threads each memcpy a slice of a `bytes`
// buffer into another; best of 3 timed copies after one untimed one. Counts bytes read +
// bytes written (2 * bytes per copy). GB/s (1e9 bytes).
double cpu_copy_bandwidth(size_t bytes, int n_threads);
// The device's copy bandwidth: the host probe for "cpu", mamba::cuda_copy_bandwidth for
// "cuda[:N]" (throws when the CUDA backend is not built in).
double device_copy_bandwidth(const std::string& device, size_t cpu_bytes, int cpu_threads);

// ---- results ------------------------------------------------------------------------------

struct TestResult {
  // ---- what ran ----
  std::string model_path;   // as given with -m
  std::string model;        // "mamba2 2.7B F16" (architecture, size, matrix dtype)
  std::string arch;         // "mamba" | "mamba2" | "falcon-mamba"
  std::string weight_type;  // dtype of the layer matrices: "F32" | "F16" | "BF16"
  uint64_t model_bytes = 0;   // tensor data in the file
  uint64_t model_params = 0;  // elements over all tensors
  std::string backend;        // Backend::name(): "cpu" | "cuda"
  std::string device;         // as given with --device
  int n_threads = 0;          // CPU threads; 0 on other devices (not used there)
  int n_prompt = 0;           // pp tokens (0 for tg tests)
  int n_gen = 0;              // tg steps (0 for pp tests)
  int n_batch = 1;            // sequences per decode step (1 for pp tests)
  int n_depth = 0;            // tokens in the state before the timed part
  std::string test;           // "pp512", "tg128 x64 @ d16384"
  std::string test_time;      // UTC, ISO 8601, when the test finished
  // ---- timings (one entry per timed repetition) ----
  std::vector<double> samples_ns;  // wall time of each repetition
  std::vector<double> samples_ts;  // tokens per second of each repetition
  double avg_ns = 0, stddev_ns = 0;
  double avg_ts = 0, stddev_ts = 0;  // mean and sample stdev of samples_ts (llama-bench's)
  // ---- decode traffic (tg tests; zero for pp) ----
  double copy_gbps = 0;            // the device's measured copy bandwidth (every row)
  uint64_t weight_bytes_per_step = 0;
  uint64_t state_bytes = 0;        // per sequence
  uint64_t bytes_per_step = 0;     // weights + n_batch * 2 * state_bytes
  double achieved_gbps = 0;        // bytes_per_step * avg_ts / n_batch / 1e9
  double pct_of_copy = 0;          // achieved_gbps / copy_gbps * 100
  double roofline_ts = 0;          // copy_gbps * 1e9 / bytes_per_step * n_batch

  bool is_gen() const { return n_gen > 0; }
};

// "pp512", "tg128", "tg128 x64", "tg128 @ d16384", "pp512 @ d4096", "tg128 x64 @ d16384"
std::string test_name(int n_prompt, int n_gen, int n_batch, int n_depth, bool greedy = false);

// "mamba 1.4B F16"
std::string model_label(const Model& m);

// Fills the traffic fields of a tg result from its timings (avg_ts) and the traffic counts.
void set_traffic(TestResult& r, const DecodeTraffic& t, double copy_gbps);

// Runs the whole matrix: for each model, device, thread count (CPU only), depth: the pp tests,
// then the tg tests. Calls on_result after each test and `log` with progress lines (the
// measured copy bandwidth of each device, once). Throws mamba::Error on the first failure.
void run(const BenchOptions& o, const std::function<void(const TestResult&)>& on_result,
         const std::function<void(const std::string&)>& log);

}  // namespace bench
}  // namespace mamba
