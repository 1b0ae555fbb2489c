// Continuous batching: the Scheduler against generate(), and mamba-batch as a process on the
// CPU backend (malformed lines, --ordered, SIGTERM / SIGKILL then --resume, batch invariance:
// batch_tool_cases.h, which tests/cuda/test_cuda_batch.cpp runs on the GPU).
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
#include "batch_tool_cases.h"
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

const ToolEnv kCpu = {"cpu", fs::path(MAMBA_TEST_TMP) / "batch"};

std::string write_model(const std::string& name, const RandomModelOptions& o) {
  return test::write_model(kCpu, name, o);
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
  malformed_lines(kCpu);
}

TEST_CASE("mamba-batch: batch invariance, 64 sequences in one batch vs each alone") {
  invariance(kCpu);
}

TEST_CASE("mamba-batch: SIGTERM, --resume killed by SIGKILL, a cut last line, --resume") {
  kill_and_resume(kCpu);
}
