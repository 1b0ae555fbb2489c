// Continuous batching: the Scheduler against generate(), and mamba-batch as a process
// (malformed lines, --ordered, SIGTERM / SIGKILL then --resume, batch invariance).
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "engine/generate.h"
#include "engine/scheduler.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace mamba;
using namespace mamba::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "batch";
const std::string kBatch = (fs::path(MAMBA_BIN_DIR) / "mamba-batch").string();

std::string write_model(const std::string& name, const RandomModelOptions& o) {
  return test::write_model_file(kTmp, name, o);
}

RandomModelOptions small(Arch arch, uint64_t seed) {
  RandomModelOptions o;
  o.arch = arch;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 301;
  o.seed = seed;
  return o;
}

// A prompt of n ids, different for each i.
std::vector<int32_t> prompt_of(int n, int i, int32_t n_vocab) {
  std::vector<int32_t> p;
  for (int t = 0; t < n; t++) p.push_back(int32_t((i * 131 + t * 17 + 3) % n_vocab));
  return p;
}

std::string id_of(const char* prefix, int i) {
  std::string s = prefix;
  s.append(std::to_string(i));
  return s;
}

// What generate() gives for a request, on a fresh one-slot backend.
GenerateResult reference(const Model& m, const Request& q, int32_t eos,
                         const Tokenizer* tok = nullptr) {
  BackendOptions bo;
  bo.n_threads = 1;
  const auto be = make_backend(m, bo);
  Sampler s(q.sampling, int32_t(m.config().n_vocab));
  GenerateOptions go;
  go.n_predict = q.n_predict;
  go.eos_id = eos;
  go.ignore_eos = q.ignore_eos;
  go.tokenizer = tok;
  go.stop = q.stop;
  const std::vector<int32_t> prompt = q.has_prompt_ids ? q.prompt_ids : tok->encode(q.prompt);
  return generate(*be, 0, prompt, s, go);
}

// Runs every request through a Scheduler; results by key (and the keys in the order they were
// reported).
std::map<uint64_t, Result> schedule(const Model& m, const std::vector<Request>& reqs,
                                    SchedulerOptions so, int* max_batch = nullptr,
                                    std::vector<uint64_t>* order = nullptr) {
  BackendOptions bo;
  bo.n_threads = 2;
  bo.n_slots = so.n_parallel;
  const auto be = make_backend(m, bo);
  Scheduler sched(*be, so);
  for (const Request& q : reqs) sched.submit(q);
  std::map<uint64_t, Result> out;
  sched.run([&](Result&& r) {
    CHECK(out.count(r.key) == 0);  // each request is reported once
    if (order) order->push_back(r.key);
    out[r.key] = std::move(r);
  });
  CHECK(sched.n_running() == 0);
  CHECK(sched.n_waiting() == 0);
  if (max_batch) *max_batch = sched.max_batch();
  return out;
}

// ---- mamba-batch as a process -------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  fs::path err;  // its stderr
};

// stdout dropped (the records go to --output), stderr to kTmp/<tag>.stderr; a hang ends in
// SIGALRM after 120 s.
Child start(const std::vector<std::string>& argv, const std::string& tag) {
  Child c;
  c.err = kTmp / (tag + ".stderr");
  c.pid = spawn(argv, "/dev/null", c.err.string(), 120);
  return c;
}

// Exit code, or 128 + signal.
int wait_for(const Child& c) { return exit_status(wait_child(c.pid)); }

int run_batch(std::vector<std::string> args, const std::string& tag, std::string* err = nullptr) {
  args.insert(args.begin(), kBatch);
  const Child c = start(args, tag);
  const int rc = wait_for(c);
  if (err) *err = slurp(c.err);
  return rc;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  for (const std::string& l : lines) f << l << "\n";
}

// The output file's lines; every one must be complete (the file ends with '\n').
std::vector<json> read_records(const fs::path& p) {
  const std::string s = slurp(p);
  REQUIRE((s.empty() || s.back() == '\n'));
  std::vector<json> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(json::parse(line));
  return out;
}

// A record without its timings, as text: what must be identical between runs.
std::string strip(json j) {
  j.erase("timings");
  return j.dump();
}

}  // namespace

TEST_CASE("scheduler: every request equals generate(), greedy and sampled, Mamba-1 and -2") {
  for (const Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
    INFO("arch ", int(arch));
    const auto model = Model::load(write_model("sched.gguf", small(arch, 5)));
    const int32_t V = int32_t(model->config().n_vocab);
    // An EOS that request 0 (sampled) meets after a few tokens: its fifth id, first met at
    // eos_at.
    Request probe;
    probe.has_prompt_ids = true;
    probe.prompt_ids = prompt_of(5, 0, V);
    probe.n_predict = 8;
    probe.sampling.temp = 1.0f;
    probe.sampling.seed = 3;
    const std::vector<int32_t> seen = reference(*model, probe, -1).ids;
    const int32_t eos = seen[4];
    const size_t eos_at = size_t(std::find(seen.begin(), seen.end(), eos) - seen.begin());

    std::vector<Request> reqs;
    const int lens[] = {5, 1, 40, 3, 17, 2, 64, 9, 1, 30, 6, 12, 25, 4};
    for (int i = 0; i < 14; i++) {
      Request q;
      q.key = uint64_t(100 + i);
      q.has_prompt_ids = true;
      q.prompt_ids = prompt_of(lens[i], i, V);
      q.n_predict = (i * 7) % 23;  // 0 .. 22: finishing at different steps
      if (i == 0) {
        q.n_predict = 10;
        q.sampling = probe.sampling;
      }
      if (i == 3) q.n_predict = 0;
      if (i % 2 == 1) {  // sampled, each with its own seed
        q.sampling.temp = 0.9f;
        q.sampling.seed = uint64_t(1000 + i);
        q.sampling.top_k = i % 3 == 0 ? 0 : 40;
        q.sampling.repeat_penalty = 1.1f;
        q.sampling.presence_penalty = 0.2f;
      }
      if (i == 4) q.sampling.logit_bias = {{7, 5.0f}};
      if (i == 6) q.ignore_eos = true;
      reqs.push_back(q);
    }
    // A second copy of request 0 that must not stop at the EOS.
    Request q = reqs[0];
    q.key = 99;
    q.ignore_eos = true;
    reqs.push_back(q);

    SchedulerOptions so;
    so.n_parallel = 3;
    so.prefill_budget = 16;  // a few admissions per step at most
    so.eos_id = eos;
    int max_batch = 0;
    const auto got = schedule(*model, reqs, so, &max_batch);
    CHECK(max_batch == 3);
    REQUIRE(got.size() == reqs.size());
    for (const Request& r : reqs) {
      INFO("request ", r.key);
      const GenerateResult ref = reference(*model, r, eos);
      const Result& g = got.at(r.key);
      CHECK(g.finish_reason == ref.finish_reason);
      CHECK(g.ids == ref.ids);
      CHECK(g.n_prompt == int(r.prompt_ids.size()));
      CHECK(g.text.empty());
      CHECK(g.error.empty());
      CHECK(g.completed());
    }
    CHECK(got.at(100).finish_reason == "eos");
    CHECK(got.at(100).ids.size() == eos_at + 1);
    CHECK(got.at(99).finish_reason == "length");
    CHECK(got.at(99).ids.size() == 10);
    CHECK(got.at(102).n_prompt == 40);
    CHECK(got.at(103).ids.empty());  // n_predict 0: prefill only
    CHECK(got.at(103).finish_reason == "length");
    CHECK(got.at(106).ids.size() == 19);  // ignore_eos: always n_predict = 42 % 23
  }
}

// When every running sequence picks greedily with nothing adjusted, the step may let the
// backend pick (Backend::decode_greedy: on a GPU that picks on the device, or on request); the
// ids must be generate()'s either way, with ignore_eos's ban too.
TEST_CASE("scheduler: all-greedy batches pick through the backend and equal generate()") {
  for (const Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
    INFO("arch ", int(arch));
    const auto model = Model::load(write_model("greedy.gguf", small(arch, 5)));
    const int32_t V = int32_t(model->config().n_vocab);
    std::vector<Request> reqs;
    const int lens[] = {3, 1, 20, 7, 12, 2, 9};
    for (int i = 0; i < 7; i++) {
      Request q;
      q.key = uint64_t(200 + i);
      q.has_prompt_ids = true;
      q.prompt_ids = prompt_of(lens[i], 50 + i, V);
      q.n_predict = 4 + (i * 5) % 13;
      q.ignore_eos = i % 3 == 1;
      q.sampling.top_k = 1 + i;  // ignored at temperature 0
      reqs.push_back(q);
    }
    // An EOS that the greedy requests are likely to meet: request 0's third pick alone.
    const int32_t eos = reference(*model, reqs[0], -1).ids.at(2);
    BackendOptions bo;
    bo.n_threads = 2;
    bo.n_slots = 4;
    const auto be = make_backend(*model, bo);
    CHECK_FALSE(be->picks_on_device());  // the CPU backend picks on the host: by request only
    for (const bool backend_picks : {true, false}) {
      INFO("backend_picks ", backend_picks);
      SchedulerOptions so;
      so.n_parallel = 4;
      so.prefill_budget = 8;
      so.eos_id = eos;
      so.backend_picks = backend_picks;
      Scheduler sched(*be, so);
      for (const Request& q : reqs) sched.submit(q);
      std::map<uint64_t, Result> got;
      sched.run([&](Result&& r) { got[r.key] = std::move(r); });
      CHECK(sched.n_decode_calls() > 0);
      CHECK(sched.n_greedy_steps() == (backend_picks ? sched.n_decode_calls() : 0));
      REQUIRE(got.size() == reqs.size());
      for (const Request& r : reqs) {
        INFO("request ", r.key);
        const GenerateResult ref = reference(*model, r, eos);
        CHECK(got.at(r.key).ids == ref.ids);
        CHECK(got.at(r.key).finish_reason == ref.finish_reason);
      }
      CHECK(got.at(200).finish_reason == "eos");
    }
  }
}

TEST_CASE("scheduler: the bundled model's text and stop strings equal generate()") {
  const auto model = Model::load(MAMBA_DEFAULT_MODEL);
  const auto tok = tokenizer_from_gguf(model->gguf());
  REQUIRE(tok != nullptr);
  const char* prompts[] = {"def read_file(filename):", "class Foo:", "import os\n",
                           "for i in range(10):", "# utils\n"};
  std::vector<Request> reqs;
  for (int i = 0; i < 5; i++) {
    Request q;
    q.key = uint64_t(i);
    q.prompt = prompts[i];
    q.n_predict = 16;
    q.stop = {"\n\n", "):"};
    if (i >= 3) {
      q.sampling.temp = 0.8f;
      q.sampling.seed = uint64_t(7 * i);
    }
    reqs.push_back(q);
  }
  reqs[4].stop.clear();
  SchedulerOptions so;
  so.n_parallel = 2;
  so.prefill_budget = 8;
  so.eos_id = model->eos_id;
  so.tokenizer = tok.get();
  const auto got = schedule(*model, reqs, so);
  REQUIRE(got.size() == reqs.size());
  int n_stop = 0;
  for (const Request& r : reqs) {
    INFO("prompt ", r.prompt);
    const GenerateResult ref = reference(*model, r, model->eos_id, tok.get());
    const Result& g = got.at(r.key);
    CHECK(g.ids == ref.ids);
    CHECK(g.text == ref.text);
    CHECK(g.finish_reason == ref.finish_reason);
    CHECK(g.n_prompt == int(tok->encode(r.prompt).size()));
    CHECK_FALSE(g.text.empty());
    n_stop += g.finish_reason == "stop";
  }
  CHECK(n_stop >= 2);  // the stop strings did end some of them
}

TEST_CASE("scheduler: picks on several threads equal picks on one, results in the same order") {
  // Mixed requests: greedy, sampled with every stage, penalties, EOS boosted, ignore_eos
  // (also against a +inf bias on EOS); each run must equal the serial one and generate().
  const auto model = Model::load(write_model("picks.gguf", small(Arch::Mamba2, 9)));
  const int32_t V = int32_t(model->config().n_vocab);
  const int32_t eos = 17;
  std::vector<Request> reqs;
  for (int i = 0; i < 24; i++) {
    Request q;
    q.key = uint64_t(i);
    q.has_prompt_ids = true;
    q.prompt_ids = prompt_of(1 + (i * 13) % 20, i, V);
    q.n_predict = 5 + (i * 11) % 30;
    SamplerParams& sp = q.sampling;
    sp.seed = uint64_t(300 + i);
    if (i % 4 == 1) {
      sp.temp = 0.8f;
      sp.top_p = 0.9f;
    } else if (i % 4 == 2) {
      sp.temp = 1.2f;
      sp.top_k = 0;
      sp.min_p = 0.1f;
      sp.typical_p = i % 8 == 2 ? 0.9f : 1.0f;
    } else if (i % 4 == 3) {
      sp.temp = 0.7f;
      sp.top_k = 5;
      sp.repeat_penalty = 1.3f;
      sp.presence_penalty = 0.3f;
      sp.frequency_penalty = 0.2f;
      sp.repeat_last_n = 16;
    }
    if (i % 5 == 1) sp.logit_bias = {{eos, 8.0f}};  // EOS soon, unless ignored
    q.ignore_eos = i % 3 == 0;
    if (i == 9) sp.logit_bias = {{eos, INFINITY}};  // ignore_eos still wins
    reqs.push_back(q);
  }
  SchedulerOptions so;
  so.n_parallel = 8;
  so.prefill_budget = 32;
  so.eos_id = eos;
  std::vector<uint64_t> serial_order;
  so.n_pick_threads = 1;
  const auto serial = schedule(*model, reqs, so, nullptr, &serial_order);
  REQUIRE(serial.size() == reqs.size());
  int n_eos = 0;
  for (const Request& r : reqs) {
    INFO("request ", r.key);
    const Result& g = serial.at(r.key);
    const GenerateResult ref = reference(*model, r, eos);
    CHECK(g.ids == ref.ids);
    CHECK(g.finish_reason == ref.finish_reason);
    if (r.ignore_eos) {
      CHECK(g.finish_reason == "length");
      CHECK(g.ids.size() == size_t(r.n_predict));
      CHECK(std::count(g.ids.begin(), g.ids.end(), eos) == 0);
    }
    n_eos += g.finish_reason == "eos";
  }
  CHECK(n_eos >= 2);
  for (const int threads : {2, 3, 8, 0}) {
    INFO("pick threads ", threads);
    so.n_pick_threads = threads;
    std::vector<uint64_t> order;
    const auto got = schedule(*model, reqs, so, nullptr, &order);
    CHECK(order == serial_order);
    REQUIRE(got.size() == reqs.size());
    for (const Request& r : reqs) {
      INFO("request ", r.key);
      CHECK(got.at(r.key).ids == serial.at(r.key).ids);
      CHECK(got.at(r.key).finish_reason == serial.at(r.key).finish_reason);
    }
  }

  // Text and stop strings with the bundled model's tokenizer.
  const auto demo = Model::load(MAMBA_DEFAULT_MODEL);
  const auto tok = tokenizer_from_gguf(demo->gguf());
  REQUIRE(tok != nullptr);
  const char* prompts[] = {"def main():", "class Node:", "import sys\n", "x = [",
                           "# tests\n",  "while True:", "return ",     "if x:"};
  std::vector<Request> text_reqs;
  for (int i = 0; i < 8; i++) {
    Request q;
    q.key = uint64_t(i);
    q.prompt = prompts[i];
    q.n_predict = 20;
    q.stop = {"\n\n", "):"};
    if (i % 2 == 1) {
      q.sampling.temp = 0.9f;
      q.sampling.repeat_penalty = 1.1f;
      q.sampling.seed = uint64_t(40 + i);
    }
    q.ignore_eos = i % 3 == 0;
    text_reqs.push_back(q);
  }
  SchedulerOptions to;
  to.n_parallel = 4;
  to.prefill_budget = 8;
  to.eos_id = demo->eos_id;
  to.tokenizer = tok.get();
  std::map<uint64_t, Result> runs[2];
  std::vector<uint64_t> orders[2];
  for (const int threads : {1, 4}) {
    to.n_pick_threads = threads;
    runs[threads > 1] = schedule(*demo, text_reqs, to, nullptr, &orders[threads > 1]);
  }
  CHECK(orders[0] == orders[1]);
  int n_stop = 0;
  for (const Request& r : text_reqs) {
    INFO("prompt ", r.prompt);
    const GenerateResult ref = reference(*demo, r, demo->eos_id, tok.get());
    for (const auto& run : runs) {
      const Result& g = run.at(r.key);
      CHECK(g.ids == ref.ids);
      CHECK(g.text == ref.text);
      CHECK(g.finish_reason == ref.finish_reason);
    }
    n_stop += runs[1].at(r.key).finish_reason == "stop";
  }
  CHECK(n_stop >= 2);
}

TEST_CASE("scheduler: bad requests are errors, the others run; cancel abandons the rest") {
  const auto model = Model::load(write_model("errors.gguf", small(Arch::Mamba2, 8)));
  const int32_t V = int32_t(model->config().n_vocab);
  std::vector<Request> reqs(7);
  for (int i = 0; i < 7; i++) {
    reqs[size_t(i)].key = uint64_t(i);
    reqs[size_t(i)].has_prompt_ids = true;
    reqs[size_t(i)].prompt_ids = prompt_of(4 + i, i, V);
    reqs[size_t(i)].n_predict = 6;
  }
  reqs[1].stop = {"x"};            // needs a tokenizer
  reqs[2].prompt_ids = {1, V};     // out of range
  reqs[3].has_prompt_ids = false;  // text needs a tokenizer
  reqs[3].prompt = "hello";
  reqs[4].sampling.top_p = 0.0f;  // the Sampler refuses it
  reqs[5].n_predict = -1;
  SchedulerOptions so;
  so.n_parallel = 2;
  const auto got = schedule(*model, reqs, so);
  REQUIRE(got.size() == 7);
  CHECK(got.at(1).error.find("stop strings need") != std::string::npos);
  CHECK(got.at(2).error.find("out of range") != std::string::npos);
  CHECK(got.at(3).error.find("no tokenizer") != std::string::npos);
  CHECK(got.at(4).error.find("--top-p") != std::string::npos);
  CHECK(got.at(5).error.find("n_predict") != std::string::npos);
  for (int i = 1; i <= 5; i++) {
    CHECK(got.at(uint64_t(i)).finish_reason == "error");
    CHECK_FALSE(got.at(uint64_t(i)).completed());
  }
  for (int i : {0, 6}) {
    CHECK(got.at(uint64_t(i)).ids == reference(*model, reqs[size_t(i)], -1).ids);
    CHECK(got.at(uint64_t(i)).completed());
  }

  // Cancel once the first result is in: every other request is reported "cancelled", once.
  std::atomic<bool> stop{false};
  so.cancel = &stop;
  so.n_parallel = 3;
  BackendOptions bo;
  bo.n_slots = 3;
  const auto be = make_backend(*model, bo);
  Scheduler sched(*be, so);
  for (int i = 0; i < 10; i++) {
    Request q = reqs[0];
    q.key = uint64_t(i);
    q.n_predict = i == 0 ? 1 : 50;
    sched.submit(q);
  }
  std::vector<Result> out;
  sched.run([&](Result&& r) {
    out.push_back(std::move(r));
    stop = true;
  });
  REQUIRE(out.size() == 10);
  CHECK(out[0].key == 0);
  CHECK(out[0].finish_reason == "length");
  std::set<uint64_t> keys;
  for (size_t i = 1; i < out.size(); i++) {
    CHECK(out[i].finish_reason == "cancelled");
    CHECK_FALSE(out[i].completed());
    keys.insert(out[i].key);
  }
  CHECK(keys.size() == 9);
  CHECK(keys.count(0) == 0);
  CHECK(sched.n_running() == 0);
  CHECK(sched.n_waiting() == 0);
  CHECK_FALSE(sched.step([](Result&&) { FAIL("nothing is left to report"); }));
}

TEST_CASE("scheduler: batch invariance of Falcon-Mamba with bf16 weights, 64 at once vs alone") {
  RandomModelOptions o = small(Arch::Mamba1, 17);
  o.falcon = true;
  o.dtype = gguf::DType::BF16;
  const auto model = Model::load(write_model("falcon_bf16.gguf", o));
  std::vector<Request> reqs;
  for (int i = 0; i < 64; i++) {
    Request q;
    q.key = uint64_t(i);
    q.has_prompt_ids = true;
    q.prompt_ids = prompt_of(1 + (i * 29) % 48, i, 301);
    q.n_predict = 4 + i % 5;
    q.sampling.temp = i % 3 == 0 ? 0.0f : 1.0f;
    q.sampling.seed = uint64_t(i);
    reqs.push_back(q);
  }
  SchedulerOptions so;
  so.prefill_budget = 1 << 20;  // all 64 prompts in the first step
  so.n_parallel = 64;
  int max_batch = 0;
  const auto together = schedule(*model, reqs, so, &max_batch);
  CHECK(max_batch == 64);
  so.n_parallel = 1;
  const auto alone = schedule(*model, reqs, so, &max_batch);
  CHECK(max_batch == 1);
  REQUIRE(together.size() == 64);
  REQUIRE(alone.size() == 64);
  for (int i = 0; i < 64; i++) {
    INFO("request ", i);
    CHECK(together.at(uint64_t(i)).ids == alone.at(uint64_t(i)).ids);
    CHECK(together.at(uint64_t(i)).ids.size() == size_t(4 + i % 5));
  }
}

TEST_CASE("mamba-batch: malformed lines give error records, the rest complete; --ordered") {
  const std::string model = write_model("tool.gguf", small(Arch::Mamba1, 21));
  const fs::path in = kTmp / "mixed.jsonl", out = kTmp / "mixed.out.jsonl";
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
    REQUIRE(run_batch(args, "mixed", &err) == 0);
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
  CHECK(run_batch({"-m", model, "--batch-file", in.string(), "--output", out.string()}, "exists",
                  &err) == 1);
  CHECK(err.find("pass --resume") != std::string::npos);
  CHECK(read_records(out).size() == 12);
}

TEST_CASE("mamba-batch: batch invariance, 64 sequences in one batch vs each alone") {
  RandomModelOptions o = small(Arch::Mamba2, 31);
  o.dtype = gguf::DType::F16;  // 16-bit weights take the widening path for more than 4 rows
  o.n_vocab = 517;
  const std::string model = write_model("invariance.gguf", o);
  const fs::path in = kTmp / "inv.jsonl";
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
    const fs::path out = kTmp / ("inv" + std::to_string(parallel) + ".jsonl");
    fs::remove(out);
    std::string err;
    // -b 4096: every prompt is prefilled in the first step, so the first decode step holds
    // all 64 sequences.
    REQUIRE(run_batch({"-m", model, "--batch-file", in.string(), "--output", out.string(),
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

namespace {

// The job the kill tests interrupt: about 20k tokens over 100 requests, 4 at a time. Request 0
// is one token long, so a first record appears at once and the rest takes a while.
constexpr int kKillJobSize = 100;

struct KillJob {
  std::string model;
  fs::path in;
  std::map<std::string, std::string> reference;  // id -> record without timings, uninterrupted
};

const KillJob& kill_job() {
  static const KillJob job = [] {
    KillJob j;
    RandomModelOptions o = small(Arch::Mamba1, 44);
    o.d_model = 64;
    o.n_vocab = 512;
    j.model = write_model("kill.gguf", o);
    j.in = kTmp / "kill.jsonl";
    std::vector<std::string> lines;
    for (int i = 0; i < kKillJobSize; i++)
      lines.push_back(json({{"id", id_of("k", i)},
                            {"prompt_ids", prompt_of(2 + i % 9, i, 512)},
                            {"n_predict", i == 0 ? 1 : 200},
                            {"temperature", 1.0},
                            {"seed", i}})
                          .dump());
    write_lines(j.in, lines);
    const fs::path out = kTmp / "kill.ref.jsonl";
    fs::remove(out);
    REQUIRE(run_batch({"-m", j.model, "--batch-file", j.in.string(), "--output", out.string(),
                       "--parallel", "4", "-t", "1"},
                      "kill-ref") == 0);
    for (const json& r : read_records(out)) j.reference[r["id"].get<std::string>()] = strip(r);
    REQUIRE(j.reference.size() == kKillJobSize);
    return j;
  }();
  return job;
}

size_t count_lines(const fs::path& p) {
  const std::string s = slurp(p);
  return size_t(std::count(s.begin(), s.end(), '\n'));
}

// Starts the job (continuing `out` with --resume), sends `sig` as soon as the output holds
// more than `lines` complete lines, and returns the exit status.
int interrupt(const KillJob& job, const fs::path& out, int sig, bool resume, size_t lines) {
  std::vector<std::string> args = {kBatch,
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
  const Child c = start(args, "kill");
  const auto t0 = std::chrono::steady_clock::now();
  while (count_lines(out) <= lines) {
    REQUIRE(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(c.pid, sig);
  return wait_for(c);
}

// --resume completes the file: one record per input id, each equal to the uninterrupted run's.
void resume_and_check(const KillJob& job, const fs::path& out, std::string* err) {
  REQUIRE(run_batch({"-m", job.model, "--batch-file", job.in.string(), "--output", out.string(),
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

}  // namespace

// One job, interrupted twice: SIGTERM, then a --resume run killed with SIGKILL, then a
// --resume that completes it.
TEST_CASE("mamba-batch: SIGTERM, --resume killed by SIGKILL, a cut last line, --resume") {
  const KillJob& job = kill_job();
  const fs::path out = kTmp / "interrupted.jsonl";
  fs::remove(out);
  CHECK(interrupt(job, out, SIGTERM, false, 0) == 128 + SIGTERM);
  const size_t n1 = read_records(out).size();  // whole lines only
  CHECK(n1 >= 1);
  CHECK(n1 < kKillJobSize);
  CHECK(slurp(kTmp / "kill.stderr")
            .find("interrupted (SIGTERM): " + std::to_string(n1) + " of " +
                  std::to_string(kKillJobSize) + " records written") != std::string::npos);

  CHECK(interrupt(job, out, SIGKILL, true, n1) == 128 + SIGKILL);
  CHECK(slurp(kTmp / "kill.stderr")
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
  resume_and_check(job, out, &err);
  CHECK(err.find("removed an unfinished last line") != std::string::npos);
  CHECK(err.find("resume: " + std::to_string(n2) + " of " + std::to_string(kKillJobSize) +
                 " requests already done") != std::string::npos);
}
