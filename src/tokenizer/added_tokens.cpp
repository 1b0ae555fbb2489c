#include "tokenizer/added_tokens.h"

#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace mamba {

void AddedTokenMatcher::add(std::string_view content, int32_t id, bool lstrip, bool rstrip) {
  if (content.empty()) return;  // an empty token can never be matched
  int32_t node = 0;
  for (unsigned char b : content) {
    int32_t child = -1;
    for (const auto& [byte, index] : nodes_[node].next) {
      if (byte == b) child = index;
    }
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_[node].next.emplace_back(b, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  if (nodes_[node].token < 0) ++patterns_;
  // The same content added twice: the later definition wins, as in a map keyed by content.
  nodes_[node].token = static_cast<int32_t>(tokens_.size());
  tokens_.push_back({id, lstrip, rstrip});
  first_byte_[static_cast<unsigned char>(content[0])] = true;
}

size_t AddedTokenMatcher::longest_match(std::string_view text, size_t pos, int32_t* token) const {
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<unsigned char>(text[i]);
    int32_t child = -1;
    for (const auto& [byte, index] : nodes_[node].next) {
      if (byte == b) {
        child = index;
        break;
      }
    }
    if (child < 0) break;
    node = child;
    if (nodes_[node].token >= 0) {
      best = i + 1 - pos;
      *token = nodes_[node].token;
    }
  }
  return best;
}

namespace {

// Start of the White_Space run that ends at `end` (never before `floor`).
size_t white_space_start(std::string_view text, size_t end, size_t floor) {
  size_t start = end;
  while (start > floor) {
    size_t p = start - 1;
    while (p > floor && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
    char32_t cp = 0;
    if (utf8::decode(text.substr(p, start - p), &cp) != start - p) break;
    if (!unicode::is_white_space(cp)) break;
    start = p;
  }
  return start;
}

// End of the White_Space run that starts at `start`.
size_t white_space_end(std::string_view text, size_t start) {
  while (start < text.size()) {
    char32_t cp = 0;
    const size_t len = utf8::decode(text.substr(start), &cp);
    if (len == 0 || !unicode::is_white_space(cp)) break;
    start += len;
  }
  return start;
}

}  // namespace

void AddedTokenMatcher::split(std::string_view text, std::vector<Piece>& out) const {
  size_t plain_start = 0;  // start of the text not yet emitted
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t token = -1;
    const size_t len =
        first_byte_[static_cast<unsigned char>(text[pos])] ? longest_match(text, pos, &token) : 0;
    if (len == 0) {
      ++pos;
      continue;
    }
    const Token& t = tokens_[token];
    size_t start = pos;
    size_t stop = pos + len;
    if (t.lstrip) start = white_space_start(text, start, plain_start);
    if (t.rstrip) stop = white_space_end(text, stop);
    if (start > plain_start) out.push_back({text.substr(plain_start, start - plain_start), -1});
    out.push_back({text.substr(start, stop - start), t.id});
    plain_start = pos = stop;
  }
  if (plain_start < text.size()) out.push_back({text.substr(plain_start), -1});
}

}  // namespace mamba
