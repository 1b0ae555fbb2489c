// Byte-level BPE (GPT-2 / GPT-NeoX), reproducing HF tokenizers' pipeline:
//
//   1. added tokens with normalized = false (NeoX: <|endoftext|>, <|unk|>) are cut out of the
//      raw text;
//   2. each remaining piece is normalised (NeoX: NFC), then added tokens with
//      normalized = true (NeoX: the runs of 2..24 spaces) are cut out of it;
//   3. each remaining piece is split by the GPT-2 regex (pretokenize.h), optionally after a
//      prefix space;
//   4. each word's bytes map to the byte-level alphabet's 256 symbols, and adjacent symbols
//      merge, lowest merge rank first (leftmost first among equal ranks), while a merge
//      applies. Words' results are cached.
#pragma once

#include <cstdint>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace mamba {

struct BpeConfig {
  std::vector<std::string> tokens;  // id -> vocabulary entry; added tokens hold their content
  std::vector<TokenType> types;     // id -> type (same length as tokens)
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  struct Added {
    std::string content;
    int32_t id = -1;
    bool special = false;     // hidden by decode unless show_special
    bool normalized = false;  // matched after normalisation (step 2) rather than before
    bool lstrip = false;
    bool rstrip = false;
  };
  std::vector<Added> added;
  unicode::Normalization normalization = unicode::Normalization::None;
  bool add_prefix_space = false;
  bool use_regex = true;
  bool ignore_merges = false;  // a word that is itself a vocabulary entry skips merging
  int32_t unk_id = -1;         // the BPE model's unknown token for bytes missing from the vocab
  SpecialTokens specials;
};

// From an HF tokenizer.json (parsed). Throws mamba::Error naming any part of the pipeline that
// is not supported (other models, pre-tokenizers or normalizers), rather than guessing.
BpeConfig bpe_config_from_hf_json(const nlohmann::json& j);

// From llama.cpp-style GGUF token lists (tokenizer.ggml.model = "gpt2").
BpeConfig bpe_config_from_gguf(const gguf::File& file);

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeConfig config);

  std::string_view kind() const override { return "bpe"; }
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const override;
  TokenText token_text(int32_t id, bool show_special) const override;
  utf8::Repair utf8_repair() const override { return utf8::Repair::MaximalSubpart; }
  const std::string& token_string(int32_t id) const override;
  int32_t token_to_id(std::string_view token_string) const override;
  size_t vocab_size() const override { return tokens_.size(); }
  TokenType token_type(int32_t id) const override;

 private:
  void encode_plain(std::string_view text, std::vector<int32_t>& ids,
                    std::vector<AddedTokenMatcher::Piece>& scratch) const;
  void encode_word(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  struct Merge {
    uint32_t rank;
    int32_t id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  std::vector<std::string> decoded_;                     // id -> the bytes the token stands for
  std::unordered_map<std::string_view, int32_t> vocab_;  // views into tokens_
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t byte_ids_[256];  // byte -> id of its byte-level symbol, -1 if missing
  int32_t unk_id_ = -1;
  unicode::Normalization normalization_;
  bool add_prefix_space_;
  bool use_regex_;
  bool ignore_merges_;
  AddedTokenMatcher raw_added_;         // matched before normalisation
  AddedTokenMatcher normalized_added_;  // matched after
  std::vector<bool> hidden_;            // special added tokens, skipped by default in decode

  // Word -> ids cache. Words repeat heavily in real text; guarded for concurrent encodes.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace mamba
