// Unicode services for the tokenizers, all backed by ICU: normalisation forms and the
// character classes the byte-level pre-tokenizer needs. No Unicode tables live in this code.
#pragma once

#include <string>
#include <string_view>

namespace mamba::unicode {

enum class Normalization { None, NFC, NFD, NFKC, NFKD };

// Parses "NFC", "NFD", "NFKC", "NFKD" (HF tokenizer.json normalizer type names).
bool parse_normalization(std::string_view name, Normalization* out);

// Normalises well-formed UTF-8 as HF tokenizers does, whose tables are Unicode 9.0: characters
// assigned since are left untouched (ICU's normaliser restricted to Unicode 9.0 characters).
// Returns `text` unchanged (no copy into `scratch`) when it is already normalised, which is
// the common case; otherwise writes into `scratch`.
std::string_view normalize(std::string_view text, Normalization form, std::string& scratch);

// The classes of the GPT-2 pre-tokenizer regex: \p{L}, \p{N}, \s (White_Space) and the rest.
// From ICU's Unicode version (15.0 for ICU 72); HF's regex engine may know a newer one, whose
// newly assigned letters and digits are "the rest" here.
enum class CharClass : unsigned char { Letter, Number, Space, Other };
CharClass char_class(char32_t cp);

// The White_Space property (Rust's char::is_whitespace, Oniguruma's \s).
bool is_white_space(char32_t cp);

}  // namespace mamba::unicode
