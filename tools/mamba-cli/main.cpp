// mamba-cli: run a model on token ids.
//
//   mamba-cli -m MODEL --prompt-ids 1,2,3 -n N [--temp 0] [--json] [--ignore-eos]
//             [--logits-out FILE] [-t THREADS] [--device cpu]
//
// With --json, prints one JSON object: the generated ids, counts, finish reason, timings and
// the per-sequence state size. --logits-out writes the float32 logits of every prompt
// position, row-major (n_prompt, n_vocab), little-endian.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "engine/generate.h"
#include "model/model.h"

using namespace mamba;

static std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) fail("--prompt-ids '", s, "' has an empty item");
    item = item.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < INT32_MIN || v > INT32_MAX)
      fail("--prompt-ids: '", item, "' is not a token id");
    ids.push_back(int32_t(v));
  }
  return ids;
}

static int run(const std::string& model_path, const std::string& prompt_ids, int n_predict,
               float temp, uint64_t seed, bool json, bool ignore_eos, const std::string& logits_out,
               int n_threads, const std::string& device) {
  const std::vector<int32_t> prompt = parse_ids(prompt_ids);
  if (prompt.empty()) fail("the prompt is empty");
  if (n_predict < 0) fail("-n must be >= 0");

  const auto model = Model::load(model_path);
  const ModelConfig& c = model->config();
  for (int32_t id : prompt)
    if (id < 0 || id >= c.n_vocab)
      fail("prompt id ", id, " is out of range (n_vocab = ", c.n_vocab, ")");

  BackendOptions bo;
  bo.device = device;
  bo.n_threads = n_threads;
  const auto backend = make_backend(*model, bo);

  GenerateOptions go;
  go.n_predict = n_predict;
  go.temp = temp;
  go.seed = seed;
  go.eos_id = model->eos_id;
  go.ignore_eos = ignore_eos;
  go.prompt_logits = !logits_out.empty();
  const GenerateResult r = generate(*backend, 0, prompt, go);

  if (!logits_out.empty()) {
    std::ofstream f(logits_out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(r.prompt_logits.data()),
            std::streamsize(r.prompt_logits.size() * sizeof(float)));
    if (!f) fail("cannot write ", logits_out);
  }

  const double prompt_tps = r.prompt_ms > 0 ? 1000.0 * double(prompt.size()) / r.prompt_ms : 0;
  const double predict_tps = r.predict_ms > 0 ? 1000.0 * r.n_decode / r.predict_ms : 0;
  if (json) {
    nlohmann::json j;
    j["ids"] = r.ids;
    j["n_prompt"] = prompt.size();
    j["n_predict"] = r.ids.size();
    j["finish_reason"] = r.finish_reason;
    j["timings"] = {{"prompt_ms", r.prompt_ms},
                    {"predict_ms", r.predict_ms},
                    {"prompt_tok_s", prompt_tps},
                    {"predict_tok_s", predict_tps}};
    j["state_bytes"] = backend->state_bytes();
    std::cout << j.dump() << std::endl;
  } else {
    for (size_t i = 0; i < r.ids.size(); i++) std::cout << (i ? " " : "") << r.ids[i];
    std::cout << std::endl;
    std::fprintf(stderr,
                 "prompt: %zu tokens, %.2f ms (%.1f tok/s); generated: %zu tokens, %.2f ms (%.1f "
                 "tok/s); %s\n",
                 prompt.size(), r.prompt_ms, prompt_tps, r.ids.size(), r.predict_ms, predict_tps,
                 r.finish_reason.c_str());
  }
  return 0;
}

int main(int argc, char** argv) {
  CLI::App app{"mamba-cli: run a Mamba model on token ids"};
  std::string model_path, prompt_ids, logits_out, device = "cpu";
  int n_predict = 16, n_threads = 0;
  float temp = 0.0f;
  uint64_t seed = 0;
  bool json = false, ignore_eos = false;
  app.add_option("-m,--model", model_path, "GGUF model file")->required();
  app.add_option("--prompt-ids", prompt_ids, "comma-separated prompt token ids")->required();
  app.add_option("-n,--n-predict", n_predict, "number of tokens to generate");
  app.add_option("--temp", temp, "sampling temperature; 0 = greedy (default)");
  app.add_option("--seed", seed, "random seed for sampling");
  app.add_flag("--json", json, "print one JSON object with ids and timings");
  app.add_flag("--ignore-eos", ignore_eos, "never stop at (or pick) the end-of-sequence token");
  app.add_option("--logits-out", logits_out, "write float32 logits of every prompt position");
  app.add_option("-t,--threads", n_threads, "CPU threads (default: all cores)");
  app.add_option("--device", device, "cpu or cuda");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  try {
    return run(model_path, prompt_ids, n_predict, temp, seed, json, ignore_eos, logits_out,
               n_threads, device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
