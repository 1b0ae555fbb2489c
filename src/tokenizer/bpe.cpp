#include "tokenizer/bpe.h"

#include <queue>

#include "common/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/utf8.h"

namespace mamba {

namespace {

// Bound on cached words, so that encoding an endless stream cannot grow memory without limit.
constexpr size_t kMaxCachedWords = 200000;
// Longer words are merged without caching: they rarely repeat.
constexpr size_t kMaxCachedWordBytes = 256;

}  // namespace

BpeTokenizer::BpeTokenizer(BpeConfig config)
    : tokens_(std::move(config.tokens)),
      types_(std::move(config.types)),
      unk_id_(config.unk_id),
      normalization_(config.normalization),
      add_prefix_space_(config.add_prefix_space),
      use_regex_(config.use_regex),
      ignore_merges_(config.ignore_merges) {
  if (types_.size() != tokens_.size())
    fail("BPE vocabulary: ", tokens_.size(), " tokens but ", types_.size(), " types");
  specials_ = config.specials;

  vocab_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (types_[id] == TokenType::Unused) continue;
    vocab_.emplace(tokens_[id], static_cast<int32_t>(id));  // the first of duplicates wins
  }

  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(byte_level::symbol(static_cast<uint8_t>(b)));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  merges_.reserve(config.merges.size());
  for (size_t rank = 0; rank < config.merges.size(); ++rank) {
    const auto& [left, right] = config.merges[rank];
    const auto a = vocab_.find(left);
    const auto b = vocab_.find(right);
    const auto merged = vocab_.find(left + right);
    if (a == vocab_.end() || b == vocab_.end() || merged == vocab_.end()) {
      fail("BPE merge ", rank, " ('", left, "' '", right,
           "') uses a token missing from the vocabulary");
    }
    // A pair listed twice takes its last rank, as in HF tokenizers (later entries overwrite).
    merges_.insert_or_assign(pair_key(a->second, b->second),
                             Merge{static_cast<uint32_t>(rank), merged->second});
  }

  hidden_.assign(tokens_.size(), false);
  for (const auto& a : config.added) {
    if (a.id < 0 || static_cast<size_t>(a.id) >= tokens_.size()) {
      fail("added token '", a.content, "' has id ", a.id, " outside the vocabulary");
    }
    if (a.normalized) {
      // Matched against normalised text, so in normalised form (as HF does).
      std::string storage;
      const std::string_view content = unicode::normalize(a.content, normalization_, storage);
      normalized_added_.add(content, a.id, a.lstrip, a.rstrip);
    } else {
      raw_added_.add(a.content, a.id, a.lstrip, a.rstrip);
    }
    if (a.special) hidden_[a.id] = true;
  }

  decoded_.resize(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (types_[id] != TokenType::Unused) decoded_[id] = byte_level::decode_token(tokens_[id]);
  }
}

const std::string& BpeTokenizer::token_string(int32_t id) const {
  static const std::string empty;
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) return empty;
  return tokens_[id];
}

int32_t BpeTokenizer::token_to_id(std::string_view token_string) const {
  const auto it = vocab_.find(token_string);
  return it == vocab_.end() ? -1 : it->second;
}

TokenType BpeTokenizer::token_type(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= types_.size()) return TokenType::Unused;
  return types_[id];
}

TokenText BpeTokenizer::token_text(int32_t id, bool show_special) const {
  TokenText t;  // byte-level tokens always join: decode concatenates bytes, then repairs
  if (id < 0 || static_cast<size_t>(id) >= decoded_.size()) return t;
  if (hidden_[id] && !show_special) return t;
  t.bytes = decoded_[id];
  return t;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);

  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::repair(text, utf8::Repair::MaximalSubpart);
    text = repaired;
  }

  std::vector<AddedTokenMatcher::Piece> pieces;
  std::vector<AddedTokenMatcher::Piece> scratch;
  if (raw_added_.empty()) {
    pieces.push_back({text, -1});
  } else {
    raw_added_.split(text, pieces);
  }
  std::lock_guard<std::mutex> lock(cache_mutex_);
  for (const auto& piece : pieces) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
    } else {
      encode_plain(piece.text, ids, scratch);
    }
  }
  if (add_special) add_special_tokens(ids);
  return ids;
}

// Text between raw-matched added tokens: normalise, cut out normalised added tokens, then
// pre-tokenize and merge each word.
void BpeTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& ids,
                                std::vector<AddedTokenMatcher::Piece>& scratch) const {
  std::string normalized_storage;
  text = unicode::normalize(text, normalization_, normalized_storage);
  scratch.clear();
  if (normalized_added_.empty()) {
    scratch.push_back({text, -1});
  } else {
    normalized_added_.split(text, scratch);
  }
  std::string prefixed;
  for (const auto& piece : scratch) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    std::string_view segment = piece.text;
    if (add_prefix_space_ && segment[0] != ' ') {
      prefixed.assign(1, ' ');
      prefixed.append(segment.data(), segment.size());
      segment = prefixed;
    }
    if (use_regex_) {
      pretok::split_gpt2(segment, [&](std::string_view word) { encode_word(word, ids); });
    } else {
      encode_word(segment, ids);
    }
  }
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.size() > kMaxCachedWordBytes) {
    merge_word(word, ids);
    return;
  }
  if (const auto it = cache_.find(word); it != cache_.end()) {
    ids.insert(ids.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<int32_t> result;
  merge_word(word, result);
  ids.insert(ids.end(), result.begin(), result.end());
  if (cache_.size() >= kMaxCachedWords) cache_.clear();
  cache_.emplace(std::string(word), std::move(result));
}

// Merges one pre-tokenized word (raw bytes). Symbols form a linked list; candidate pairs sit in
// a min-heap ordered by (rank, position), and entries made stale by earlier merges are
// recognised by their symbols no longer matching.
void BpeTokenizer::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    const auto it = vocab_.find(byte_level::encode(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (unsigned char b : word) {
    int32_t id = byte_ids_[b];
    if (id < 0) {
      // A byte missing from the alphabet: the unknown token if there is one, else dropped.
      if (unk_id_ < 0) continue;
      id = unk_id_;
    }
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const Symbol& s = symbols[pos];
    if (s.next < 0) return;
    const int32_t right = symbols[s.next].id;
    const auto it = merges_.find(pair_key(s.id, right));
    if (it != merges_.end()) queue.push({it->second.rank, pos, s.id, right, it->second.id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& s = symbols[c.pos];
    if (!s.alive || s.next < 0 || s.id != c.left_id) continue;
    Symbol& r = symbols[s.next];
    if (r.id != c.right_id) continue;
    s.id = c.merged_id;
    r.alive = false;
    s.next = r.next;
    if (s.next >= 0) symbols[s.next].prev = c.pos;
    consider(s.prev);
    consider(c.pos);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace mamba
