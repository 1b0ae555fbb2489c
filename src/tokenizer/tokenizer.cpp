// Tokenizer base behaviour and the loaders that pick an implementation for a file, a
// directory or GGUF metadata.
#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "gguf/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/sentencepiece.h"
#include "tokenizer/stream_decoder.h"

namespace mamba {

namespace fs = std::filesystem;
using nlohmann::json;

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::Normal:
      return "normal";
    case TokenType::Unknown:
      return "unknown";
    case TokenType::Control:
      return "control";
    case TokenType::UserDefined:
      return "user_defined";
    case TokenType::Unused:
      return "unused";
    case TokenType::Byte:
      return "byte";
  }
  return "?";
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool show_special) const {
  // Whole-sequence decoding is streaming decoding run to the end, so the two always agree.
  StreamDecoder decoder(*this, show_special);
  std::string out;
  for (int32_t id : ids) decoder.feed(id, out);
  decoder.finish(out);
  return out;
}

void Tokenizer::add_special_tokens(std::vector<int32_t>& ids) const {
  if (specials_.add_bos && specials_.bos >= 0) ids.insert(ids.begin(), specials_.bos);
  if (specials_.add_eos && specials_.eos >= 0) ids.push_back(specials_.eos);
}

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!in && !in.eof()) fail("cannot read ", path.string());
  return ss.str();
}

json parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(what, ": invalid JSON: ", e.what());
  }
}

std::unique_ptr<Tokenizer> bpe_from_hf_json_text(const std::string& text, const std::string& what) {
  const json j = parse_json(text, what);
  try {
    return std::make_unique<BpeTokenizer>(bpe_config_from_hf_json(j));
  } catch (const json::exception& e) {
    fail(what, ": unexpected tokenizer.json layout: ", e.what());
  }
}

// tokenizer_config.json (transformers) beside the tokenizer: its add_bos_token / add_eos_token
// and bos_token / eos_token decide what encode(add_special = true) adds.
void apply_tokenizer_config(const fs::path& path, Tokenizer& tok) {
  const json cfg = parse_json(read_file(path), path.string());
  SpecialTokens s = tok.specials();
  auto token_id = [&](const char* key, int32_t current) {
    const auto it = cfg.find(key);
    if (it == cfg.end()) return current;
    std::string content;
    if (it->is_string())
      content = it->get<std::string>();
    else if (it->is_object() && it->contains("content"))
      content = it->at("content").get<std::string>();
    else
      return current;
    const int32_t id = tok.token_to_id(content);
    return id >= 0 ? id : current;
  };
  s.bos = token_id("bos_token", s.bos);
  s.eos = token_id("eos_token", s.eos);
  s.unk = token_id("unk_token", s.unk);
  s.pad = token_id("pad_token", s.pad);
  if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean())
    s.add_bos = cfg["add_bos_token"].get<bool>();
  if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean())
    s.add_eos = cfg["add_eos_token"].get<bool>();
  tok.set_specials(s);
}

std::unique_ptr<Tokenizer> load_directory(const fs::path& dir) {
  std::unique_ptr<Tokenizer> tok;
  // The SentencePiece model is the original where both exist (a Mistral repository's
  // tokenizer.json is a conversion of it).
  for (const char* name : {"tokenizer.model", "tokenizer.model.v3"}) {
    if (!tok && fs::is_regular_file(dir / name)) {
      tok = std::make_unique<SentencePieceTokenizer>(read_file(dir / name));
    }
  }
  if (!tok && fs::is_regular_file(dir / "tokenizer.json")) {
    tok =
        bpe_from_hf_json_text(read_file(dir / "tokenizer.json"), (dir / "tokenizer.json").string());
  }
  if (!tok)
    fail(dir.string(),
         ": no tokenizer.model, tokenizer.model.v3 or tokenizer.json in this directory");
  if (fs::is_regular_file(dir / "tokenizer_config.json"))
    apply_tokenizer_config(dir / "tokenizer_config.json", *tok);
  return tok;
}

// Special-token ids and flags from GGUF keys override what the vocabulary itself implies.
void apply_gguf_specials(const gguf::File& file, Tokenizer& tok) {
  SpecialTokens s = tok.specials();
  auto id_key = [&](const char* key, int32_t current) -> int32_t {
    if (!file.has(key)) return current;
    const int64_t id = file.get_int(key);
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) {
      fail("GGUF ", key, " = ", id, " is outside the vocabulary of ", tok.vocab_size());
    }
    return static_cast<int32_t>(id);
  };
  s.bos = id_key("tokenizer.ggml.bos_token_id", s.bos);
  s.eos = id_key("tokenizer.ggml.eos_token_id", s.eos);
  s.unk = id_key("tokenizer.ggml.unknown_token_id", s.unk);
  s.pad = id_key("tokenizer.ggml.padding_token_id", s.pad);
  s.add_bos = file.get_bool("tokenizer.ggml.add_bos_token", s.add_bos);
  s.add_eos = file.get_bool("tokenizer.ggml.add_eos_token", s.add_eos);
  tok.set_specials(s);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const gguf::File& file) {
  if (!file.has("tokenizer.ggml.model")) return nullptr;
  const std::string model = file.get_str("tokenizer.ggml.model");
  if (model == "none" || model == "no_vocab") return nullptr;

  const size_t n_tokens =
      file.has("tokenizer.ggml.tokens") ? file.find("tokenizer.ggml.tokens")->array_size() : 0;
  std::unique_ptr<Tokenizer> tok;
  if (model == "gpt2") {
    if (const gguf::Value* j = file.find("tokenizer.huggingface.json")) {
      // Our converter keeps the original tokenizer.json: the exact pipeline and flags.
      if (j->type != gguf::Type::STRING) fail("GGUF tokenizer.huggingface.json is not a string");
      const char* what = "GGUF tokenizer.huggingface.json";
      BpeConfig cfg;
      try {
        cfg = bpe_config_from_hf_json(parse_json(j->s, what));
      } catch (const json::exception& e) {
        // As for a tokenizer.json file: a missing or mistyped field is a file error.
        fail(what, ": unexpected tokenizer.json layout: ", e.what());
      }
      // The token list may be padded to the model's embedding size.
      while (cfg.tokens.size() < n_tokens) {
        cfg.tokens.push_back("[PAD" + std::to_string(cfg.tokens.size()) + "]");
        cfg.types.push_back(TokenType::Unused);
      }
      tok = std::make_unique<BpeTokenizer>(std::move(cfg));
    } else {
      if (n_tokens == 0)
        fail("GGUF tokenizer.ggml.model is gpt2 but there is no tokenizer.ggml.tokens");
      tok = std::make_unique<BpeTokenizer>(bpe_config_from_gguf(file));
    }
  } else if (model == "llama") {
    if (const gguf::Value* m = file.find("tokenizer.sentencepiece.model")) {
      // Our converter embeds tokenizer.model itself.
      if (m->type != gguf::Type::ARRAY ||
          (m->elem != gguf::Type::UINT8 && m->elem != gguf::Type::INT8)) {
        fail("GGUF tokenizer.sentencepiece.model is not an array of bytes");
      }
      tok = std::make_unique<SentencePieceTokenizer>(m->bytes, n_tokens);
    } else {
      if (n_tokens == 0)
        fail("GGUF tokenizer.ggml.model is llama but there is no tokenizer.ggml.tokens");
      tok = sentencepiece_from_gguf_lists(file);
    }
  } else {
    fail("GGUF tokenizer.ggml.model '", model, "' is not supported (supported: gpt2, llama)");
  }
  apply_gguf_specials(file, *tok);
  return tok;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  const fs::path p(path);
  if (fs::is_directory(p)) return load_directory(p);
  if (!fs::is_regular_file(p)) fail("tokenizer not found: ", path);

  std::string data = read_file(p);
  if (data.compare(0, 4, "GGUF") == 0) {
    data.clear();
    const auto file = gguf::File::open(path);
    auto tok = tokenizer_from_gguf(*file);
    if (!tok) fail(path, ": this GGUF file has no tokenizer vocabulary");
    return tok;
  }
  const size_t first = data.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && data[first] == '{') return bpe_from_hf_json_text(data, path);
  try {
    return std::make_unique<SentencePieceTokenizer>(data);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
}

}  // namespace mamba
