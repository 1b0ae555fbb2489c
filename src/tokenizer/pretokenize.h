// The GPT-2 / GPT-NeoX byte-level pre-tokenizer, written as a scanner.
//
// It splits text exactly as HF tokenizers' ByteLevel pre-tokenizer does with its regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (alternatives tried in that order at each position, the first that matches wins):
//   - an ASCII apostrophe followed by s t re ve m ll d (lower case only) is a word;
//   - otherwise an optional single U+0020 then a run of letters, of numbers, or of "other"
//     characters (neither White_Space, letter nor number);
//   - otherwise a run of White_Space: the whole run when it ends the text, else all but its
//     last character (which then starts the next word, e.g. " word"), or the single
//     whitespace character when the run has only one.
// Character classes come from ICU (see unicode.h).
#pragma once

#include <string_view>

namespace mamba::pretok {

// Calls `emit(std::string_view word)` for each word of `text` (well-formed UTF-8), in order.
// The words concatenate back to `text`.
template <typename Emit>
void split_gpt2(std::string_view text, Emit&& emit);

// Non-template core: returns the byte length of the word starting at text[pos].
size_t gpt2_word_length(std::string_view text, size_t pos);

template <typename Emit>
void split_gpt2(std::string_view text, Emit&& emit) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t len = gpt2_word_length(text, pos);
    emit(text.substr(pos, len));
    pos += len;
  }
}

}  // namespace mamba::pretok
