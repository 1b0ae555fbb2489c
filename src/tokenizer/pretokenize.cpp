#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace mamba::pretok {

namespace {

using unicode::CharClass;

struct Char {
  char32_t cp;
  size_t len;
  CharClass cls;
};

// The character at text[pos]; the text is well-formed, but stay total on bad bytes.
Char char_at(std::string_view text, size_t pos) {
  const auto b = static_cast<unsigned char>(text[pos]);
  if (b < 0x80) return {b, 1, unicode::char_class(b)};
  char32_t cp = 0;
  size_t len = utf8::decode(text.substr(pos), &cp);
  if (len == 0) return {0xFFFD, 1, CharClass::Other};
  return {cp, len, unicode::char_class(cp)};
}

// End of the run of characters of class `cls` starting at `pos`.
size_t run_end(std::string_view text, size_t pos, CharClass cls) {
  while (pos < text.size()) {
    const Char c = char_at(text, pos);
    if (c.cls != cls) break;
    pos += c.len;
  }
  return pos;
}

// Length of a contraction ('s 't 're 've 'm 'll 'd) at text[pos], or 0.
size_t contraction_length(std::string_view text, size_t pos) {
  if (text[pos] != '\'' || pos + 1 >= text.size()) return 0;
  const char a = text[pos + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (pos + 2 >= text.size()) return 0;
  const char b = text[pos + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

}  // namespace

size_t gpt2_word_length(std::string_view text, size_t pos) {
  if (size_t n = contraction_length(text, pos)) return n;

  const Char c = char_at(text, pos);
  // " ?X+" for X in letters, numbers, other: an optional leading U+0020 joins the run.
  if (c.cp == ' ' && pos + 1 < text.size()) {
    const Char next = char_at(text, pos + 1);
    if (next.cls != CharClass::Space) return run_end(text, pos + 1, next.cls) - pos;
  }
  if (c.cls != CharClass::Space) return run_end(text, pos, c.cls) - pos;

  // Whitespace: "\s+(?!\S)" then "\s+".
  size_t end = pos;
  size_t last_start = pos;  // start of the run's last character
  size_t count = 0;
  while (end < text.size()) {
    const Char w = char_at(text, end);
    if (w.cls != CharClass::Space) break;
    last_start = end;
    end += w.len;
    ++count;
  }
  if (end == text.size() || count == 1) return end - pos;
  return last_start - pos;  // leave the last whitespace character to the next word
}

}  // namespace mamba::pretok
