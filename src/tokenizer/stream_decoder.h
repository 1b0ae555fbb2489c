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
  explicit StreamDecoder(const Tokenizer& tokenizer, bool show_special = false)
      : tok_(tokenizer), show_special_(show_special) {}

  // Text completed by this token (often empty while a character is unfinished).
  std::string feed(int32_t id) {
    std::string out;
    feed(id, out);
    return out;
  }
  void feed(int32_t id, std::string& out);  // appends to `out`

  // Ends the stream: returns the held-back bytes as U+FFFD, then starts afresh.
  std::string finish();
  void finish(std::string& out);

  void reset();
  bool has_pending() const { return !pending_.empty(); }

 private:
  void drain(bool final, std::string& out);

  const Tokenizer& tok_;
  bool show_special_;
  std::string pending_;   // bytes of an unfinished character
  bool at_start_ = true;  // nothing output yet (for SentencePiece's dummy-prefix space)
};

}  // namespace mamba
