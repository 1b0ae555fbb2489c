// mamba-cli: run a model on a prompt.
//
//   mamba-cli -m MODEL -p TEXT -n N                 text in, text out (needs the model's
//                                                   tokenizer, which the converter embeds)
//   mamba-cli -m MODEL --prompt-ids 1,2,3 -n N [--temp 0] [--json] [--ignore-eos]
//             [--logits-out FILE] [-t THREADS] [--device cpu]
//
// With --json, prints one JSON object: the generated ids (and their text when the model has
// a tokenizer), counts, finish reason, timings and the per-sequence state size.
// --logits-out writes the float32 logits of every prompt position, row-major
// (n_prompt, n_vocab), little-endian.
#include <CLI/CLI.hpp>
#include <climits>
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
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using namespace mamba;

namespace {

struct Args {
  std::string model, prompt, prompt_ids, logits_out, device = "cpu";
  bool have_prompt = false;
  int n_predict = 16, n_threads = 0;
  float temp = 0.0f;
  uint64_t seed = 0;
  bool json = false, ignore_eos = false;
};

std::vector<int32_t> parse_ids(const std::string& s) {
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

int run(const Args& a) {
  if (a.have_prompt == !a.prompt_ids.empty())
    fail("give the prompt either as -p TEXT or as --prompt-ids 1,2,3");
  if (a.n_predict < 0) fail("-n must be >= 0");
  const auto model = Model::load(a.model);
  for (const std::string& w : model->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const ModelConfig& c = model->config();

  // Text needs the tokenizer from the model file; ids do not, but use it to show text.
  std::unique_ptr<Tokenizer> tok = tokenizer_from_gguf(model->gguf());
  std::vector<int32_t> prompt;
  std::string prompt_text = a.prompt;
  if (a.have_prompt) {
    if (!tok) fail("this model has no tokenizer; give the prompt with --prompt-ids");
    // The tokenizers repair ill-formed UTF-8 as their references do; say so, since the model
    // then sees U+FFFD where the user's bytes were.
    if (!utf8::is_valid(prompt_text)) {
      std::fprintf(stderr, "warning: the prompt is not valid UTF-8; ill-formed bytes become U+FFFD\n");
      prompt_text = utf8::repair(prompt_text, tok->utf8_repair());
    }
    prompt = tok->encode(prompt_text);
  } else {
    prompt = parse_ids(a.prompt_ids);
  }
  if (prompt.empty()) fail("the prompt is empty");
  for (int32_t id : prompt)
    if (id < 0 || id >= c.n_vocab)
      fail("prompt id ", id, " is out of range (n_vocab = ", c.n_vocab, ")");

  BackendOptions bo;
  bo.device = a.device;
  bo.n_threads = a.n_threads;
  const auto backend = make_backend(*model, bo);

  GenerateOptions go;
  go.n_predict = a.n_predict;
  go.temp = a.temp;
  go.seed = a.seed;
  go.eos_id = model->eos_id;
  go.ignore_eos = a.ignore_eos;
  go.prompt_logits = !a.logits_out.empty();
  // Plain text mode streams the continuation as it is generated.
  std::unique_ptr<StreamDecoder> stream;
  if (!a.json && tok) {
    std::cout << (a.have_prompt ? prompt_text : tok->decode(prompt)) << std::flush;
    stream = std::make_unique<StreamDecoder>(*tok, false, /*text_start=*/false);
    go.on_token = [&](int32_t id) { std::cout << stream->feed(id) << std::flush; };
  }
  const GenerateResult r = generate(*backend, 0, prompt, go);

  if (!a.logits_out.empty()) {
    std::ofstream f(a.logits_out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(r.prompt_logits.data()),
            std::streamsize(r.prompt_logits.size() * sizeof(float)));
    if (!f) fail("cannot write ", a.logits_out);
  }

  const double prompt_tps = r.prompt_ms > 0 ? 1000.0 * double(prompt.size()) / r.prompt_ms : 0;
  const double predict_tps = r.predict_ms > 0 ? 1000.0 * r.n_decode / r.predict_ms : 0;
  if (a.json) {
    nlohmann::json j;
    j["ids"] = r.ids;
    if (tok) j["text"] = tok->decode(r.ids);
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
    if (stream) {
      std::cout << stream->finish() << std::endl;
    } else {
      for (size_t i = 0; i < r.ids.size(); i++) std::cout << (i ? " " : "") << r.ids[i];
      std::cout << std::endl;
    }
    std::fprintf(stderr,
                 "prompt: %zu tokens, %.2f ms (%.1f tok/s); generated: %zu tokens, %.2f ms "
                 "(%.1f tok/s); %s\n",
                 prompt.size(), r.prompt_ms, prompt_tps, r.ids.size(), r.predict_ms, predict_tps,
                 r.finish_reason.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-cli: run a Mamba model on a prompt"};
  Args a;
  a.model = MAMBA_DEFAULT_MODEL;
  app.add_option("-m,--model", a.model, "GGUF model file (default: the bundled demo model)");
  CLI::Option* p = app.add_option("-p,--prompt", a.prompt, "prompt text");
  app.add_option("--prompt-ids", a.prompt_ids, "comma-separated prompt token ids");
  app.add_option("-n,--n-predict", a.n_predict, "number of tokens to generate");
  app.add_option("--temp", a.temp, "sampling temperature; 0 = greedy (default)");
  app.add_option("--seed", a.seed, "random seed for sampling");
  app.add_flag("--json", a.json, "print one JSON object with ids and timings");
  app.add_flag("--ignore-eos", a.ignore_eos, "never stop at (or pick) the end-of-sequence token");
  app.add_option("--logits-out", a.logits_out, "write float32 logits of every prompt position");
  app.add_option("-t,--threads", a.n_threads, "CPU threads (default: all cores)");
  app.add_option("--device", a.device, "cpu or cuda");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  a.have_prompt = p->count() > 0;
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
