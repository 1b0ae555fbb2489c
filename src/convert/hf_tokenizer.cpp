#include "convert/hf_tokenizer.h"

#include <sentencepiece_processor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "common/error.h"
#include "convert/files.h"
#include "gguf/gguf.h"

namespace mamba::convert {

using json = nlohmann::json;

namespace {

enum TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

constexpr uint64_t kMaxTokenizerBytes = 512u << 20;

// The vocabulary as GGUF stores it: one entry per embedding row.
struct Vocab {
  std::vector<std::string> tokens;  // (n_vocab)
  std::vector<int32_t> types;       // (n_vocab)
  std::vector<float> scores;        // (n_vocab) SentencePiece only
  std::vector<bool> used;           // (n_vocab) false for padding rows
  int64_t n_tokens = 0;             // 1 + the largest id the tokenizer uses

  explicit Vocab(int64_t n_vocab)
      : tokens(size_t(n_vocab)), types(size_t(n_vocab), kUnused), used(size_t(n_vocab), false) {}

  void set(int64_t id, const std::string& text, int32_t type) {
    tokens[size_t(id)] = text;
    types[size_t(id)] = type;
    used[size_t(id)] = true;
    if (id + 1 > n_tokens) n_tokens = id + 1;
  }
  void fill_padding() {
    for (size_t id = 0; id < tokens.size(); id++) {
      if (!used[id]) {
        tokens[id] = "[PAD" + std::to_string(id) + "]";
        types[id] = kUnused;
      }
    }
  }
  std::optional<int64_t> find(const std::string& text) const {
    for (size_t id = 0; id < tokens.size(); id++)
      if (used[id] && tokens[id] == text) return int64_t(id);
    return std::nullopt;
  }
};

[[noreturn]] void too_many_tokens(const std::string& file, int64_t id, int64_t n_vocab) {
  fail(file, ": token id ", id, " does not fit the model's vocabulary of ", n_vocab,
       " embedding rows");
}

// tokenizer_config.json, when present (optional; a malformed one is an error).
json load_tokenizer_config(const std::string& dir) {
  const std::string path = join_path(dir, "tokenizer_config.json");
  if (!is_regular_file(path)) return json::object();
  json j;
  try {
    j = json::parse(python_json_to_strict(read_whole_file(path, 64u << 20)));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(path, ": not a JSON object");
  return j;
}

// bos_token etc. are a string or an AddedToken object {"content": ...}.
std::optional<std::string> special_token_text(const json& tc, const char* key) {
  auto it = tc.find(key);
  if (it == tc.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

// ---- byte-level BPE from tokenizer.json ---------------------------------------------------

// llama.cpp's "olmo" pre-tokenizer is GPT-NeoX's: a plain ByteLevel split with the GPT-2
// regex and no prefix space. Anything else is written as "default" (the exact pipeline is
// in tokenizer.huggingface.json regardless).
std::string pre_tokenizer_name(const json& tok) {
  auto pre = tok.find("pre_tokenizer");
  if (pre == tok.end() || !pre->is_object()) return "default";
  const bool byte_level = pre->value("type", "") == "ByteLevel";
  const bool prefix_space =
      pre->contains("add_prefix_space") && (*pre)["add_prefix_space"].is_boolean()
          ? (*pre)["add_prefix_space"].get<bool>()
          : true;  // the tokenizers library's default
  const bool regex = !(pre->contains("use_regex") && (*pre)["use_regex"] == false);
  return byte_level && !prefix_space && regex ? "olmo" : "default";
}

Vocab load_bpe(const std::string& path, const std::string& text, int64_t n_vocab, gguf::Writer& w,
               std::optional<int64_t>* unk_id) {
  json tok;
  try {
    tok = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object())
    fail(path, ": no \"model\" object");
  const json& model = tok["model"];
  const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
  if (type != "BPE") fail(path, ": tokenizer model type '", type, "' is not supported (only BPE)");
  if (!model.contains("vocab") || !model["vocab"].is_object())
    fail(path, ": model.vocab is not an object");

  Vocab v(n_vocab);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
      fail(path, ": token '", it.key(), "' has an invalid id ", it.value().dump());
    const int64_t id = it.value().get<int64_t>();
    if (id >= n_vocab) too_many_tokens(path, id, n_vocab);
    if (v.used[size_t(id)])
      fail(path, ": id ", id, " is used by both '", v.tokens[size_t(id)], "' and '", it.key(), "'");
    v.set(id, it.key(), kNormal);
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    if (auto id = v.find(model["unk_token"].get<std::string>())) {
      v.types[size_t(*id)] = kUnknown;
      *unk_id = id;
    }
  }
  // Added tokens override the model's entry for their id.
  if (tok.contains("added_tokens") && !tok["added_tokens"].is_null()) {
    if (!tok["added_tokens"].is_array()) fail(path, ": added_tokens is not a list");
    for (const auto& a : tok["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
          a["id"].get<int64_t>() < 0 || !a.contains("content") || !a["content"].is_string())
        fail(path, ": malformed added token ", a.dump());
      const int64_t id = a["id"].get<int64_t>();
      if (id >= n_vocab) too_many_tokens(path, id, n_vocab);
      const bool special = a.value("special", false);
      const bool is_unk = v.used[size_t(id)] && v.types[size_t(id)] == kUnknown;
      v.set(id, a["content"].get<std::string>(),
            is_unk    ? kUnknown
            : special ? kControl
                      : kUserDefined);
    }
  }

  // Merges are "a b" strings (older files) or ["a", "b"] pairs (newer files).
  std::vector<std::string> merges;
  if (model.contains("merges")) {
    if (!model["merges"].is_array()) fail(path, ": model.merges is not a list");
    merges.reserve(model["merges"].size());
    for (const auto& m : model["merges"]) {
      if (m.is_string() && m.get<std::string>().find(' ') != std::string::npos) {
        merges.push_back(m.get<std::string>());
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
      } else {
        fail(path, ": malformed merge ", m.dump());
      }
    }
  }

  v.fill_padding();
  w.set_str("tokenizer.ggml.model", "gpt2");
  w.set_str("tokenizer.ggml.pre", pre_tokenizer_name(tok));
  w.set_str_array("tokenizer.ggml.tokens", v.tokens);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_str_array("tokenizer.ggml.merges", merges);
  w.set_str("tokenizer.huggingface.json", text);
  return v;
}

// ---- SentencePiece from tokenizer.model ---------------------------------------------------

Vocab load_sentencepiece(const std::string& path, const json& tc, int64_t n_vocab, gguf::Writer& w,
                         sentencepiece::SentencePieceProcessor& sp) {
  const std::string bytes = read_whole_file(path, kMaxTokenizerBytes);
  const auto status = sp.LoadFromSerializedProto(bytes);
  if (!status.ok()) fail(path, ": not a valid SentencePiece model (", status.ToString(), ")");
  const int n = sp.GetPieceSize();
  if (n > n_vocab) too_many_tokens(path, n - 1, n_vocab);

  Vocab v(n_vocab);
  v.scores.assign(size_t(n_vocab), -1000.0f);
  for (int id = 0; id < n; id++) {
    int32_t type = kNormal;
    if (sp.IsUnknown(id))
      type = kUnknown;
    else if (sp.IsControl(id))
      type = kControl;
    else if (sp.IsUnused(id))
      type = kUnused;
    else if (sp.IsByte(id))
      type = kByte;
    v.set(id, sp.IdToPiece(id), type);
    v.scores[size_t(id)] = sp.GetScore(id);
  }

  // tokenizer_config.json may declare tokens beyond the SentencePiece model (added tokens),
  // or mark pieces as special.
  auto decoder = tc.find("added_tokens_decoder");
  if (decoder != tc.end() && decoder->is_object()) {
    for (auto it = decoder->begin(); it != decoder->end(); ++it) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
      }
      const json& a = it.value();
      if (id < 0 || !a.is_object() || !a.contains("content") || !a["content"].is_string())
        fail("tokenizer_config.json: malformed added_tokens_decoder entry '", it.key(), "'");
      if (id >= n_vocab) too_many_tokens("tokenizer_config.json", id, n_vocab);
      const std::string content = a["content"].get<std::string>();
      const bool special = a.value("special", false);
      if (id >= n) {
        v.set(id, content, special ? kControl : kUserDefined);
        v.scores[size_t(id)] = 0.0f;
      } else if (special && v.tokens[size_t(id)] == content && v.types[size_t(id)] == kNormal) {
        v.types[size_t(id)] = kControl;
      }
    }
  }

  v.fill_padding();
  w.set_str("tokenizer.ggml.model", "llama");
  w.set_str_array("tokenizer.ggml.tokens", v.tokens);
  w.set_f32_array("tokenizer.ggml.scores", v.scores);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_bytes("tokenizer.sentencepiece.model", bytes);
  return v;
}

}  // namespace

TokenizerSummary add_tokenizer(const std::string& dir, const HfConfig& cfg, int64_t n_vocab,
                               gguf::Writer& w,
                               const std::function<void(const std::string&)>& warn) {
  const std::string json_path = join_path(dir, "tokenizer.json");
  std::string sp_path = join_path(dir, "tokenizer.model");
  // Mistral ships its SentencePiece model (e.g. Mamba-Codestral's) under this name.
  if (!is_regular_file(sp_path) && is_regular_file(sp_path + ".v3")) sp_path += ".v3";
  const bool has_json = is_regular_file(json_path);
  const bool has_sp = is_regular_file(sp_path);
  if (!has_json && !has_sp) {
    if (warn)
      warn("no tokenizer.json or tokenizer.model in " + dir +
           ": the GGUF will have no vocabulary; use --prompt-ids");
    return {};
  }
  const bool use_sp = has_sp && (cfg.model.arch == Arch::Mamba2 || !has_json);
  const json tc = load_tokenizer_config(dir);

  TokenizerSummary summary;
  std::optional<int64_t> bos, eos, unk, pad;
  sentencepiece::SentencePieceProcessor sp;
  std::optional<Vocab> vocab;
  if (use_sp) {
    vocab.emplace(load_sentencepiece(sp_path, tc, n_vocab, w, sp));
    summary = {"llama", sp_path, vocab->n_tokens};
  } else {
    vocab.emplace(
        load_bpe(json_path, read_whole_file(json_path, kMaxTokenizerBytes), n_vocab, w, &unk));
    summary = {"gpt2", json_path, vocab->n_tokens};
  }

  // Special ids: tokenizer_config.json's token strings first, then config.json's ids, then
  // (SentencePiece) the model's own.
  auto resolve = [&](const char* key, std::optional<int64_t>& id) {
    auto text = special_token_text(tc, key);
    if (!text) return;
    if (auto found = vocab->find(*text)) {
      id = found;
    } else if (warn) {
      warn("tokenizer_config.json: " + std::string(key) + " '" + *text +
           "' is not in the vocabulary; ignored");
    }
  };
  resolve("bos_token", bos);
  resolve("eos_token", eos);
  resolve("unk_token", unk);
  resolve("pad_token", pad);
  auto fallback = [&](std::optional<int64_t>& id, std::optional<int64_t> from) {
    if (!id && from && *from >= 0 && *from < n_vocab) id = from;
  };
  fallback(bos, cfg.bos_token_id);
  fallback(eos, cfg.eos_token_id);
  fallback(pad, cfg.pad_token_id);
  if (use_sp) {
    fallback(bos, sp.bos_id());
    fallback(eos, sp.eos_id());
    fallback(unk, sp.unk_id());
    fallback(pad, sp.pad_id());
  }
  if (bos) w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(*bos));
  if (eos) w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(*eos));
  if (unk) w.set_u32("tokenizer.ggml.unknown_token_id", uint32_t(*unk));
  if (pad) w.set_u32("tokenizer.ggml.padding_token_id", uint32_t(*pad));

  auto flag = [&](const char* key, bool def) {
    auto it = tc.find(key);
    return it != tc.end() && it->is_boolean() ? it->get<bool>() : def;
  };
  w.set_bool("tokenizer.ggml.add_bos_token", flag("add_bos_token", use_sp));
  w.set_bool("tokenizer.ggml.add_eos_token", flag("add_eos_token", false));
  auto tmpl = tc.find("chat_template");
  if (tmpl != tc.end() && tmpl->is_string())
    w.set_str("tokenizer.chat_template", tmpl->get<std::string>());
  return summary;
}

}  // namespace mamba::convert
