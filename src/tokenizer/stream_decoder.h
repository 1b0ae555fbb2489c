// Token-by-token detokenization for generation output.
//
// Byte-level tokens often carry part of a UTF-8 character (an emoji is commonly 2-4 tokens).
// The decoder holds such bytes back until the character is complete, so what it returns is
// always well-formed UTF-8 that can be printed at once. Bytes that can no longer form a
// character become U+FFFD as soon as that is certain, and at finish() anything still held
// back becomes U+FFFD too: never raw invalid bytes.
//
// Concatenating every feed() result and finish() gives exactly Tokenizer::decode(ids).
#pragma once

#include <cstdint>
#include <string>

namespace mamba {

class Tokenizer;

class StreamDecoder {
 public:
  // show_special: include special tokens' text. text_start: the tokens begin a text, so
  // SentencePiece's dummy-prefix space before the first word is dropped (as decode() does);
  // pass false when they continue text already shown, e.g. generated tokens after a prompt,
  // where that space is a real one.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool show_special = false,
                         bool text_start = true)
      : tok_(tokenizer),
        show_special_(show_special),
        text_start_(text_start),
        at_start_(text_start) {}

  // Text completed by this token (often empty while a character is unfinished).
  std::string feed(int32_t id) {
    std::string out;
    feed(id, out);
    return out;
  }
  void feed(int32_t id, std::string& out);  // appends to `out`

  // Ends the stream: returns the held-back bytes as U+FFFD, then starts afresh (reset()).
  std::string finish();
  void finish(std::string& out);

  void reset();  // forgets held-back bytes; the next token starts as the constructor said
  bool has_pending() const { return !pending_.empty(); }

 private:
  void drain(bool final, std::string& out);

  const Tokenizer& tok_;
  bool show_special_;
  bool text_start_;
  std::string pending_;  // bytes of an unfinished character
  bool at_start_;        // nothing output yet (for SentencePiece's dummy-prefix space)
};

}  // namespace mamba
