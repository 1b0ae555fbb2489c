#include "tokenizer/stream_decoder.h"

#include "tokenizer/tokenizer.h"

namespace mamba {

void StreamDecoder::drain(bool final, std::string& out) {
  if (pending_.empty()) return;
  const size_t before = out.size();
  const size_t used = utf8::repair_append(pending_, tok_.utf8_repair(), final, out);
  pending_.erase(0, used);
  if (out.size() != before) at_start_ = false;
}

void StreamDecoder::feed(int32_t id, std::string& out) {
  TokenText t = tok_.token_text(id, show_special_);
  if (t.joins_bytes) {
    pending_ += t.bytes;
    drain(false, out);
    return;
  }
  // A self-contained piece ends any unfinished character before it.
  drain(true, out);
  std::string_view text = t.bytes;
  if (t.leading_space != LeadingSpace::Keep && at_start_ && !text.empty() && text[0] == ' ') {
    text.remove_prefix(1);
    // With DropOnce only the first such space is the dummy prefix.
    if (t.leading_space == LeadingSpace::DropOnce) at_start_ = false;
  }
  if (!text.empty()) {
    // Pieces are well-formed already; repairing keeps the no-invalid-bytes promise regardless.
    utf8::repair_append(text, tok_.utf8_repair(), true, out);
    at_start_ = false;
  }
}

void StreamDecoder::finish(std::string& out) {
  drain(true, out);
  reset();
}

std::string StreamDecoder::finish() {
  std::string out;
  finish(out);
  return out;
}

void StreamDecoder::reset() {
  pending_.clear();
  at_start_ = text_start_;
}

}  // namespace mamba
