// mamba-cli run as a process: its scripting interface on random models (ids in, ids out, checked
// against the library), and text generation on the bundled model: stop strings, sampling
// flags, prompt sources, the prompt cache, state files, interactive mode over a pipe, and its
// errors. (Interactive mode on a real terminal: test_cli_interactive.cpp.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "engine/state_file.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace mamba;
using namespace mamba::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "cli";
const std::string kCli = (fs::path(MAMBA_BIN_DIR) / "mamba-cli").string();

RandomModelOptions options(int32_t eos) {
  RandomModelOptions o;
  o.d_model = 32;
  o.n_layer = 2;
  o.n_vocab = 301;
  o.seed = 11;
  o.eos_id = eos;
  return o;
}

std::string write_model(const std::string& name, const RandomModelOptions& o) {
  return test::write_model_file(kTmp, name, o);
}

const std::vector<int32_t> kPrompt = {5, 17, 300, 0, 42, 7};
const std::string kPromptArg = "5,17,300,0,42,7";

}  // namespace

TEST_CASE("cli: --json output, greedy ids and --logits-out match the library") {
  const std::string model_path = write_model("cli.gguf", options(-1));
  const std::string logits_path = (kTmp / "logits.f32").string();
  std::string out;
  REQUIRE(run(kCli + " -m " + model_path + " --prompt-ids " + kPromptArg +
                  " -n 9 --temp 0 --json -t 2 --logits-out " + logits_path,
              &out) == 0);
  const json j = json::parse(out);
  CHECK(j["n_prompt"] == kPrompt.size());
  CHECK(j["n_predict"] == 9);
  CHECK(j["ids"].size() == 9);
  CHECK(j["finish_reason"] == "length");
  CHECK(j["timings"]["prompt_ms"].get<double>() >= 0);
  CHECK(j["timings"]["predict_tok_s"].get<double>() > 0);

  // The same run through the library.
  const auto model = Model::load(model_path);
  CHECK(j["state_bytes"] == model->config().state_bytes());
  BackendOptions bo;
  bo.n_threads = 1;
  const auto be = make_backend(*model, bo);
  GenerateOptions go;
  go.n_predict = 9;
  go.prompt_logits = true;
  Sampler greedy(SamplerParams{}, int32_t(model->config().n_vocab));
  const GenerateResult r = generate(*be, 0, kPrompt, greedy, go);
  CHECK(j["ids"].get<std::vector<int32_t>>() == r.ids);

  // Raw float32 logits, (n_prompt, n_vocab), identical bits (the thread count does not matter).
  const size_t n = kPrompt.size() * size_t(model->config().n_vocab);
  REQUIRE(fs::file_size(logits_path) == n * 4);
  std::vector<float> logits(n);
  std::ifstream f(logits_path, std::ios::binary);
  f.read(reinterpret_cast<char*>(logits.data()), std::streamsize(n * 4));
  REQUIRE(r.prompt_logits.size() == n);
  CHECK(std::memcmp(logits.data(), r.prompt_logits.data(), n * 4) == 0);

  // -n 0 is valid: nothing generated.
  REQUIRE(run(kCli + " -m " + model_path + " --prompt-ids 1,2 -n 0 --json", &out) == 0);
  const json j0 = json::parse(out);
  CHECK(j0["ids"].empty());
  CHECK(j0["n_predict"] == 0);
  CHECK(j0["finish_reason"] == "length");
}

TEST_CASE("cli: generation stops at EOS unless --ignore-eos") {
  // Find the first greedy token, then write the same weights with that token as EOS.
  const std::string plain = write_model("plain.gguf", options(-1));
  std::string out;
  REQUIRE(run(kCli + " -m " + plain + " --prompt-ids " + kPromptArg + " -n 6 --json", &out) == 0);
  const std::vector<int32_t> ids = json::parse(out)["ids"].get<std::vector<int32_t>>();
  REQUIRE(ids.size() == 6);
  const int32_t eos = ids[0];
  const std::string with_eos = write_model("eos.gguf", options(eos));

  REQUIRE(run(kCli + " -m " + with_eos + " --prompt-ids " + kPromptArg + " -n 6 --json", &out) ==
          0);
  json j = json::parse(out);
  CHECK(j["finish_reason"] == "eos");
  CHECK(j["ids"].get<std::vector<int32_t>>() == std::vector<int32_t>{eos});

  REQUIRE(
      run(kCli + " -m " + with_eos + " --prompt-ids " + kPromptArg + " -n 6 --json --ignore-eos",
          &out) == 0);
  j = json::parse(out);
  CHECK(j["finish_reason"] == "length");
  const auto forced = j["ids"].get<std::vector<int32_t>>();
  CHECK(forced.size() == 6);
  for (int32_t id : forced) CHECK(id != eos);  // the EOS logit is -inf
}

TEST_CASE("cli: temperature sampling is reproducible with --seed") {
  const std::string model_path = write_model("cli.gguf", options(-1));
  std::string a, b;
  const std::string cmd =
      kCli + " -m " + model_path + " --prompt-ids 1,2,3 -n 12 --temp 1.5 --seed 7 --json";
  REQUIRE(run(cmd, &a) == 0);
  REQUIRE(run(cmd, &b) == 0);
  CHECK(json::parse(a)["ids"] == json::parse(b)["ids"]);
  CHECK(json::parse(a)["ids"].size() == 12);
}

TEST_CASE("cli: bad input exits 1 with one error line, never a signal") {
  const std::string model_path = write_model("cli.gguf", options(-1));
  std::string out;
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids 1,99999 -n 2 2>&1", &out) == 1);
  CHECK(out == "error: prompt id 99999 is out of range (n_vocab = 301)\n");
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids -3 -n 2 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids 1,x -n 2 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids '' -n 2 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids 1 -n -1 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
  CHECK(run(kCli + " -m " + model_path + " --prompt-ids 1 --device tpu 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
  CHECK(run(kCli + " -m " + (kTmp / "missing.gguf").string() + " --prompt-ids 1 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);

  // Truncated and garbage files.
  const std::string trunc = (kTmp / "truncated.gguf").string();
  {
    const std::string bytes = slurp(model_path);
    for (size_t keep : {bytes.size() / 2, size_t(100), size_t(3)}) {
      std::ofstream(trunc, std::ios::binary | std::ios::trunc)
          .write(bytes.data(), std::streamsize(keep));
      INFO("kept ", keep, " bytes");
      CHECK(run(kCli + " -m " + trunc + " --prompt-ids 1 --json 2>&1", &out) == 1);
      CHECK(out.rfind("error: ", 0) == 0);
      CHECK(std::count(out.begin(), out.end(), '\n') == 1);
    }
  }
}

TEST_CASE("cli: -p TEXT uses the tokenizer embedded in the model") {
  // A converted checkpoint carries its tokenizer; a random model has none.
  const fs::path hf = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/models/mamba1_neox_f16/hf";
  const std::string model_path = (kTmp / "neox.gguf").string();
  std::string out;
  fs::create_directories(kTmp);
  REQUIRE(run((fs::path(MAMBA_BIN_DIR) / "mamba-convert").string() + " " + hf.string() + " -o " +
                  model_path + " 2>&1",
              &out) == 0);
  const std::string text = "Mamba runs on a state";
  REQUIRE(run(kCli + " -m " + model_path + " -p '" + text + "' -n 5 --ignore-eos --json", &out) ==
          0);
  const json j = json::parse(out);

  const auto model = Model::load(model_path);
  const auto tok = tokenizer_from_gguf(model->gguf());
  REQUIRE(tok != nullptr);
  const std::vector<int32_t> prompt = tok->encode(text);
  CHECK(j["n_prompt"] == prompt.size());
  const auto be = make_backend(*model, BackendOptions{});
  GenerateOptions go;
  go.n_predict = 5;
  go.ignore_eos = true;
  go.eos_id = model->eos_id;
  Sampler greedy(SamplerParams{}, int32_t(model->config().n_vocab));
  const GenerateResult r = generate(*be, 0, prompt, greedy, go);
  CHECK(j["ids"].get<std::vector<int32_t>>() == r.ids);
  CHECK(j["text"] == tok->decode(r.ids));

  // Plain mode prints the prompt followed by the continuation.
  REQUIRE(run(kCli + " -m " + model_path + " -p '" + text + "' -n 5 --ignore-eos 2>/dev/null",
              &out) == 0);
  CHECK(out == text + tok->decode(r.ids) + "\n");

  const std::string no_tok = write_model("cli.gguf", options(-1));
  CHECK(run(kCli + " -m " + no_tok + " -p hello 2>&1", &out) == 1);
  CHECK(out == "error: this model has no tokenizer; give the prompt with --prompt-ids\n");
  CHECK(run(kCli + " -m " + no_tok + " -p hello --prompt-ids 1 2>&1", &out) == 1);
  CHECK(out.rfind("error: ", 0) == 0);
}

// ---- the bundled model: text in, text out ----------------------------------------------------

namespace {

const std::string kDemo = MAMBA_DEFAULT_MODEL;

// Exit status, stdout and stderr apart (stderr through a file in kTmp).
int run2(const std::string& cmd, std::string* out, std::string* err) {
  fs::create_directories(kTmp);
  return run(cmd, out, err, kTmp / "stderr.txt");
}

json run_json(const std::string& args) {
  std::string out;
  INFO("mamba-cli ", args);
  REQUIRE(run(kCli + " " + args + " --json", &out) == 0);
  return json::parse(out);
}

// Shell single quotes around text without a single quote (a newline inside is fine).
std::string quoted(const std::string& s) {
  REQUIRE(s.find('\'') == std::string::npos);
  return "'" + s + "'";
}

// The bundled model's greedy continuation through the library: what the CLI must print.
struct Demo {
  std::unique_ptr<Model> model = Model::load(kDemo);
  std::unique_ptr<Tokenizer> tok = tokenizer_from_gguf(model->gguf());
  std::unique_ptr<Backend> be = make_backend(*model, BackendOptions{});
  Sampler greedy{SamplerParams{}, int32_t(model->config().n_vocab)};

  // Feeds `ids` (fresh: from an empty state) and generates n tokens.
  GenerateResult run(const std::vector<int32_t>& ids, int n, bool fresh) {
    if (fresh) greedy.reset();
    GenerateOptions go;
    go.n_predict = n;
    go.eos_id = model->eos_id;
    go.ignore_eos = true;
    go.tokenizer = tok.get();
    go.continue_state = !fresh;
    return generate(*be, 0, ids, greedy, go);
  }
};

const std::string kFib = "def fibonacci(n):\n";

}  // namespace

TEST_CASE("cli: --stop ends the text right before the stop string") {
  Demo d;
  const GenerateResult full = d.run(d.tok->encode(kFib), 40, true);
  const std::string stop = " prime";
  const size_t at = full.text.find(stop);
  REQUIRE(at != std::string::npos);
  REQUIRE(at > 10);
  const std::string before = full.text.substr(0, at);

  const json j = run_json("-p " + quoted(kFib) + " -n 40 --stop " + quoted(stop));
  CHECK(j["finish_reason"] == "stop");
  CHECK(j["text"] == before);
  // The ids include the tokens of the stop string, none after it.
  const auto ids = j["ids"].get<std::vector<int32_t>>();
  REQUIRE(ids.size() < full.ids.size());
  CHECK(ids == std::vector<int32_t>(full.ids.begin(), full.ids.begin() + std::ptrdiff_t(ids.size())));
  CHECK(d.tok->decode(ids).find(stop) != std::string::npos);

  // Plain output: the prompt, the text before the stop string, a newline.
  std::string out, err;
  REQUIRE(run2(kCli + " -p " + quoted(kFib) + " -n 40 --stop " + quoted(stop), &out, &err) == 0);
  CHECK(out == kFib + before + "\n");
  CHECK(err.find("; stop; state: ") != std::string::npos);

  // Of several stop strings the earliest in the text wins; one that never occurs is harmless.
  const json j2 = run_json("-p " + quoted(kFib) + " -n 40 --stop Examples --stop " + quoted(stop) +
                           " --stop zzzz");
  CHECK(j2["text"] == before);
  CHECK(run2(kCli + " -p x --stop ''", &out, &err) == 1);
  CHECK(err == "error: --stop was given an empty string; give the text to stop at\n");
  const json j3 = run_json("-p " + quoted(kFib) + " -n 12 --stop zzzz");
  CHECK(j3["finish_reason"] == "length");
  CHECK(j3["text"] == d.tok->decode(std::vector<int32_t>(full.ids.begin(), full.ids.begin() + 12)));
}

TEST_CASE("cli: sampling is reproducible per seed, and the flags reach the sampler") {
  const std::string p = "-p 'import os' -n 16 --ignore-eos --temp 1 ";
  const json a = run_json(p + "-s 1"), b = run_json(p + "-s 1"), c = run_json(p + "--seed 2");
  CHECK(a["text"] == b["text"]);
  CHECK(a["ids"] == b["ids"]);
  CHECK(a["seed"] == 1);
  CHECK(a["ids"] != c["ids"]);
  CHECK(a["text"] != c["text"]);
  // Without -s a seed is drawn, and reported so that the run can be repeated.
  CHECK(run_json(p)["seed"].is_number_unsigned());

  // --top-k 1 leaves only the most likely token: greedy, whatever the seed and temperature.
  const json greedy = run_json("-p 'import os' -n 16 --ignore-eos");
  CHECK(run_json(p + "-s 3 --top-k 1")["ids"] == greedy["ids"]);
  // A +inf bias forces a token.
  const json forced = run_json("-p 'import os' -n 5 --logit-bias 7+inf");
  CHECK(forced["ids"] == std::vector<int32_t>(5, 7));
  // The penalties change greedy output on this repetitive model.
  CHECK(run_json("-p 'import os' -n 16 --ignore-eos --repeat-penalty 1.5")["ids"] != greedy["ids"]);

  std::string out, err;
  CHECK(run2(kCli + " -p x --temp -1", &out, &err) == 1);
  CHECK(err == "error: --temp must be >= 0 and finite, got -1\n");
  CHECK(run2(kCli + " -p x --logit-bias 5x", &out, &err) == 1);
  CHECK(err.rfind("error: --logit-bias", 0) == 0);
  CHECK(run2(kCli + " -p x -s -2", &out, &err) == 1);
  CHECK(err == "error: -s/--seed must be >= 0, or -1 for a random seed\n");
}

TEST_CASE("cli: the prompt from -f or stdin equals -p; --no-display-prompt") {
  fs::create_directories(kTmp);
  const std::string file = (kTmp / "prompt.txt").string();
  std::ofstream(file, std::ios::binary) << kFib;
  const json p = run_json("-p " + quoted(kFib) + " -n 10");
  CHECK(run_json("-f " + file + " -n 10")["ids"] == p["ids"]);
  CHECK(run_json("-n 10 < " + file)["ids"] == p["ids"]);
  CHECK(run_json("-n 10 < " + file)["n_prompt"] == p["n_prompt"]);

  std::string out, err;
  REQUIRE(run2(kCli + " -f " + file + " -n 10", &out, &err) == 0);
  CHECK(out == kFib + p["text"].get<std::string>() + "\n");
  REQUIRE(run2(kCli + " -f " + file + " -n 10 --no-display-prompt", &out, &err) == 0);
  CHECK(out == p["text"].get<std::string>() + "\n");
  // The summary: prompt and generation speed, state size.
  CHECK(err.rfind("prompt: 9 tokens (9 prefilled, 0 reused), ", 0) == 0);
  CHECK(err.find("generated: 10 tokens") != std::string::npos);
  CHECK(err.find("state: 2483712 bytes per sequence") != std::string::npos);

  CHECK(run2(kCli + " -f " + (kTmp / "nope.txt").string(), &out, &err) == 1);
  CHECK(err.rfind("error: cannot open prompt file", 0) == 0);
  CHECK(run2(kCli + " -n 3 < /dev/null", &out, &err) == 1);
  CHECK(err == "error: the prompt is empty; give some text\n");
  CHECK(run2(kCli + " -p a -f " + file, &out, &err) == 1);
  CHECK(err.rfind("error: give the prompt either", 0) == 0);
}

TEST_CASE("cli: --prompt-cache reuses the state of a prompt that the new prompt extends") {
  Demo d;
  const std::string p1 = kFib, p2 = kFib + "    if n < 2:";
  const std::vector<int32_t> ids1 = d.tok->encode(p1), ids2 = d.tok->encode(p2);
  REQUIRE(ids1.size() < ids2.size());
  REQUIRE(std::equal(ids1.begin(), ids1.end(), ids2.begin()));
  const std::string cache = (kTmp / "prompt.cache").string();
  fs::remove(cache);
  const std::string args2 = "-p " + quoted(p2) + " -n 16 --prompt-cache " + cache;

  const json cold = run_json("-p " + quoted(p2) + " -n 16");
  CHECK(cold["n_prefilled"] == ids2.size());
  CHECK(!cold.contains("prompt_cache"));

  json j = run_json("-p " + quoted(p1) + " -n 4 --prompt-cache " + cache);
  CHECK(j["prompt_cache"]["status"] == "miss");
  CHECK(j["prompt_cache"]["saved"] == true);
  CHECK(j["n_prefilled"] == ids1.size());
  REQUIRE(fs::exists(cache));

  // The extended prompt: only its new tokens are prefilled, the output is the cold run's.
  j = run_json(args2);
  CHECK(j["prompt_cache"]["status"] == "partial");
  CHECK(j["n_reused"] == ids1.size());
  CHECK(j["n_prefilled"] == ids2.size() - ids1.size());
  CHECK(j["n_prompt"] == ids2.size());
  CHECK(j["ids"] == cold["ids"]);
  CHECK(j["text"] == cold["text"]);
  // The cache now holds the longer prompt: nothing to prefill, the stored logits pick.
  j = run_json(args2);
  CHECK(j["prompt_cache"]["status"] == "hit");
  CHECK(j["prompt_cache"]["saved"] == false);
  CHECK(j["n_prefilled"] == 0);
  CHECK(j["ids"] == cold["ids"]);
  std::string out, err;
  REQUIRE(run2(kCli + " " + args2 + " --no-display-prompt", &out, &err) == 0);
  CHECK(out == cold["text"].get<std::string>() + "\n");
  CHECK(err.rfind("prompt: " + std::to_string(ids2.size()) + " tokens (0 prefilled, " +
                      std::to_string(ids2.size()) + " reused)",
                  0) == 0);

  // A prompt the cache does not start: a warning, a full prefill; -ro leaves the file alone.
  const std::string before = slurp(cache);
  REQUIRE(run2(kCli + " -p 'import os' -n 4 --json --prompt-cache-ro --prompt-cache " + cache,
               &out, &err) == 0);
  CHECK(err.rfind("warning: prompt cache " + cache + " not used: its " +
                      std::to_string(ids2.size()) + " token ids are not the start",
                  0) == 0);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK(json::parse(out)["prompt_cache"]["status"] == "rejected");
  CHECK(slurp(cache) == before);

  // Damaged files: one warning line, the right output, and the file is written afresh.
  for (const char* damage : {"flip", "truncate"}) {
    INFO(damage);
    std::string bytes = before;
    if (std::string(damage) == "flip") bytes[bytes.size() / 2] ^= 0x40;
    if (std::string(damage) == "truncate") bytes.resize(bytes.size() - 100);
    std::ofstream(cache, std::ios::binary | std::ios::trunc) << bytes;
    REQUIRE(run2(kCli + " " + args2 + " --json", &out, &err) == 0);
    CHECK(err.rfind("warning: prompt cache ", 0) == 0);
    CHECK(err.find("prefilling the whole prompt") != std::string::npos);
    CHECK(std::count(err.begin(), err.end(), '\n') == 1);
    j = json::parse(out);
    CHECK(j["prompt_cache"]["status"] == "rejected");
    CHECK(j["n_prefilled"] == ids2.size());
    CHECK(j["ids"] == cold["ids"]);
    CHECK(slurp(cache) == before);  // rewritten: the same prompt gives the same bytes
  }
  // A cache written for another model is refused the same way.
  const std::string other = write_model("cli.gguf", options(-1));
  fs::remove(cache);
  REQUIRE(run(kCli + " -m " + other + " --prompt-ids 1,2 -n 1 --json --prompt-cache " + cache,
              &out) == 0);
  REQUIRE(run2(kCli + " " + args2 + " --json", &out, &err) == 0);
  CHECK(err.find("saved with a different model") != std::string::npos);
  CHECK(json::parse(out)["ids"] == cold["ids"]);

  // A cache that cannot be written costs a warning, not the output.
  REQUIRE(run2(kCli + " -p " + quoted(p2) + " -n 16 --json --prompt-cache " +
                   (kTmp / "no-such-dir" / "c.cache").string(),
               &out, &err) == 0);
  CHECK(err.rfind("warning: cannot write ", 0) == 0);
  CHECK(err.find("the prompt cache is not saved") != std::string::npos);
  CHECK(json::parse(out)["ids"] == cold["ids"]);
  CHECK(json::parse(out)["prompt_cache"]["saved"] == false);

  CHECK(run2(kCli + " " + args2 + " --logits-out x.f32", &out, &err) == 1);
  CHECK(err.rfind("error: --logits-out needs the whole prompt prefilled", 0) == 0);
}

TEST_CASE("cli: --state-save then --state-load continues like one long run") {
  const std::string model_path = write_model("cli.gguf", options(-1));
  const std::string m = "-m " + model_path + " ";
  const std::string state = (kTmp / "seq.state").string();
  const json whole = run_json(m + "--prompt-ids " + kPromptArg + " -n 20");
  const json first = run_json(m + "--prompt-ids " + kPromptArg + " -n 8 --state-save " + state);
  CHECK(first["state_save"]["n_ids"] == kPrompt.size() + 8);
  // No prompt: generation goes on from the saved logits.
  const json rest = run_json(m + "--state-load " + state + " -n 12 < /dev/null");
  CHECK(rest["n_prompt"] == 0);
  auto ids = first["ids"].get<std::vector<int32_t>>();
  for (int32_t id : rest["ids"]) ids.push_back(id);
  CHECK(json(ids) == whole["ids"]);

  // With a prompt: it continues the saved sequence, like one run over everything.
  std::string all = kPromptArg;
  for (int32_t id : first["ids"]) {
    all += ',';
    all += std::to_string(id);
  }
  const json long_run = run_json(m + "--prompt-ids " + all + ",9,10 -n 6");
  const json cont = run_json(m + "--state-load " + state + " --prompt-ids 9,10 -n 6");
  CHECK(cont["n_prompt"] == 2);
  CHECK(cont["ids"] == long_run["ids"]);

  // The same with text on the bundled model.
  const std::string dstate = (kTmp / "demo.state").string();
  const json dwhole = run_json("-p " + quoted(kFib) + " -n 30 --ignore-eos");
  const json dfirst = run_json("-p " + quoted(kFib) + " -n 12 --ignore-eos --state-save " + dstate);
  const json drest = run_json("--state-load " + dstate + " -n 18 --ignore-eos < /dev/null");
  CHECK(dfirst["text"].get<std::string>() + drest["text"].get<std::string>() == dwhole["text"].get<std::string>());

  // Errors: a damaged or foreign state file is an error here, not a warning.
  std::string out, err;
  std::string bytes = slurp(state);
  bytes[bytes.size() - 20] ^= 1;
  std::ofstream(state, std::ios::binary | std::ios::trunc) << bytes;
  CHECK(run2(kCli + " " + m + "--state-load " + state + " -n 2 < /dev/null", &out, &err) == 1);
  CHECK(err == "error: " + state + ": checksum mismatch (the file is corrupt; remove it to start over)\n");
  CHECK(run2(kCli + " --state-load " + dstate + " " + m + "-n 2 < /dev/null", &out, &err) == 1);
  CHECK(err.find("saved with a different model") != std::string::npos);
  CHECK(run2(kCli + " --state-load " + dstate + " --prompt-cache x -n 2", &out, &err) == 1);
  CHECK(err.rfind("error: --prompt-cache and --state-load", 0) == 0);
}

TEST_CASE("cli: -i continues the sequence with each line; /reset starts over") {
  Demo d;
  const std::string l1 = "    return a + b", l2 = "import os";
  const std::string p = "def add(a, b):";
  // Each turn by hand: the prompt and 8 tokens; the first line (on a line of its own) and 8
  // more from the carried-over state; after /reset the second line starts a new sequence.
  const GenerateResult r0 = d.run(d.tok->encode(p), 8, true);
  const bool nl0 = !r0.text.empty() && r0.text.back() == '\n';
  const GenerateResult r1 = d.run(d.tok->encode((nl0 ? "" : "\n") + l1 + "\n", false), 8, false);
  const GenerateResult r2 = d.run(d.tok->encode(l2 + "\n"), 8, true);
  const auto end_line = [](const std::string& t) { return t.ends_with("\n") ? t : t + "\n"; };
  const std::string want = end_line(p + r0.text) + end_line(l1 + "\n" + r1.text) +
                           end_line(l2 + "\n" + r2.text);

  const std::string input = (kTmp / "lines.txt").string();
  std::ofstream(input, std::ios::binary) << l1 << "\n/reset\n" << l2 << "\n";
  std::string out, err;
  REQUIRE(run2(kCli + " -i -p " + quoted(p) + " -n 8 --ignore-eos < " + input, &out, &err) == 0);
  CHECK(out == want);
  CHECK(err.rfind("interactive: ", 0) == 0);
  CHECK(err.find("[reset: a new sequence starts]") != std::string::npos);
  CHECK(err.find("prompt: " + std::to_string(r0.n_prompt + r1.n_prompt + r2.n_prompt) +
                 " tokens") != std::string::npos);
  CHECK(err.find("generated: 24 tokens") != std::string::npos);

  // --state-save at the end of the session holds the sequence since /reset.
  const std::string state = (kTmp / "interactive.state").string();
  REQUIRE(run2(kCli + " -i -p " + quoted(p) + " -n 8 --ignore-eos --state-save " + state + " < " +
                   input,
               &out, &err) == 0);
  const SavedState s = read_state_file(state, StateFileExpect{});
  std::vector<int32_t> seq = d.tok->encode(l2 + "\n");
  seq.insert(seq.end(), r2.ids.begin(), r2.ids.end());
  CHECK(s.ids == seq);

  CHECK(run2(kCli + " -i --json < /dev/null", &out, &err) == 1);
  CHECK(err == "error: --json prints one object for one run; leave it out with -i\n");
  const std::string no_tok = write_model("cli.gguf", options(-1));
  CHECK(run2(kCli + " -m " + no_tok + " -i < /dev/null", &out, &err) == 1);
  CHECK(err == "error: -i needs a model with a tokenizer; this one has none\n");
}

TEST_CASE("cli: --help groups the options, --version, and flag errors say what to do") {
  std::string out, err;
  REQUIRE(run2(kCli + " --help", &out, &err) == 0);
  for (const char* group : {"Model:", "Prompt", "Generation:", "Sampling", "State:", "Output:"})
    CHECK(out.find(group) != std::string::npos);
  for (const char* flag : {"--top-k", "--min-p", "--typical", "--logit-bias", "--prompt-cache-ro",
                           "--state-load", "--no-display-prompt", "--stop", "--ignore-eos"})
    CHECK(out.find(flag) != std::string::npos);
  REQUIRE(run2(kCli + " --version", &out, &err) == 0);
  CHECK(out == std::string("mamba-cli ") + MAMBA_VERSION + "\n");
  CHECK(run2(kCli + " -p x --frobnicate", &out, &err) == 1);
  CHECK(err == "error: The following argument was not expected: --frobnicate (see mamba-cli --help)\n");
  CHECK(run2(kCli + " -p x -n many", &out, &err) == 1);
  CHECK(err.rfind("error: ", 0) == 0);
  CHECK(err.find("(see mamba-cli --help)\n") != std::string::npos);
  CHECK(std::count(err.begin(), err.end(), '\n') == 1);
  CHECK(run2(kCli + " -m " + (kTmp / "absent.gguf").string() + " -p x", &out, &err) == 1);
  CHECK(err.find("cannot open: no such file; give a GGUF model file with -m FILE") !=
        std::string::npos);
}
