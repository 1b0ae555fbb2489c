// mamba-cli's scripting interface, run as a process on random models.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/generate.h"
#include "model/model.h"
#include "model/random_model.h"
#include "tokenizer/tokenizer.h"

using namespace mamba;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "cli";
const std::string kCli = (fs::path(MAMBA_BIN_DIR) / "mamba-cli").string();

// Runs a shell command; returns the exit status (128 + signal when killed) and its output.
int run(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

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
  fs::create_directories(kTmp);
  const std::string path = (kTmp / name).string();
  write_random_model(o, path);
  return path;
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
    std::ifstream in(model_path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
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
