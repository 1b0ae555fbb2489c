// GPT-2's byte-level alphabet: each of the 256 byte values is written as one printable
// Unicode character, so that BPE vocabularies can be stored as text. Bytes that are printable
// Latin-1 characters ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves; the
// other 68 (controls, space, U+00A0, U+00AD) map in order to U+0100, U+0101, ... (so the
// space byte is 'Ġ' U+0120 and '\n' is 'Ċ' U+010A).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mamba::byte_level {

// The character for byte `b`, as UTF-8.
const std::string& symbol(uint8_t b);

// Bytes -> their byte-level spelling.
std::string encode(std::string_view bytes);

// A vocabulary entry -> the bytes it stands for. Entries holding a character outside the
// alphabet (added tokens such as "  " or "<|endoftext|>" stored as plain text) are taken as
// their own UTF-8 bytes, which is what HF's ByteLevel decoder does.
std::string decode_token(std::string_view token);

}  // namespace mamba::byte_level
