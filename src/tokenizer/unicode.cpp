#include "tokenizer/unicode.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/uchar.h>
#include <unicode/uniset.h>
#include <unicode/unistr.h>

#include <array>
#include <memory>

#include "common/error.h"

namespace mamba::unicode {

bool parse_normalization(std::string_view name, Normalization* out) {
  if (name == "NFC")
    *out = Normalization::NFC;
  else if (name == "NFD")
    *out = Normalization::NFD;
  else if (name == "NFKC")
    *out = Normalization::NFKC;
  else if (name == "NFKD")
    *out = Normalization::NFKD;
  else
    return false;
  return true;
}

namespace {

const icu::Normalizer2& base_normalizer(Normalization form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case Normalization::NFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case Normalization::NFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case Normalization::NFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case Normalization::NFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
    case Normalization::None:
      break;
  }
  if (n == nullptr || U_FAILURE(status)) fail("ICU normalizer unavailable: ", u_errorName(status));
  return *n;
}

// HF tokenizers normalises with Unicode 9.0 tables (its unicode-normalization-alignments
// crate): characters assigned later are left as they are, and a combining mark added since
// then has combining class 0, so nothing is reordered around it. ICU reproduces exactly that
// by restricting its current normaliser to the characters of Unicode 9.0, the way ICU itself
// emulates older Unicode versions.
struct FilteredNormalizer {
  icu::UnicodeSet unicode9;
  std::unique_ptr<icu::FilteredNormalizer2> normalizer;

  explicit FilteredNormalizer(Normalization form) {
    UErrorCode status = U_ZERO_ERROR;
    unicode9.applyPattern(icu::UnicodeString(u"[:age=9.0:]"), status);
    if (U_FAILURE(status)) fail("ICU cannot build the Unicode 9.0 set: ", u_errorName(status));
    unicode9.freeze();
    normalizer = std::make_unique<icu::FilteredNormalizer2>(base_normalizer(form), unicode9);
  }
};

const icu::Normalizer2& normalizer(Normalization form) {
  static const FilteredNormalizer nfc(Normalization::NFC), nfd(Normalization::NFD),
      nfkc(Normalization::NFKC), nfkd(Normalization::NFKD);
  switch (form) {
    case Normalization::NFC:
      return *nfc.normalizer;
    case Normalization::NFD:
      return *nfd.normalizer;
    case Normalization::NFKC:
      return *nfkc.normalizer;
    default:
      return *nfkd.normalizer;
  }
}

}  // namespace

std::string_view normalize(std::string_view text, Normalization form, std::string& scratch) {
  if (form == Normalization::None || text.empty()) return text;
  const icu::Normalizer2& n = normalizer(form);
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  // The quick check answers for pure ASCII and most real text without building a copy.
  if (n.isNormalizedUTF8(piece, status) && U_SUCCESS(status)) return text;
  status = U_ZERO_ERROR;
  scratch.clear();
  scratch.reserve(text.size() + text.size() / 8);
  icu::StringByteSink<std::string> sink(&scratch);
  n.normalizeUTF8(0, piece, sink, nullptr, status);
  if (U_FAILURE(status)) fail("Unicode normalisation failed: ", u_errorName(status));
  return scratch;
}

bool is_white_space(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

namespace {

CharClass classify(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  if (u_isUWhiteSpace(c)) return CharClass::Space;
  switch (u_charType(c)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return CharClass::Letter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return CharClass::Number;
    default:
      return CharClass::Other;
  }
}

// ASCII is most of the text the tokenizers see; look it up without calling into ICU.
const std::array<CharClass, 128>& ascii_classes() {
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> t{};
    for (char32_t c = 0; c < 128; ++c) t[c] = classify(c);
    return t;
  }();
  return table;
}

}  // namespace

CharClass char_class(char32_t cp) {
  if (cp < 128) return ascii_classes()[cp];
  return classify(cp);
}

}  // namespace mamba::unicode
