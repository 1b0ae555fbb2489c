// Building a BpeConfig from an HF tokenizer.json or from llama.cpp-style GGUF token lists.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "gguf/gguf.h"
#include "tokenizer/bpe.h"
#include "tokenizer/utf8.h"

namespace mamba {

namespace {

using nlohmann::json;

std::string type_of(const json& node) {
  if (!node.is_object()) return "";
  const auto it = node.find("type");
  return it != node.end() && it->is_string() ? it->get<std::string>() : "";
}

// A "Sequence" node's children, or the node itself.
std::vector<const json*> flatten(const json& node, const char* children_key) {
  std::vector<const json*> out;
  if (type_of(node) == "Sequence" && node.contains(children_key)) {
    for (const auto& child : node.at(children_key)) out.push_back(&child);
  } else {
    out.push_back(&node);
  }
  return out;
}

unicode::Normalization parse_normalizer(const json& node) {
  auto form = unicode::Normalization::None;
  if (node.is_null()) return form;
  for (const json* n : flatten(node, "normalizers")) {
    const std::string type = type_of(*n);
    unicode::Normalization f;
    if (!unicode::parse_normalization(type, &f)) {
      fail("tokenizer.json: normalizer '", type, "' is not supported (only NFC/NFD/NFKC/NFKD)");
    }
    if (form != unicode::Normalization::None && form != f) {
      fail("tokenizer.json: a sequence of different normalizers is not supported");
    }
    form = f;
  }
  return form;
}

void parse_pre_tokenizer(const json& node, BpeConfig& cfg) {
  if (node.is_null()) fail("tokenizer.json: BPE without a pre-tokenizer is not supported");
  const auto nodes = flatten(node, "pretokenizers");
  if (nodes.size() != 1 || type_of(*nodes[0]) != "ByteLevel") {
    fail("tokenizer.json: pre-tokenizer '", type_of(node), "' is not supported (only ByteLevel)");
  }
  const json& b = *nodes[0];
  cfg.add_prefix_space = b.value("add_prefix_space", false);
  cfg.use_regex = b.value("use_regex", true);
}

void check_decoder(const json& node) {
  if (node.is_null()) return;
  for (const json* n : flatten(node, "decoders")) {
    if (type_of(*n) != "ByteLevel") {
      fail("tokenizer.json: decoder '", type_of(*n), "' is not supported (only ByteLevel)");
    }
  }
}

// BOS/EOS from the post-processor: what encode(add_special_tokens=True) adds.
void parse_post_processor(const json& node, const BpeConfig& cfg, SpecialTokens& s) {
  if (node.is_null()) return;
  auto id_of = [&](const std::string& content) -> int32_t {
    for (size_t id = 0; id < cfg.tokens.size(); ++id) {
      if (cfg.tokens[id] == content) return static_cast<int32_t>(id);
    }
    fail("tokenizer.json: post-processor token '", content, "' is not in the vocabulary");
  };
  for (const json* n : flatten(node, "processors")) {
    const std::string type = type_of(*n);
    if (type == "ByteLevel") continue;  // offsets only
    if (type == "RobertaProcessing" || type == "BertProcessing") {
      s.bos = id_of(n->at("cls").at(0).get<std::string>());
      s.eos = id_of(n->at("sep").at(0).get<std::string>());
      s.add_bos = s.add_eos = true;
    } else if (type == "TemplateProcessing") {
      // "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, ...]
      std::vector<int32_t> before, after;
      bool seen_sequence = false;
      for (const auto& item : n->at("single")) {
        if (item.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        const auto& special = n->at("special_tokens").at(name);
        for (const auto& id : special.at("ids")) {
          (seen_sequence ? after : before).push_back(id.get<int32_t>());
        }
      }
      if (before.size() > 1 || after.size() > 1) {
        fail(
            "tokenizer.json: post-processor template adds several tokens on one side; not "
            "supported");
      }
      if (!before.empty()) s.bos = before[0], s.add_bos = true;
      if (!after.empty()) s.eos = after[0], s.add_eos = true;
    } else {
      fail("tokenizer.json: post-processor '", type, "' is not supported");
    }
  }
}

// Well-known names, for BOS/EOS/UNK/PAD ids when nothing else says which token they are
// (a bare tokenizer.json has no tokenizer_config.json beside it).
int32_t find_named(const BpeConfig& cfg, std::initializer_list<const char*> names) {
  for (const char* name : names) {
    for (const auto& a : cfg.added) {
      if (a.special && a.content == name) return a.id;
    }
  }
  return -1;
}

void guess_specials(const BpeConfig& cfg, SpecialTokens& s) {
  if (s.eos < 0) s.eos = find_named(cfg, {"<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"});
  if (s.bos < 0) s.bos = find_named(cfg, {"<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>"});
  if (s.unk < 0) s.unk = find_named(cfg, {"<unk>", "<|unk|>"});
  if (s.pad < 0) s.pad = find_named(cfg, {"<pad>", "<|padding|>", "[PAD]"});
}

void set_token(BpeConfig& cfg, int64_t id, const std::string& text, TokenType type) {
  if (id < 0 || id > (1 << 24))
    fail("tokenizer.json: token '", text, "' has id ", id, " out of range");
  if (static_cast<size_t>(id) >= cfg.tokens.size()) {
    cfg.tokens.resize(id + 1);
    cfg.types.resize(id + 1, TokenType::Unused);  // ids nobody claims stay unused
  }
  cfg.tokens[id] = text;
  cfg.types[id] = type;
}

bool only_white_space(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    char32_t cp = 0;
    const size_t len = utf8::decode(s.substr(i), &cp);
    if (len == 0 || !unicode::is_white_space(cp)) return false;
    i += len;
  }
  return true;
}

std::pair<std::string, std::string> split_merge(const std::string& merge) {
  const size_t space = merge.find(' ');
  if (space == std::string::npos || merge.find(' ', space + 1) != std::string::npos) {
    fail("BPE merge '", merge, "' is not two tokens separated by one space");
  }
  return {merge.substr(0, space), merge.substr(space + 1)};
}

}  // namespace

BpeConfig bpe_config_from_hf_json(const json& j) {
  BpeConfig cfg;
  const json& model = j.at("model");
  const std::string model_type = model.value("type", "BPE");
  if (model_type != "BPE")
    fail("tokenizer.json: model '", model_type, "' is not supported (only BPE)");
  if (model.value("byte_fallback", false)) {
    fail(
        "tokenizer.json: BPE with byte_fallback (a SentencePiece-style vocabulary) is not "
        "supported; load the tokenizer.model instead");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      fail("tokenizer.json: BPE with ", key, " is not supported");
    }
  }
  cfg.ignore_merges = model.value("ignore_merges", false);

  for (const auto& [text, id] : model.at("vocab").items()) {
    set_token(cfg, id.get<int64_t>(), text, TokenType::Normal);
  }
  for (const auto& m : model.at("merges")) {
    if (m.is_string()) {
      cfg.merges.push_back(split_merge(m.get<std::string>()));
    } else {  // newer files store ["left", "right"]
      cfg.merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    }
  }

  if (j.contains("added_tokens")) {
    for (const auto& t : j.at("added_tokens")) {
      BpeConfig::Added a;
      a.content = t.at("content").get<std::string>();
      a.id = t.at("id").get<int32_t>();
      a.special = t.value("special", false);
      a.normalized = t.value("normalized", !a.special);
      a.lstrip = t.value("lstrip", false);
      a.rstrip = t.value("rstrip", false);
      if (t.value("single_word", false)) {
        fail("tokenizer.json: added token '", a.content, "' with single_word is not supported");
      }
      set_token(cfg, a.id, a.content, a.special ? TokenType::Control : TokenType::UserDefined);
      cfg.added.push_back(std::move(a));
    }
  }

  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    for (size_t id = 0; id < cfg.tokens.size(); ++id) {
      if (cfg.tokens[id] == unk) cfg.unk_id = static_cast<int32_t>(id);
    }
    cfg.specials.unk = cfg.unk_id;
  }

  cfg.normalization = parse_normalizer(j.value("normalizer", json()));
  parse_pre_tokenizer(j.value("pre_tokenizer", json()), cfg);
  check_decoder(j.value("decoder", json()));
  parse_post_processor(j.value("post_processor", json()), cfg, cfg.specials);
  guess_specials(cfg, cfg.specials);
  return cfg;
}

BpeConfig bpe_config_from_gguf(const gguf::File& file) {
  BpeConfig cfg;
  cfg.tokens = file.get_str_array("tokenizer.ggml.tokens");
  std::vector<int64_t> types(cfg.tokens.size(), static_cast<int64_t>(TokenType::Normal));
  if (file.has("tokenizer.ggml.token_type"))
    types = file.get_int_array("tokenizer.ggml.token_type");
  if (types.size() != cfg.tokens.size()) {
    fail("GGUF vocabulary: ", cfg.tokens.size(), " tokens but ", types.size(), " token types");
  }

  // llama.cpp names pre-tokenizers by model family. The NeoX tokenizer (NFC, then the GPT-2
  // regex) is "olmo" (or "mpt", its older name); "gpt-2" / "default" are GPT-2's own, the same
  // regex without normalisation.
  const std::string pre = file.get_str("tokenizer.ggml.pre", "default");
  if (pre == "olmo" || pre == "mpt") {
    cfg.normalization = unicode::Normalization::NFC;
  } else if (pre != "gpt-2" && pre != "default") {
    fail("GGUF tokenizer.ggml.pre '", pre,
         "' is not supported (supported: olmo, mpt, gpt-2, default)");
  }

  cfg.types.resize(types.size());
  for (size_t id = 0; id < types.size(); ++id) {
    if (types[id] < 1 || types[id] > 6)
      fail("GGUF token ", id, " has unknown token type ", types[id]);
    const auto type = static_cast<TokenType>(types[id]);
    cfg.types[id] = type;
    // Special and user-defined tokens are HF added tokens: cut out before BPE. As in HF,
    // special ones match the raw text and the others the normalised text.
    if (type == TokenType::Control || type == TokenType::UserDefined) {
      BpeConfig::Added a;
      a.content = cfg.tokens[id];
      a.id = static_cast<int32_t>(id);
      // Older converters typed every added token CONTROL, NeoX's runs of spaces included;
      // text that is only whitespace is never a special marker to hide when decoding.
      a.special = type == TokenType::Control && !only_white_space(a.content);
      a.normalized = !a.special;
      cfg.added.push_back(std::move(a));
    }
    if (type == TokenType::Unknown && cfg.unk_id < 0) cfg.unk_id = static_cast<int32_t>(id);
  }

  if (file.has("tokenizer.ggml.merges")) {
    for (const auto& m : file.get_str_array("tokenizer.ggml.merges"))
      cfg.merges.push_back(split_merge(m));
  }
  cfg.specials.unk = cfg.unk_id;
  return cfg;
}

}  // namespace mamba
