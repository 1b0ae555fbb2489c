// mamba-perplexity: perplexity of a text file under a model (see src/engine/perplexity.h for
// the protocol: chunks of --ctx tokens, each from a fresh state with BOS in front).
//
//   mamba-perplexity -m model.gguf -f text.txt [--ctx 512] [--chunks N] [-t THREADS]
//                    [--device cpu|cuda] [--json]
//
// Progress goes to stderr as llama-perplexity prints it ([chunk]running ppl), the final
// estimate to stdout; --json prints one JSON object instead.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "backend/backend.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "engine/perplexity.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using namespace mamba;

struct Args {
  std::string model, file, device = "cpu";
  int ctx = 512, chunks = 0, n_threads = 0;
  bool json = false;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("cannot read ", path);
  return ss.str();
}

int run(const Args& a) {
  if (a.ctx < 1) fail("--ctx must be at least 1");
  if (a.chunks < 0) fail("--chunks must be >= 0");
  const auto model = Model::load(a.model);
  for (const std::string& w : model->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const auto tok = tokenizer_from_gguf(model->gguf());
  if (!tok) fail("this model has no tokenizer, so it cannot read text");

  std::string text = read_file(a.file);
  if (!utf8::is_valid(text)) {
    std::fprintf(stderr, "warning: the text is not valid UTF-8; ill-formed bytes become U+FFFD\n");
    text = utf8::repair(text, tok->utf8_repair());
  }
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const std::vector<int32_t> ids = tok->encode(text, /*add_special=*/false);
  const double tok_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();

  PerplexityOptions o;
  o.ctx = a.ctx;
  o.max_chunks = a.chunks;
  o.bos_id = tok->specials().add_bos ? tok->bos_id() : -1;
  size_t n_chunks = (ids.size() + size_t(a.ctx) - 1) / size_t(a.ctx);
  if (a.chunks > 0) n_chunks = std::min(n_chunks, size_t(a.chunks));

  BackendOptions bo;
  bo.device = a.device;
  bo.n_threads = a.n_threads;
  const auto backend = make_backend(*model, bo);

  if (!a.json) {
    std::fprintf(stderr, "perplexity: %zu tokens in %s, tokenization took %.1f ms\n", ids.size(),
                 a.file.c_str(), tok_ms);
    std::fprintf(stderr, "perplexity: calculating perplexity over %zu chunks, n_ctx=%d, %s\n",
                 n_chunks, a.ctx, o.bos_id >= 0 ? "BOS in front of each" : "no BOS");
    const auto t_start = clock::now();
    o.on_chunk = [&](int chunk, double, double running_ppl) {
      if (chunk == 0) {
        const double s = std::chrono::duration<double>(clock::now() - t_start).count();
        std::fprintf(stderr, "perplexity: %.2f seconds per pass - ETA %.2f minutes\n", s,
                     s * double(n_chunks) / 60.0);
      }
      std::fprintf(stderr, "[%d]%.4f,", chunk + 1, running_ppl);
      std::fflush(stderr);
    };
  }
  const PerplexityResult r = perplexity(*backend, ids, o);

  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["file"] = a.file;
    j["ctx"] = a.ctx;
    j["bos"] = o.bos_id >= 0;
    j["n_tokens"] = ids.size();
    j["n_chunks"] = r.n_chunks;
    j["n_scored"] = r.n_scored;
    j["nll"] = r.nll;
    j["nll_stderr"] = r.nll_stderr;
    j["ppl"] = r.ppl;
    j["chunk_nll"] = r.chunk_nll;
    j["seconds"] = r.seconds;
    std::cout << j.dump() << std::endl;
  } else {
    std::fprintf(stderr, "\n");
    std::printf("Final estimate: PPL = %.4f +/- %.4f  (%zu tokens scored, mean NLL %.6f)\n", r.ppl,
                r.ppl * r.nll_stderr, r.n_scored, r.nll);
    std::fprintf(stderr, "perplexity: %.2f s, %.1f tokens/s\n", r.seconds,
                 r.seconds > 0 ? double(r.n_scored + r.n_chunks) / r.seconds : 0.0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-perplexity: perplexity of a text file under a model"};
  Args a;
  app.add_option("-m,--model", a.model, "GGUF model file")->required();
  app.add_option("-f,--file", a.file, "text file to score")->required();
  app.add_option("--ctx", a.ctx, "tokens per chunk, each scored from a fresh state (default 512)");
  app.add_option("--chunks", a.chunks, "score at most this many chunks (default: all)");
  app.add_option("-t,--threads", a.n_threads, "CPU threads (default: all cores)");
  app.add_option("--device", a.device, "cpu or cuda");
  app.add_flag("--json", a.json, "print one JSON object with the result");
  return tool_main(app, argc, argv, [&] { return run(a); });
}
