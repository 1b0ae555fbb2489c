#include "tokenizer/sentencepiece.h"

#include <sentencepiece_processor.h>

#include <algorithm>

#include "common/error.h"
#include "gguf/gguf.h"
#include "tokenizer/utf8.h"

namespace mamba {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // '▁' U+2581

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

// "<0x0A>" -> '\n'.
bool parse_byte_piece(std::string_view piece, char* byte) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return false;
  int v = 0;
  for (char c : piece.substr(3, 2)) {
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else
      return false;
  }
  *byte = static_cast<char>(v);
  return true;
}

// sentencepiece's BPE slows down on long inputs (1 MB of English takes seconds in one call).
// Texts longer than this are encoded word by word instead, with a cache of words' ids.
constexpr size_t kWordwiseFrom = 8192;
constexpr size_t kMaxCachedWords = 200000;
constexpr size_t kMaxCachedWordBytes = 256;

// True when no piece has '▁' after another character: every '▁' is in a leading run. Then no
// merge can join a character to a following '▁', and text split before such a '▁' encodes as
// the concatenation of its parts.
bool spaces_only_lead_pieces(const spm::Model& m) {
  for (const spm::Piece& p : m.pieces) {
    std::string_view t = p.text;
    while (t.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) t.remove_prefix(kSpaceSymbol.size());
    if (t.find(kSpaceSymbol) != std::string_view::npos) return false;
  }
  return true;
}

// Whether a word may end before text[pos]: a space (which becomes '▁') after a character
// that does not become '▁' itself (a space, or a literal '▁' in the text).
bool is_word_boundary(std::string_view text, size_t pos) {
  if (text[pos] != ' ' || text[pos - 1] == ' ') return false;
  return pos < kSpaceSymbol.size() ||
         text.substr(pos - kSpaceSymbol.size(), kSpaceSymbol.size()) != kSpaceSymbol;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_processor(const std::string& proto) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->LoadFromSerializedProto(proto);
  if (!status.ok()) fail("sentencepiece could not load the model: ", status.ToString());
  return sp;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& model_proto, size_t n_vocab)
    : model_(spm::parse_model(model_proto)) {
  // Decoding below assumes the prefix-space convention and no denormalisation; refuse models
  // that differ rather than decode them subtly wrong.
  if (model_.treat_whitespace_as_suffix) {
    fail("sentencepiece models with treat_whitespace_as_suffix are not supported");
  }
  if (model_.has_denormalizer) fail("sentencepiece models with a denormalizer are not supported");

  sp_ = load_processor(model_proto);

  // Word-by-word encoding is exact only where the normaliser works character by character (no
  // charsmap, no whitespace collapsing) and merges cannot cross the word boundaries.
  splittable_ = model_.model_type == spm::ModelType::Bpe && !model_.has_charsmap &&
                !model_.remove_extra_whitespaces && model_.escape_whitespaces &&
                spaces_only_lead_pieces(model_);
  if (splittable_ && model_.add_dummy_prefix) {
    // Protobuf merges a repeated embedded message into the earlier one, so appending
    // normalizer_spec { add_dummy_prefix: false } (field 3 holding field 3 = 0) overrides
    // just that flag.
    sp_continued_ = load_processor(model_proto + std::string("\x1A\x02\x18\x00", 4));
  }

  n_vocab_ = std::max(n_vocab, model_.pieces.size());
  text_.resize(model_.pieces.size());
  ids_.reserve(model_.pieces.size());
  for (size_t id = 0; id < model_.pieces.size(); ++id) {
    const spm::Piece& p = model_.pieces[id];
    ids_.emplace(p.text, static_cast<int32_t>(id));
    char byte = 0;
    if (p.type == TokenType::Byte && parse_byte_piece(p.text, &byte)) {
      text_[id] = std::string(1, byte);
    } else {
      text_[id] = replace_all(p.text, kSpaceSymbol, " ");
    }
  }

  if (model_.remove_extra_whitespaces)
    leading_space_ = LeadingSpace::DropWhileAtStart;
  else if (model_.add_dummy_prefix)
    leading_space_ = LeadingSpace::DropOnce;
  else
    leading_space_ = LeadingSpace::Keep;

  auto control_id = [&](const std::string& piece) {
    const int32_t id = token_to_id(piece);
    return id >= 0 && model_.pieces[id].type == TokenType::Control ? id : -1;
  };
  SpecialTokens s;
  for (size_t id = 0; id < model_.pieces.size() && s.unk < 0; ++id) {
    if (model_.pieces[id].type == TokenType::Unknown) s.unk = static_cast<int32_t>(id);
  }
  s.bos = control_id(model_.bos_piece);
  s.eos = control_id(model_.eos_piece);
  s.pad = control_id(model_.pad_piece);
  s.add_bos = s.bos >= 0;  // the LLaMA / Mistral convention
  specials_ = s;
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text, bool add_special) const {
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::repair(text, utf8::Repair::MaximalSubpart);
    text = repaired;
  }
  std::vector<int> out;
  if (splittable_ && text.size() >= kWordwiseFrom) {
    encode_by_words(text, out);
  } else {
    const auto status = sp_->Encode(text, &out);
    if (!status.ok()) fail("sentencepiece could not encode: ", status.ToString());
  }
  std::vector<int32_t> ids(out.begin(), out.end());
  if (add_special) add_special_tokens(ids);
  return ids;
}

// Encodes `text` as words that end before a space following another character, each through
// the word cache. Only the first word gets the dummy prefix; the others start with their own
// space, which sentencepiece turns into their leading '▁'.
void SentencePieceTokenizer::encode_by_words(std::string_view text, std::vector<int>& out) const {
  std::vector<int> ids;
  auto encode_with = [&](const sentencepiece::SentencePieceProcessor& sp, std::string_view word) {
    const auto status = sp.Encode(word, &ids);
    if (!status.ok()) fail("sentencepiece could not encode: ", status.ToString());
  };
  const sentencepiece::SentencePieceProcessor& continued = sp_continued_ ? *sp_continued_ : *sp_;
  std::lock_guard<std::mutex> lock(cache_mutex_);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = start + 1;
    while (end < text.size() && !is_word_boundary(text, end)) ++end;
    const std::string_view word = text.substr(start, end - start);
    if (start == 0) {
      encode_with(*sp_, word);
      out.insert(out.end(), ids.begin(), ids.end());
    } else if (const auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
    } else {
      encode_with(continued, word);
      out.insert(out.end(), ids.begin(), ids.end());
      if (word.size() <= kMaxCachedWordBytes) {
        if (cache_.size() >= kMaxCachedWords) cache_.clear();
        cache_.emplace(std::string(word), ids);
      }
    }
    start = end;
  }
}

TokenText SentencePieceTokenizer::token_text(int32_t id, bool show_special) const {
  TokenText t;
  if (!in_model(id)) return t;  // padding beyond the model: nothing, and no effect
  const spm::Piece& p = model_.pieces[id];
  switch (p.type) {
    case TokenType::Byte:
      t.bytes = text_[id];
      t.joins_bytes = true;
      return t;
    case TokenType::Control:
      if (show_special) t.bytes = p.text;
      t.joins_bytes = false;
      return t;
    case TokenType::Unknown:
      t.bytes = model_.unk_surface;
      t.joins_bytes = false;
      return t;
    default:
      t.bytes = text_[id];
      t.joins_bytes = false;
      t.leading_space = leading_space_;
      return t;
  }
}

const std::string& SentencePieceTokenizer::token_string(int32_t id) const {
  static const std::string empty;
  return in_model(id) ? model_.pieces[id].text : empty;
}

int32_t SentencePieceTokenizer::token_to_id(std::string_view token_string) const {
  const auto it = ids_.find(token_string);
  return it == ids_.end() ? -1 : it->second;
}

TokenType SentencePieceTokenizer::token_type(int32_t id) const {
  return in_model(id) ? model_.pieces[id].type : TokenType::Unused;
}

// ---- llama.cpp GGUF token lists --------------------------------------------------------------

std::unique_ptr<SentencePieceTokenizer> sentencepiece_from_gguf_lists(const gguf::File& file) {
  const std::vector<std::string> tokens = file.get_str_array("tokenizer.ggml.tokens");
  std::vector<float> scores(tokens.size(), 0.0f);
  if (file.has("tokenizer.ggml.scores")) scores = file.get_float_array("tokenizer.ggml.scores");
  std::vector<int64_t> types(tokens.size(), static_cast<int64_t>(TokenType::Normal));
  if (file.has("tokenizer.ggml.token_type"))
    types = file.get_int_array("tokenizer.ggml.token_type");
  if (scores.size() != tokens.size() || types.size() != tokens.size()) {
    fail("GGUF vocabulary: ", tokens.size(), " tokens but ", scores.size(), " scores and ",
         types.size(), " token types");
  }

  spm::Model m;
  m.model_type = spm::ModelType::Bpe;  // LLaMA-family SentencePiece vocabularies are BPE
  m.pieces.resize(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    spm::Piece& p = m.pieces[i];
    if (types[i] < 1 || types[i] > 6) fail("GGUF token ", i, " has unknown token type ", types[i]);
    p.type = static_cast<TokenType>(types[i]);
    p.score = scores[i];
    p.text = tokens[i];
    // llama.cpp's converter writes sentencepiece's user-defined pieces (Mistral v3's
    // [REFERENCE_DOC_n]) as NORMAL, keeping their score of 0. Learned BPE pieces always score
    // below 0 (minus their merge rank), so a normal piece scoring exactly 0 is one of those;
    // it must be user-defined again for sentencepiece to match it whole, as the original does.
    if (p.type == TokenType::Normal && p.score == 0.0f) p.type = TokenType::UserDefined;
    // llama.cpp stores user-defined tokens with plain spaces; the model spells them '▁'.
    if (p.type == TokenType::UserDefined) p.text = replace_all(p.text, " ", kSpaceSymbol);
    if (p.type == TokenType::Byte) m.byte_fallback = true;
  }

  auto piece_for = [&](const char* key, std::string* piece) {
    if (!file.has(key)) return;
    const int64_t id = file.get_int(key);
    if (id >= 0 && static_cast<size_t>(id) < tokens.size()) *piece = m.pieces[id].text;
  };
  piece_for("tokenizer.ggml.bos_token_id", &m.bos_piece);
  piece_for("tokenizer.ggml.eos_token_id", &m.eos_piece);
  piece_for("tokenizer.ggml.padding_token_id", &m.pad_piece);
  const auto unknown = std::find_if(m.pieces.begin(), m.pieces.end(), [](const spm::Piece& p) {
    return p.type == TokenType::Unknown;
  });
  if (unknown == m.pieces.end())
    fail("GGUF sentencepiece vocabulary has no unknown token (type 2)");
  m.unk_piece = unknown->text;

  // Mistral and LLaMA normalise nothing but spaces: identity rules, a dummy prefix, and
  // whitespace runs kept. GGUF keys may say otherwise for other models.
  // Padding up to the model's vocabulary size stays out of the model: ids beyond it decode to
  // nothing, the same as when the original tokenizer.model is embedded.
  while (m.pieces.size() > 1 && m.pieces.back().type == TokenType::Unused) m.pieces.pop_back();

  m.add_dummy_prefix = file.get_bool("tokenizer.ggml.add_space_prefix", true);
  m.remove_extra_whitespaces = file.get_bool("tokenizer.ggml.remove_extra_whitespaces", false);
  return std::make_unique<SentencePieceTokenizer>(spm::serialize_model(m), tokens.size());
}

}  // namespace mamba
