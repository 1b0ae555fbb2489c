#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace mamba::byte_level {

namespace {

bool stands_for_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8;
  std::array<int16_t, 512> from_char{};  // code point (all below 512) -> byte, or -1

  Tables() {
    from_char.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = stands_for_itself(b) ? static_cast<char32_t>(b) : next++;
      utf8::append(to_utf8[b], to_char[b]);
      from_char[to_char[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::string& symbol(uint8_t b) { return tables().to_utf8[b]; }

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += t.to_utf8[b];
  return out;
}

std::string decode_token(std::string_view token) {
  const Tables& t = tables();
  std::string out;
  out.reserve(token.size());
  size_t i = 0;
  while (i < token.size()) {
    char32_t cp = 0;
    const size_t len = utf8::decode(token.substr(i), &cp);
    if (len == 0 || cp >= t.from_char.size() || t.from_char[cp] < 0) {
      return std::string(token);  // not a byte-level spelling: the text itself
    }
    out.push_back(static_cast<char>(t.from_char[cp]));
    i += len;
  }
  return out;
}

}  // namespace mamba::byte_level
