// mamba-batch as a process, the same cases on every device: malformed lines, --ordered,
// batch invariance (64 at once against each alone), and SIGTERM / SIGKILL then --resume.
// test_batch.cpp runs them on the CPU backend, tests/cuda/test_cuda_batch.cpp on the GPU.
#pragma once

#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model/random_model.h"
#include "test_util.h"

namespace mamba::test {

namespace fs = std::filesystem;
using nlohmann::json;

// Where a device's runs keep their files (each device its own folder, so that the CPU and
// GPU tests can run at once), and the device mamba-batch is told to use.
struct ToolEnv {
  std::string device;  // "cpu" or "cuda"
  fs::path tmp;
};

inline std::string batch_binary() { return (fs::path(MAMBA_BIN_DIR) / "mamba-batch").string(); }

inline std::string write_model(const ToolEnv& env, const std::string& name,
                               const RandomModelOptions& o) {
  return write_model_file(env.tmp, name, o);
}

inline RandomModelOptions small(Arch arch, uint64_t seed) {
  RandomModelOptions o;
  o.arch = arch;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 301;
  o.seed = seed;
  return o;
}

// A prompt of n ids, different for each i.
inline std::vector<int32_t> prompt_of(int n, int i, int32_t n_vocab) {
  std::vector<int32_t> p;
  for (int t = 0; t < n; t++) p.push_back(int32_t((i * 131 + t * 17 + 3) % n_vocab));
  return p;
}

inline std::string id_of(const char* prefix, int i) {
  std::string s = prefix;
  s.append(std::to_string(i));
  return s;
}

struct Child {
  pid_t pid = -1;
  fs::path err;  // its stderr
};

// stdout dropped (the records go to --output), stderr to env.tmp/<tag>.stderr; a hang ends in
// SIGALRM after 120 s.
inline Child start(const ToolEnv& env, const std::vector<std::string>& argv,
                   const std::string& tag) {
  Child c;
  c.err = env.tmp / (tag + ".stderr");
  c.pid = spawn(argv, "/dev/null", c.err.string(), 120);
  return c;
}

// Exit code, or 128 + signal.
inline int wait_for(const Child& c) { return exit_status(wait_child(c.pid)); }

// mamba-batch with args, on env's device.
inline int run_batch(const ToolEnv& env, std::vector<std::string> args, const std::string& tag,
                     std::string* err = nullptr) {
  args.insert(args.begin(), batch_binary());
  args.insert(args.end(), {"--device", env.device});
  const Child c = start(env, args, tag);
  const int rc = wait_for(c);
  if (err) *err = slurp(c.err);
  return rc;
}

inline void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  for (const std::string& l : lines) f << l << "\n";
}

// The output file's lines; every one must be complete (the file ends with '\n').
inline std::vector<json> read_records(const fs::path& p) {
  const std::string s = slurp(p);
  REQUIRE((s.empty() || s.back() == '\n'));
  std::vector<json> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(json::parse(line));
  return out;
}

// A record without its timings, as text: what must be identical between runs.
inline std::string strip(json j) {
  j.erase("timings");
  return j.dump();
}

// Malformed lines give error records and the rest complete; --ordered keeps input order.
inline void malformed_lines(const ToolEnv& env) {
  const std::string model = write_model(env, "tool.gguf", small(Arch::Mamba1, 21));
  const fs::path in = env.tmp / "mixed.jsonl", out = env.tmp / "mixed.out.jsonl";
  // n_predict falls with the line, so with 4 in parallel the later lines finish first.
  std::vector<std::string> lines;
  for (int i = 0; i < 8; i++)
    lines.push_back(json({{"id", id_of("r", i)},
                          {"prompt_ids", prompt_of(3 + i, i, 301)},
                          {"n_predict", 40 - 5 * i}})
                        .dump());
  lines.insert(lines.begin() + 2, R"({"id": "bad-key", "prompt_ids": [1], "temprature": 1})");
  lines.insert(lines.begin() + 5, "{not json");
  lines.insert(lines.begin() + 6, "");  // blank lines are skipped, and still counted
  lines.insert(lines.begin() + 7, R"({"id": "r1", "prompt_ids": [2]})");  // a repeated id
  lines.push_back(R"({"prompt_ids": [1, 301]})");                         // id out of range
  write_lines(in, lines);

  std::map<std::string, std::string> unordered;  // id (or line) -> record without timings
  std::vector<std::string> order[2];             // ids in the order written
  for (const bool ordered : {false, true}) {
    INFO("ordered ", ordered);
    fs::remove(out);
    std::vector<std::string> args = {"-m",       model,        "--batch-file", in.string(),
                                     "--output", out.string(), "--parallel",   "4",
                                     "-t",       "1"};
    if (ordered) args.push_back("--ordered");
    std::string err;
    REQUIRE(run_batch(env, args, "mixed", &err) == 0);
    CHECK(err.find("line 3: unknown key \"temprature\"") != std::string::npos);
    const std::vector<json> recs = read_records(out);
    REQUIRE(recs.size() == 12);
    int n_err = 0;
    for (const json& r : recs) {
      const std::string key = r.contains("id") ? r["id"].dump() : "line " + r["line"].dump();
      order[ordered].push_back(key);
      if (r.contains("error")) {
        n_err++;
        CHECK(r["line"].is_number_integer());
      } else {
        CHECK(r["ids"].size() == r["n_predict"]);
        CHECK(r["finish_reason"] == "length");
        CHECK(r["timings"]["decode_ms"].get<double>() >= 0);
      }
      if (ordered)
        CHECK(unordered.at(key) == strip(r));  // the same records, only the order differs
      else
        unordered[key] = strip(r);
    }
    CHECK(n_err == 4);
  }
  const json e_key = json::parse(unordered.at("\"bad-key\""));
  CHECK(e_key["line"] == 3);
  CHECK(e_key["error"].get<std::string>().find("temprature") != std::string::npos);
  CHECK(json::parse(unordered.at("line 6"))["error"].get<std::string>().find("not valid JSON") ==
        0);
  CHECK(json::parse(unordered.at("line 8"))["error"].get<std::string>().find(
            "duplicate id \"r1\"") == 0);
  const json e_vocab = json::parse(unordered.at("13"));  // no id: the line number
  CHECK(e_vocab["error"].get<std::string>().find("\"prompt_ids\"") == 0);
  CHECK(json::parse(unordered.at("\"r7\""))["n_predict"] == 5);

  // --ordered writes input order; without it the short late requests come first.
  const std::vector<std::string> input_order = {"\"r0\"", "\"r1\"", "\"bad-key\"", "\"r2\"",
                                                "\"r3\"", "line 6", "line 8",      "\"r4\"",
                                                "\"r5\"", "\"r6\"", "\"r7\"",      "13"};
  CHECK(order[1] == input_order);
  CHECK(order[0] != input_order);

  // An existing output is not overwritten without --resume.
  std::string err;
  CHECK(run_batch(env, {"-m", model, "--batch-file", in.string(), "--output", out.string()},
                  "exists", &err) == 1);
  CHECK(err.find("pass --resume") != std::string::npos);
  CHECK(read_records(out).size() == 12);
}

// Batch invariance: 64 sequences in one batch give the records each gives alone.
inline void invariance(const ToolEnv& env) {
  RandomModelOptions o = small(Arch::Mamba2, 31);
  o.dtype = gguf::DType::F16;  // 16-bit weights take the widening path for more than 4 rows
  o.n_vocab = 517;
  const std::string model = write_model(env, "invariance.gguf", o);
  const fs::path in = env.tmp / "inv.jsonl";
  std::vector<std::string> lines;
  for (int i = 0; i < 64; i++) {
    json j = {
        {"id", i}, {"prompt_ids", prompt_of(1 + (i * 37) % 64, i, 517)}, {"n_predict", 8 + i % 17}};
    if (i % 4 != 0) j.update({{"temperature", 0.7 + 0.01 * i}, {"seed", 5000 + i}});
    lines.push_back(j.dump());
  }
  write_lines(in, lines);
  std::map<int, std::string> by_parallel[2];
  for (const int parallel : {64, 1}) {
    const fs::path out = env.tmp / ("inv" + std::to_string(parallel) + ".jsonl");
    fs::remove(out);
    std::string err;
    // -b 4096: every prompt is prefilled in the first step, so the first decode step holds
    // all 64 sequences.
    REQUIRE(run_batch(env,
                      {"-m", model, "--batch-file", in.string(), "--output", out.string(),
                       "--parallel", std::to_string(parallel), "-b", "4096", "-t", "2"},
                      "inv", &err) == 0);
    CHECK(err.find("largest decode batch " + std::to_string(parallel) + "\n") != std::string::npos);
    for (const json& r : read_records(out))
      by_parallel[parallel == 1][r["id"].get<int>()] = strip(r);
  }
  REQUIRE(by_parallel[0].size() == 64);
  REQUIRE(by_parallel[1].size() == 64);
  for (int i = 0; i < 64; i++) {
    INFO("id ", i);
    CHECK(by_parallel[0][i] == by_parallel[1][i]);
  }
}

// The job the kill tests interrupt: about 20k tokens over 100 requests, 4 at a time. Request 0
// is one token long, so a first record appears at once and the rest takes a while.
constexpr int kKillJobSize = 100;

struct KillJob {
  std::string model;
  fs::path in;
  std::map<std::string, std::string> reference;  // id -> record without timings, uninterrupted
};

inline KillJob kill_job(const ToolEnv& env) {
  KillJob j;
  RandomModelOptions o = small(Arch::Mamba1, 44);
  o.d_model = 64;
  o.n_vocab = 512;
  j.model = write_model(env, "kill.gguf", o);
  j.in = env.tmp / "kill.jsonl";
  std::vector<std::string> lines;
  for (int i = 0; i < kKillJobSize; i++)
    lines.push_back(json({{"id", id_of("k", i)},
                          {"prompt_ids", prompt_of(2 + i % 9, i, 512)},
                          {"n_predict", i == 0 ? 1 : 200},
                          {"temperature", 1.0},
                          {"seed", i}})
                        .dump());
  write_lines(j.in, lines);
  const fs::path out = env.tmp / "kill.ref.jsonl";
  fs::remove(out);
  REQUIRE(run_batch(env,
                    {"-m", j.model, "--batch-file", j.in.string(), "--output", out.string(),
                     "--parallel", "4", "-t", "1"},
                    "kill-ref") == 0);
  for (const json& r : read_records(out)) j.reference[r["id"].get<std::string>()] = strip(r);
  REQUIRE(j.reference.size() == kKillJobSize);
  return j;
}

inline size_t count_lines(const fs::path& p) {
  const std::string s = slurp(p);
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

// Starts the job (continuing `out` with --resume), sends `sig` as soon as the output holds
// more than `lines` complete lines, and returns the exit status.
inline int interrupt(const ToolEnv& env, const KillJob& job, const fs::path& out, int sig,
                     bool resume, size_t lines) {
  std::vector<std::string> args = {batch_binary(),
                                   "-m",
                                   job.model,
                                   "--batch-file",
                                   job.in.string(),
                                   "--output",
                                   out.string(),
                                   "--parallel",
                                   "4",
                                   "-t",
                                   "1"};
  if (resume) args.push_back("--resume");
  args.insert(args.end(), {"--device", env.device});
  const Child c = start(env, args, "kill");
  const auto t0 = std::chrono::steady_clock::now();
  while (count_lines(out) <= lines) {
    REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(c.pid, sig);
  return wait_for(c);
}

// --resume completes the file: one record per input id, each equal to the uninterrupted run's.
inline void resume_and_check(const ToolEnv& env, const KillJob& job, const fs::path& out,
                             std::string* err) {
  REQUIRE(run_batch(env,
                    {"-m", job.model, "--batch-file", job.in.string(), "--output", out.string(),
                     "--parallel", "4", "-t", "1", "--resume"},
                    "resume", err) == 0);
  const std::vector<json> recs = read_records(out);
  std::map<std::string, int> seen;
  for (const json& r : recs) {
    const std::string id = r["id"].get<std::string>();
    seen[id]++;
    CHECK(job.reference.at(id) == strip(r));
  }
  CHECK(recs.size() == kKillJobSize);
  CHECK(seen.size() == kKillJobSize);
}

// One job, interrupted twice: SIGTERM, then a --resume run killed with SIGKILL, then a cut last
// line, then a --resume that completes it.
inline void kill_and_resume(const ToolEnv& env) {
  const KillJob job = kill_job(env);
  const fs::path out = env.tmp / "interrupted.jsonl";
  fs::remove(out);
  CHECK(interrupt(env, job, out, SIGTERM, false, 0) == 128 + SIGTERM);
  const size_t n1 = read_records(out).size();  // whole lines only
  CHECK(n1 >= 1);
  CHECK(n1 < kKillJobSize);
  CHECK(slurp(env.tmp / "kill.stderr")
            .find("interrupted (SIGTERM): " + std::to_string(n1) + " of " +
                  std::to_string(kKillJobSize) + " records written") != std::string::npos);

  CHECK(interrupt(env, job, out, SIGKILL, true, n1) == 128 + SIGKILL);
  CHECK(slurp(env.tmp / "kill.stderr")
            .find("resume: " + std::to_string(n1) + " of " + std::to_string(kKillJobSize) +
                  " requests already done") != std::string::npos);
  const size_t n2 = count_lines(out);
  CHECK(n2 > n1);
  CHECK(n2 < kKillJobSize);
  // Whatever the kill left, a last line cut short (as a kill during a write leaves it) is
  // removed by the next --resume.
  const std::string s = slurp(out);
  if (!s.empty() && s.back() == '\n')
    std::ofstream(out, std::ios::binary | std::ios::app) << R"({"id":"k99","text":"","ids":[12,)";

  std::string err;
  resume_and_check(env, job, out, &err);
  CHECK(err.find("removed an unfinished last line") != std::string::npos);
  CHECK(err.find("resume: " + std::to_string(n2) + " of " + std::to_string(kKillJobSize) +
                 " requests already done") != std::string::npos);
}

}  // namespace mamba::test
