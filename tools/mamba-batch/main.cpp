// mamba-batch: run a file of generation requests with continuous batching.
//
//   mamba-batch -m MODEL --batch-file IN.jsonl --output OUT.jsonl [--parallel N] [--ordered]
//               [--resume] [--device cpu|cuda] [-t N] [-b N] [sampling defaults: --temp,
//               --top-k, --top-p, --min-p, --typical, --repeat-penalty, --repeat-last-n,
//               --presence-penalty, --frequency-penalty, --logit-bias, -n, -s, --stop,
//               --ignore-eos]
//
// Each input line is one request (src/engine/batch_request.h lists the keys); each output line
// is one result or one error record, written whole with a single write() as soon as it is
// known (--ordered: in input order). SIGINT/SIGTERM stop the run between decode steps: the
// sequences in flight are abandoned (not written), the exit status is 130/143, and --resume
// later runs exactly the requests that have no record yet. See docs/batch.md.
//
// -t sets the CPU threads of both host-side parts: the CPU backend's compute and, on every
// device, the sampling of the batch's next tokens each step (at most 16 threads by default;
// with --device cuda these are the only CPU threads in use).
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "engine/batch_request.h"
#include "engine/scheduler.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

using namespace mamba;
using nlohmann::json;

namespace {

struct Args {
  std::string model = MAMBA_DEFAULT_MODEL, batch_file, output, device = "cpu";
  int parallel = 4, n_threads = 0, batch_size = 512;
  bool ordered = false, resume = false;
  Request defaults;                     // sampling keys a line leaves out
  std::vector<std::string> logit_bias;  // --logit-bias ID(+|-)BIAS
};

// Set by SIGINT/SIGTERM; the scheduler polls it between steps.
std::atomic<bool> g_stop{false};
volatile std::sig_atomic_t g_signal = 0;

void on_signal(int sig) {
  g_signal = sig;
  g_stop.store(true);
}

void install_signals() {
  struct sigaction sa = {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: a write() in progress completes. SA_RESETHAND: a second Ctrl-C kills at once
  // (a line cut short by that is removed by --resume).
  sa.sa_flags = SA_RESTART | SA_RESETHAND;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// The output file, one complete line per write() call.
class Output {
 public:
  explicit Output(const std::string& path) : path_(path) {
    fd_ = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot open ", path, " for writing: ", std::strerror(errno));
  }
  ~Output() { close(fd_); }
  void write_line(std::string line) {
    line.push_back('\n');
    size_t done = 0;
    while (done < line.size()) {
      const ssize_t n = write(fd_, line.data() + done, line.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("cannot write ", path_, ": ", std::strerror(errno));
      done += size_t(n);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// One input line that produces a record.
struct Entry {
  int64_t line_no = 0;    // 1-based line in the batch file
  json id;                // null for records that must not carry an id
  std::string record;     // the finished output line (--ordered buffers it here)
  bool finished = false;  // record holds the line
  bool written = false;   // written, or already in the output (resume)
};

// Writes records as they finish, or in input order with --ordered.
class Emitter {
 public:
  Emitter(Output& out, std::vector<Entry>& entries, bool ordered)
      : out_(out), e_(entries), ordered_(ordered) {}
  void finish(size_t i, std::string record) {
    e_[i].record = std::move(record);
    e_[i].finished = true;
    if (!ordered_) {
      put(i);
      return;
    }
    while (next_ < e_.size() && (e_[next_].written || e_[next_].finished)) {
      if (!e_[next_].written) put(next_);
      next_++;
    }
  }

  size_t n_written() const { return n_written_; }

 private:
  void put(size_t i) {
    out_.write_line(e_[i].record);
    n_written_++;
    e_[i].written = true;
    e_[i].record.clear();
    e_[i].record.shrink_to_fit();
  }
  Output& out_;
  std::vector<Entry>& e_;
  bool ordered_;
  size_t next_ = 0;       // first entry not yet written (--ordered)
  size_t n_written_ = 0;  // records written by this run
};

// done/total, tok/s, ETA on one terminal line.
class Progress {
 public:
  explicit Progress(size_t total) : on_(isatty(2) != 0), total_(total) {}
  void update(size_t done, uint64_t tokens, bool force = false) {
    if (!on_) return;
    const double s = seconds();
    if (!force && s - last_ < 0.2) return;
    last_ = s;
    const double tps = s > 0 ? double(tokens) / s : 0;
    const int width = 24,
              fill = total_ ? int(double(width) * double(done) / double(total_)) : width;
    std::string bar(size_t(fill), '#');
    bar.resize(size_t(width), ' ');
    char eta[32] = "--";
    if (done > 0 && done < total_) {
      const int left = int(s / double(done) * double(total_ - done));
      std::snprintf(eta, sizeof eta, "%dm%02ds", left / 60, left % 60);
    }
    std::fprintf(stderr, "\r[%s] %zu/%zu  %.1f tok/s  ETA %s\x1b[K", bar.c_str(), done, total_, tps,
                 eta);
  }
  void end() {
    if (on_) std::fprintf(stderr, "\n");
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  bool on_;
  size_t total_;
  double last_ = -1;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

int run(Args& a) {
  install_signals();
  if (a.batch_file.empty() || a.output.empty())
    fail("give --batch-file IN.jsonl and --output OUT.jsonl");
  if (a.parallel < 1) fail("--parallel must be >= 1");
  if (a.defaults.n_predict < 0) fail("-n must be >= 0");
  for (const std::string& s : a.logit_bias)
    a.defaults.sampling.logit_bias.push_back(parse_logit_bias(s));
  for (const std::string& s : a.defaults.stop)
    if (s.empty()) fail("--stop: a stop string is empty");

  const auto model = Model::load(a.model);
  for (const std::string& w : model->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const int32_t n_vocab = int32_t(model->config().n_vocab);
  a.defaults.sampling.validate(n_vocab);
  const std::unique_ptr<Tokenizer> tok = tokenizer_from_gguf(model->gguf());

  // Without --resume an existing result file is never overwritten: it may hold hours of work.
  std::ifstream in(a.batch_file, std::ios::binary);
  if (!in) fail("cannot read --batch-file ", a.batch_file);
  BatchDone done;
  if (a.resume) {
    done = recover_batch_output(a.output);
    if (done.cut_bytes)
      std::fprintf(stderr, "warning: %s: removed an unfinished last line (%llu bytes)\n",
                   a.output.c_str(), (unsigned long long)done.cut_bytes);
  } else if (std::ifstream probe(a.output, std::ios::binary | std::ios::ate);
             probe && probe.tellg() > 0) {
    fail(a.output, " already holds results: pass --resume to continue it, or remove it");
  }

  // Every line is read first: the total is known, and malformed lines are reported at once.
  std::vector<Entry> entries;
  std::vector<Request> requests;        // (entries.size()) the request of each entry to run
  std::vector<size_t> to_run;           // entries that go to the scheduler
  std::vector<size_t> errors;           // entries whose record is an error known now
  std::map<std::string, int64_t> seen;  // id.dump() -> line it was first given on
  size_t n_skipped = 0;
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); line_no++) {
    if (is_blank_line(line)) continue;
    Entry e;
    e.line_no = line_no;
    std::string error;
    Request req;
    try {
      BatchLine bl = parse_batch_line(line, line_no, a.defaults, n_vocab);
      e.id = bl.id;
      req = std::move(bl.request);
    } catch (const BatchLineError& err) {
      e.id = err.id;
      error = err.what();
    }
    // A repeated id would make two records that --resume cannot tell apart: the second one
    // is an error record that carries only its line number.
    if (!e.id.is_null()) {
      const auto [it, fresh] = seen.emplace(e.id.dump(), line_no);
      if (!fresh) {
        error = "duplicate id " + e.id.dump() + " (first given on line " +
                std::to_string(it->second) + "); ids must be unique";
        e.id = nullptr;
      }
    }
    if (a.resume && (e.id.is_null() ? done.has_line(line_no) : done.has_id(e.id))) {
      n_skipped++;
      continue;
    }
    entries.push_back(e);
    requests.push_back(std::move(req));
    if (!error.empty()) {
      errors.push_back(entries.size() - 1);
      entries.back().record = std::move(error);  // the message, until it is written
    } else {
      to_run.push_back(entries.size() - 1);
    }
  }
  if (a.resume && n_skipped)
    std::fprintf(stderr, "resume: %zu of %zu requests already done\n", n_skipped,
                 n_skipped + entries.size());

  Output out(a.output);
  Emitter emit(out, entries, a.ordered);
  size_t n_done = 0, n_errors = 0;
  for (size_t i : errors) {
    std::string msg = std::move(entries[i].record);
    std::fprintf(stderr, "line %lld: %s\n", (long long)entries[i].line_no, msg.c_str());
    emit.finish(i, batch_error_line(entries[i].id, entries[i].line_no, msg));
    n_done++;
    n_errors++;
  }
  if (to_run.empty()) {
    std::fprintf(stderr, "done: %zu records (%zu errors)\n", n_done, n_errors);
    return 0;  // every line has its record
  }

  const auto t_setup = std::chrono::steady_clock::now();
  BackendOptions bo;
  bo.device = a.device;
  bo.n_threads = a.n_threads;
  bo.n_slots = std::min<int>(a.parallel, int(to_run.size()));
  const auto backend = make_backend(*model, bo);
  SchedulerOptions so;
  so.n_parallel = bo.n_slots;
  so.prefill_budget = a.batch_size;
  so.eos_id = model->eos_id;
  so.tokenizer = tok.get();
  so.cancel = &g_stop;
  so.n_pick_threads = a.n_threads;
  Scheduler sched(*backend, so);
  for (size_t i : to_run) {
    requests[i].key = i;
    sched.submit(std::move(requests[i]));
  }
  requests.clear();
  // The clock of the summary and of the progress bar starts here: the backend's setup (device
  // context, weights copied to the GPU, buffers) is reported apart from the generation it
  // serves. Decode graphs are captured during generation, on a batch size's second step.
  const double setup_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_setup).count();
  Progress progress(entries.size());

  size_t n_cancelled = 0;
  const ResultFn on_result = [&](Result&& r) {
    const Entry& e = entries[r.key];
    if (r.finish_reason == "cancelled") {
      n_cancelled++;
      return;
    }
    n_done++;
    if (r.finish_reason == "error") {
      n_errors++;
      std::fprintf(stderr, "%sline %lld: %s\n", isatty(2) ? "\r\x1b[K" : "", (long long)e.line_no,
                   r.error.c_str());
      emit.finish(r.key, batch_error_line(e.id, e.line_no, r.error));
    } else {
      emit.finish(r.key, batch_result_line(e.id, r));
    }
  };
  while (sched.step(on_result)) progress.update(n_done, sched.n_generated());
  progress.update(n_done, sched.n_generated(), true);
  progress.end();

  const double secs = progress.seconds();
  if (g_signal != 0) {
    std::fprintf(stderr,
                 "interrupted (%s): %zu of %zu records written, %zu requests abandoned; rerun with "
                 "--resume to finish\n",
                 g_signal == SIGINT ? "SIGINT" : "SIGTERM", emit.n_written(), entries.size(),
                 n_cancelled);
    return 128 + int(g_signal);
  }
  std::fprintf(stderr,
               "done: %zu records (%zu errors), %llu tokens in %.2f s (%.1f tok/s) after "
               "%.2f s of backend setup, largest decode batch %d\n",
               n_done, n_errors, (unsigned long long)sched.n_generated(), secs,
               secs > 0 ? double(sched.n_generated()) / secs : 0.0, setup_s, sched.max_batch());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-batch: run a JSONL file of generation requests with continuous batching"};
  Args a;
  SamplerParams& sp = a.defaults.sampling;
  app.add_option("-m,--model", a.model, "GGUF model file (default: the bundled demo model)");
  app.add_option("--batch-file", a.batch_file, "input: one JSON request per line")->required();
  app.add_option("-o,--output", a.output, "output: one JSON result per line")->required();
  app.add_option("--parallel", a.parallel, "sequences decoded together (default 4)");
  app.add_flag("--ordered", a.ordered, "write results in input order (buffers early ones)");
  app.add_flag("--resume", a.resume, "continue OUT: skip requests that already have a record");
  app.add_option("--device", a.device, "cpu or cuda");
  app.add_option("-t,--threads", a.n_threads,
                 "CPU threads: the CPU backend's and, on any device, those that sample each "
                 "step's tokens (default: all cores; at most 16 sample)");
  app.add_option(
      "-b,--batch-size", a.batch_size,
      "prompt tokens prefilled per step at most (default 512; a longer prompt goes alone)");
  // Defaults for the keys a line leaves out.
  a.defaults.n_predict = 128;
  app.add_option("-n,--n-predict", a.defaults.n_predict, "tokens to generate (default 128)");
  app.add_option("-s,--seed", sp.seed, "random seed for sampling (default 0)");
  app.add_option("--temp", sp.temp, "temperature; 0 = greedy (default)");
  app.add_option("--top-k", sp.top_k, "top-k (default 40; <= 0 = off)");
  app.add_option("--top-p", sp.top_p, "top-p (default 0.95; 1 = off)");
  app.add_option("--min-p", sp.min_p, "min-p (default 0.05; 0 = off)");
  app.add_option("--typical", sp.typical_p, "locally typical sampling p (default 1 = off)");
  app.add_option("--repeat-penalty", sp.repeat_penalty, "repetition penalty (default 1 = off)");
  app.add_option("--repeat-last-n", sp.repeat_last_n, "history for the penalties (default 64)");
  app.add_option("--presence-penalty", sp.presence_penalty, "presence penalty (default 0)");
  app.add_option("--frequency-penalty", sp.frequency_penalty, "frequency penalty (default 0)");
  app.add_option("--logit-bias", a.logit_bias, "ID+BIAS or ID-BIAS (repeatable)");
  app.add_option("--stop", a.defaults.stop, "stop string (repeatable)");
  app.add_flag("--ignore-eos", a.defaults.ignore_eos, "never stop at the end-of-sequence token");
  return tool_main(app, argc, argv, [&] { return run(a); });
}
