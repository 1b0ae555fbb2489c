// Text <-> token ids, matching the reference tokenizers byte for byte.
//
// Two families:
//   "bpe"            byte-level BPE as in GPT-2 / GPT-NeoX (HF tokenizers' BPE model with the
//                    ByteLevel pre-tokenizer): Unicode normalisation (NFC for NeoX), added
//                    tokens cut out first, the GPT-2 split regex, merges by rank.
//   "sentencepiece"  the sentencepiece library itself (Mistral / LLaMA tokenizer.model).
//
// Loading paths (all give the same ids):
//   load_tokenizer(path)        a tokenizer.json, a tokenizer.model, a GGUF file, or an HF
//                               model directory holding one of them
//   tokenizer_from_gguf(file)   GGUF metadata, as written by our converter (which embeds the
//                               original tokenizer file) or by llama.cpp's converter (token
//                               lists only: the pipeline is rebuilt from them)
//
// Encoding follows the reference exactly: for BPE, added/special token text in the input
// becomes that token (HF tokenizers' behaviour); for SentencePiece, control-token text is
// ordinary text (sentencepiece's behaviour). Input that is not well-formed UTF-8 is first
// repaired (ill-formed bytes become U+FFFD), since both references only accept Unicode text.
//
// Decoding matches the references' decode; see StreamDecoder (stream_decoder.h) for
// token-by-token output that never splits a UTF-8 character.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/utf8.h"

namespace mamba {

namespace gguf {
class File;
}

// Token kinds, numbered as GGUF's tokenizer.ggml.token_type and sentencepiece's piece types.
enum class TokenType : int32_t {
  Normal = 1,
  Unknown = 2,
  Control = 3,      // special tokens: BOS, EOS, <|endoftext|>, [INST], ...
  UserDefined = 4,  // non-special added tokens (NeoX's runs of spaces)
  Unused = 5,       // padding entries of a vocabulary rounded up to the model's size
  Byte = 6,         // SentencePiece byte-fallback pieces <0x00>..<0xFF>
};
const char* token_type_name(TokenType t);

struct SpecialTokens {
  int32_t bos = -1;  // -1: the tokenizer has none
  int32_t eos = -1;
  int32_t unk = -1;
  int32_t pad = -1;
  bool add_bos = false;  // encode(text, add_special = true) prepends BOS
  bool add_eos = false;  // ... and appends EOS
};

// SentencePiece's dummy prefix: the space it put before the text is dropped again when
// decoding, from the first piece that has one while nothing has been output yet.
enum class LeadingSpace : uint8_t {
  Keep,
  DropOnce,          // drop it, and only once (add_dummy_prefix)
  DropWhileAtStart,  // drop every leading space until text appears (remove_extra_whitespaces)
};

// What one token contributes to decoded text.
struct TokenText {
  std::string bytes;
  // True: raw bytes that join their neighbours into UTF-8 characters (every byte-level BPE
  // token, SentencePiece byte pieces). False: a self-contained piece; an unfinished UTF-8
  // character pending before it is ill-formed.
  bool joins_bytes = true;
  LeadingSpace leading_space = LeadingSpace::Keep;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string_view kind() const = 0;  // "bpe" or "sentencepiece"

  // Token ids for `text`. add_special: add BOS/EOS as specials().add_bos / add_eos say.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special = true) const = 0;

  // The text of `ids`. show_special: include special (control) tokens' text; otherwise they
  // are left out, as HF's skip_special_tokens and sentencepiece's decode do. (Shown, such text
  // counts as text: SentencePiece then keeps the next word's space, "<s> Hello".) Ill-formed
  // UTF-8 becomes U+FFFD the way the reference does (utf8_repair()).
  std::string decode(std::span<const int32_t> ids, bool show_special = false) const;

  // One token's contribution to decoded text; ids out of range give empty text.
  virtual TokenText token_text(int32_t id, bool show_special) const = 0;
  virtual utf8::Repair utf8_repair() const = 0;

  // The bytes a token stands for, specials shown and no dummy-prefix space dropped, e.g.
  // " the" for "Ġthe" or "▁the", "\n" for <0x0A>; possibly part of a UTF-8 character.
  std::string token_to_piece(int32_t id) const { return token_text(id, true).bytes; }
  // The vocabulary entry as stored ("Ġthe", "▁the", "<0x0A>", "<|endoftext|>").
  virtual const std::string& token_string(int32_t id) const = 0;
  // Id of a vocabulary entry given as stored, or -1.
  virtual int32_t token_to_id(std::string_view token_string) const = 0;

  // Number of ids, including padding entries up to the model's embedding size.
  virtual size_t vocab_size() const = 0;
  virtual TokenType token_type(int32_t id) const = 0;  // Unused for ids out of range
  bool is_special(int32_t id) const { return token_type(id) == TokenType::Control; }

  const SpecialTokens& specials() const { return specials_; }
  int32_t bos_id() const { return specials_.bos; }
  int32_t eos_id() const { return specials_.eos; }
  void set_specials(const SpecialTokens& s) { specials_ = s; }
  void set_add_bos(bool on) { specials_.add_bos = on; }
  void set_add_eos(bool on) { specials_.add_eos = on; }

 protected:
  // Adds BOS/EOS around `ids` as configured (when the ids exist).
  void add_special_tokens(std::vector<int32_t>& ids) const;

  SpecialTokens specials_;
};

// Loads a tokenizer.json, tokenizer.model (or .model.v3), GGUF file, or a directory holding
// tokenizer.model / tokenizer.model.v3 / tokenizer.json (tokenizer_config.json beside it sets
// add_bos_token / add_eos_token / bos_token / eos_token). Throws mamba::Error.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// The tokenizer described by GGUF metadata; nullptr when the file has no vocabulary
// (no tokenizer.ggml.model, or "none"). Throws mamba::Error for vocabularies it cannot
// reproduce exactly (unknown tokenizer.ggml.model or tokenizer.ggml.pre).
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const gguf::File& file);

}  // namespace mamba
