#include "tokenizer/utf8.h"

namespace mamba::utf8 {

namespace {

// Bounds for the second byte of a sequence given its lead byte (Unicode table 3-7); later
// bytes are always 80..BF. Returns the sequence length, or 0 for a byte that cannot lead.
int lead_info(uint8_t b, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b < 0x80) return 1;
  if (b < 0xC2) return 0;
  if (b < 0xE0) return 2;
  if (b < 0xF0) {
    if (b == 0xE0) *lo = 0xA0;  // no overlong forms
    if (b == 0xED) *hi = 0x9F;  // no surrogates
    return 3;
  }
  if (b < 0xF5) {
    if (b == 0xF0) *lo = 0x90;
    if (b == 0xF4) *hi = 0x8F;  // nothing above U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

Scan scan(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  uint8_t lo, hi;
  const int need = lead_info(p[0], &lo, &hi);
  if (need == 0) return {Scan::Invalid, 1, 0};
  if (need == 1) return {Scan::Char, 1, p[0]};
  char32_t cp = p[0] & (0x7F >> need);
  for (int i = 1; i < need; ++i) {
    if (static_cast<size_t>(i) >= s.size()) return {Scan::Incomplete, s.size(), 0};
    const uint8_t b = p[i];
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
      return {Scan::Invalid, static_cast<size_t>(i), 0};
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Scan::Char, static_cast<size_t>(need), cp};
}

size_t decode(std::string_view s, char32_t* cp) {
  const Scan r = scan(s);
  if (r.kind != Scan::Char) return 0;
  *cp = r.cp;
  return r.len;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const Scan r = scan(s.substr(i));
    if (r.kind != Scan::Char) return false;
    i += r.len;
  }
  return true;
}

size_t repair_append(std::string_view s, Repair mode, bool final, std::string& out) {
  size_t i = 0;
  while (i < s.size()) {
    // Copy runs of ASCII at once: the common case by far.
    size_t j = i;
    while (j < s.size() && static_cast<uint8_t>(s[j]) < 0x80) ++j;
    out.append(s.data() + i, j - i);
    i = j;
    if (i == s.size()) break;
    const Scan r = scan(s.substr(i));
    if (r.kind == Scan::Char) {
      out.append(s.data() + i, r.len);
      i += r.len;
    } else if (r.kind == Scan::Incomplete && !final) {
      break;  // may still be completed by bytes that have not arrived yet
    } else {
      out.append(kReplacement);
      i += mode == Repair::MaximalSubpart ? r.len : 1;
    }
  }
  return i;
}

}  // namespace mamba::utf8
