// UTF-8 decoding and repair shared by the tokenizers and the streaming decoder.
//
// Well-formed UTF-8 follows Unicode's table of valid byte sequences (no overlong forms, no
// surrogates, nothing above U+10FFFF). Ill-formed input becomes U+FFFD in one of two ways,
// because the two reference libraries differ and decoded text must match them exactly:
//   MaximalSubpart  one U+FFFD per maximal prefix of a valid sequence (Unicode's recommended
//                   practice; what HF tokenizers' from_utf8_lossy does): E2 82 41 -> U+FFFD 'A'
//   PerByte         one U+FFFD per byte that does not start a complete character (what
//                   sentencepiece does for byte pieces): E2 82 41 -> U+FFFD U+FFFD 'A'
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mamba::utf8 {

enum class Repair { MaximalSubpart, PerByte };

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// What the bytes at the start of `s` hold.
struct Scan {
  enum Kind { Char, Incomplete, Invalid } kind;
  // Char: bytes of the character. Incomplete: all of `s`, a valid but unfinished prefix.
  // Invalid: bytes of the maximal valid prefix before the offending byte (at least 1).
  size_t len;
  char32_t cp;  // Char only
};
Scan scan(std::string_view s);  // s must not be empty

// Decodes the well-formed character at s[0]; returns its byte length, or 0 if ill-formed.
size_t decode(std::string_view s, char32_t* cp);

void append(std::string& out, char32_t cp);
bool is_valid(std::string_view s);

// Appends `s` to `out` with ill-formed sequences replaced. When `final` is false a valid but
// unfinished character at the end is not consumed: the return value is the number of bytes
// of `s` consumed (always all of them when `final`).
size_t repair_append(std::string_view s, Repair mode, bool final, std::string& out);

inline std::string repair(std::string_view s, Repair mode) {
  std::string out;
  out.reserve(s.size());
  repair_append(s, mode, true, out);
  return out;
}

}  // namespace mamba::utf8
