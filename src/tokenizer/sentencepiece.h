// SentencePiece tokenizers (Mistral, LLaMA) through libsentencepiece, so that encoding is
// exactly sentencepiece's own. Decoding is done here, piece by piece (for streaming), with
// sentencepiece's rules: control pieces are invisible, the unknown piece reads " ⁇ ", byte
// pieces join into UTF-8 (each byte that cannot becomes U+FFFD), '▁' is a space, and the
// dummy-prefix space of the first piece is dropped.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/spm_proto.h"
#include "tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace mamba {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // `model_proto`: a serialized ModelProto (a tokenizer.model file's bytes). `n_vocab`: the
  // number of ids to report when a GGUF pads the vocabulary beyond the model; 0 for the
  // model's own size. Specials start as the model defines them, with add_bos on.
  explicit SentencePieceTokenizer(const std::string& model_proto, size_t n_vocab = 0);
  ~SentencePieceTokenizer() override;

  std::string_view kind() const override { return "sentencepiece"; }
  std::vector<int32_t> encode(std::string_view text, bool add_special = true) const override;
  TokenText token_text(int32_t id, bool show_special) const override;
  utf8::Repair utf8_repair() const override { return utf8::Repair::PerByte; }
  const std::string& token_string(int32_t id) const override;
  int32_t token_to_id(std::string_view token_string) const override;
  size_t vocab_size() const override { return n_vocab_; }
  TokenType token_type(int32_t id) const override;

 private:
  bool in_model(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < model_.pieces.size();
  }

  void encode_by_words(std::string_view text, std::vector<int>& out) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  // The same model without the dummy prefix, for words after the first (see encode_by_words).
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_continued_;
  bool splittable_ = false;  // whether encode_by_words is exact for this model
  spm::Model model_;
  std::vector<std::string> text_;  // id -> piece text with '▁' as ' ' (or the byte)
  std::unordered_map<std::string_view, int32_t> ids_;  // piece -> id, views into model_
  size_t n_vocab_;
  LeadingSpace leading_space_;

  // Word -> ids, for words after the first; guarded for concurrent encodes.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int>, StringHash, std::equal_to<>> cache_;
};

// Rebuilds a sentencepiece model from llama.cpp-style GGUF token lists
// (tokenizer.ggml.model = "llama": tokens, scores, token_type).
std::unique_ptr<SentencePieceTokenizer> sentencepiece_from_gguf_lists(const gguf::File& file);

}  // namespace mamba
