// mamba-tokenize: text -> token ids and back, with a model's own tokenizer.
//
//   mamba-tokenize -m model.gguf -p "Hello world"          id<TAB>piece per line
//   mamba-tokenize --tokenizer tokenizer.json -f in.txt --json   [12092,1533]
//   mamba-tokenize --tokenizer DIR --decode 12092,1533     Hello world (exact bytes, no newline)
//   mamba-tokenize --tokenizer tokenizer.model --bench big.txt   encoding speed
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/tool_main.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace {

using mamba::fail;

std::string read_all(std::istream& in, const std::string& what) {
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("cannot read ", what);
  return ss.str();
}

std::string read_file(const std::string& path) {
  if (path == "-") return read_all(std::cin, "standard input");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path);
  return read_all(in, path);
}

// "1,2,3", "1 2 3" or "[1, 2, 3]".
std::vector<int32_t> parse_ids(const std::string& text, const mamba::Tokenizer& tok) {
  std::vector<int32_t> ids;
  std::string number;
  auto flush = [&] {
    if (number.empty()) return;
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(number, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != number.size()) fail("--decode: '", number, "' is not a token id");
    if (v < 0 || static_cast<size_t>(v) >= tok.vocab_size()) {
      fail("--decode: token id ", number, " is outside the vocabulary (", tok.vocab_size(),
           " ids)");
    }
    ids.push_back(static_cast<int32_t>(v));
    number.clear();
  };
  for (char c : text) {
    if (c == ',' || c == '[' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      flush();
    } else {
      number.push_back(c);
    }
  }
  flush();
  return ids;
}

// A token's bytes made readable on one line: escapes for controls, backslash and bytes that
// are not (complete) UTF-8.
std::string printable(std::string_view bytes) {
  std::string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    char32_t cp = 0;
    const size_t len = b < 0x80 ? 1 : mamba::utf8::decode(bytes.substr(i), &cp);
    if (b == '\\')
      out += "\\\\";
    else if (b == '\n')
      out += "\\n";
    else if (b == '\t')
      out += "\\t";
    else if (b == '\r')
      out += "\\r";
    else if (len == 0 || b < 0x20 || b == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", b);
      out += hex;
    } else {
      out.append(bytes.substr(i, len));
    }
    i += len == 0 ? 1 : len;
  }
  return out;
}

void bench(const mamba::Tokenizer& tok, const std::string& path, int runs, bool add_special) {
  const std::string text = read_file(path);
  using clock = std::chrono::steady_clock;
  double best = 0, first = 0;
  size_t n_tokens = 0;
  for (int r = 0; r < runs; ++r) {
    const auto start = clock::now();
    n_tokens = tok.encode(text, add_special).size();
    const double s = std::chrono::duration<double>(clock::now() - start).count();
    if (r == 0) first = best = s;
    best = std::min(best, s);
  }
  const double mb = static_cast<double>(text.size()) / 1e6;
  std::printf("%s: %zu bytes -> %zu tokens\n", path.c_str(), text.size(), n_tokens);
  std::printf("first run (cold word cache): %.3f s  %.2f MB/s\n", first, mb / first);
  if (runs > 1)
    std::printf("best of %d runs:             %.3f s  %.2f MB/s\n", runs, best, mb / best);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mamba-tokenize: encode text to token ids, or decode ids to text"};
  std::string model_path, tokenizer_path, prompt, file, decode_ids, bench_file;
  bool json_out = false, no_special = false, show_special = false, info = false;
  bool add_bos = false, no_bos = false, add_eos = false, no_eos = false;
  int bench_runs = 5;

  auto* model_opt = app.add_option("-m,--model", model_path, "GGUF model whose vocabulary to use");
  auto* tok_opt =
      app.add_option("--tokenizer", tokenizer_path,
                     "tokenizer.json, tokenizer.model, GGUF file, or HF model directory");
  model_opt->excludes(tok_opt);
  auto* prompt_opt = app.add_option("-p,--prompt", prompt, "text to encode");
  auto* file_opt =
      app.add_option("-f,--file", file, "read the text from FILE ('-': standard input)");
  prompt_opt->excludes(file_opt);
  app.add_flag("--json", json_out,
               "print the ids as one JSON array (with --decode: the text as a JSON string)");
  app.add_flag("--no-special", no_special, "add no BOS/EOS");
  auto* add_bos_opt =
      app.add_flag("--add-bos", add_bos, "add BOS whatever the tokenizer config says");
  app.add_flag("--no-bos", no_bos, "add no BOS")->excludes(add_bos_opt);
  auto* add_eos_opt =
      app.add_flag("--add-eos", add_eos, "add EOS whatever the tokenizer config says");
  app.add_flag("--no-eos", no_eos, "add no EOS")->excludes(add_eos_opt);
  auto* decode_opt = app.add_option("--decode", decode_ids,
                                    "decode ids ('1,2,3' or '[1,2,3]') and print the text exactly, "
                                    "without an added newline");
  decode_opt->excludes(prompt_opt)->excludes(file_opt);
  app.add_flag("--show-special", show_special, "with --decode: include special tokens' text");
  app.add_option("--bench", bench_file, "time encoding this file (MB/s)")->excludes(decode_opt);
  app.add_option("--bench-runs", bench_runs, "encoding runs for --bench")
      ->check(CLI::PositiveNumber);
  app.add_flag("--info", info, "print the tokenizer's kind, vocabulary size and special tokens");
  return mamba::tool_main(app, argc, argv, [&] {
    if (model_path.empty() && tokenizer_path.empty())
      fail("give -m MODEL.gguf or --tokenizer PATH");
    const auto tok = mamba::load_tokenizer(model_path.empty() ? tokenizer_path : model_path);
    if (add_bos) tok->set_add_bos(true);
    if (no_bos) tok->set_add_bos(false);
    if (add_eos) tok->set_add_eos(true);
    if (no_eos) tok->set_add_eos(false);

    if (info) {
      const auto& s = tok->specials();
      std::printf(
          "kind: %s\nvocab size: %zu\nbos: %d (add: %s)\neos: %d (add: %s)\nunk: %d\npad: %d\n",
          std::string(tok->kind()).c_str(), tok->vocab_size(), s.bos, s.add_bos ? "yes" : "no",
          s.eos, s.add_eos ? "yes" : "no", s.unk, s.pad);
      return 0;
    }
    if (!bench_file.empty()) {
      bench(*tok, bench_file, bench_runs, !no_special);
      return 0;
    }
    if (!decode_opt->empty()) {
      const std::string text = tok->decode(parse_ids(decode_ids, *tok), show_special);
      if (json_out) {
        std::cout << nlohmann::json(text).dump() << "\n";
      } else {
        std::cout << text;
      }
      return std::cout.flush() ? 0 : 1;
    }

    const std::string text = !prompt_opt->empty() ? prompt : read_file(file.empty() ? "-" : file);
    const std::vector<int32_t> ids = tok->encode(text, !no_special);
    if (json_out) {
      std::cout << nlohmann::json(ids).dump() << "\n";
    } else {
      for (int32_t id : ids) std::cout << id << '\t' << printable(tok->token_to_piece(id)) << '\n';
    }
    return std::cout.flush() ? 0 : 1;
  });
}
