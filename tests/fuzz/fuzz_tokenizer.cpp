// Fuzz target: the two tokenizer families on arbitrary bytes.
//
// The real tokenizers are loaded once: GPT-NeoX byte-level BPE from the NeoX test fixture, and
// SentencePiece from Mistral v3's tokenizer.model (MAMBA_FUZZ_SPM overrides the path; without
// the file only BPE is fuzzed). The first input byte picks the tokenizer and what to do:
//   bit 0: BPE or SentencePiece;  bit 1: encode the rest as text, or decode it as int32 ids.
// Checked, beyond "no memory error": decoded text is valid UTF-8, the StreamDecoder gives
// exactly decode(), ids from encode() are inside the vocabulary, and text that both references
// round-trip (ASCII for BPE, where NFC changes nothing) comes back from decode(encode(x)).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

using namespace mamba;

namespace {

struct Tokenizers {
  std::unique_ptr<Tokenizer> bpe, spm;
};

const Tokenizers& tokenizers() {
  static const Tokenizers t = [] {
    Tokenizers r;
    r.bpe = load_tokenizer(MAMBA_SOURCE_DIR "/tests/fixtures/models/mamba1_neox_f16/hf/tokenizer.json");
    const char* env = std::getenv("MAMBA_FUZZ_SPM");
    const std::string spm =
        env ? env : MAMBA_SOURCE_DIR "/../shared/data/tokenizers/mistral-v3.tokenizer.model";
    if (std::filesystem::is_regular_file(spm)) r.spm = load_tokenizer(spm);
    else std::fprintf(stderr, "fuzz_tokenizer: %s not found, SentencePiece not fuzzed\n", spm.c_str());
    return r;
  }();
  return t;
}

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// decode() and the streamed decode agree, and both are valid UTF-8.
std::string decode_checked(const Tokenizer& tok, const std::vector<int32_t>& ids, bool show) {
  const std::string text = tok.decode(ids, show);
  check(utf8::is_valid(text));
  StreamDecoder sd(tok, show);
  std::string streamed;
  for (int32_t id : ids) {
    const size_t before = streamed.size();
    sd.feed(id, streamed);
    // Each piece handed out is printable at once: complete characters only.
    check(utf8::is_valid(std::string_view(streamed).substr(before)));
  }
  sd.finish(streamed);
  check(streamed == text);
  return text;
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Tokenizers& t = tokenizers();
  const uint8_t mode = data[0];
  const Tokenizer* tok = (mode & 1) && t.spm ? t.spm.get() : t.bpe.get();
  const bool is_bpe = tok == t.bpe.get();
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);

  if ((mode & 2) == 0) {
    const std::vector<int32_t> ids = tok->encode(rest, /*add_special=*/false);
    for (int32_t id : ids) check(id >= 0 && size_t(id) < tok->vocab_size());
    const std::string shown = decode_checked(*tok, ids, true);
    decode_checked(*tok, ids, false);
    if (is_bpe && is_ascii(rest)) check(shown == rest);
    (void)tok->encode(rest, /*add_special=*/true);
  } else {
    // Ids as int32, any value: out-of-range ids must decode to nothing, not crash.
    std::vector<int32_t> ids(rest.size() / 4);
    if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * 4);
    // Bias most ids into the vocabulary so decoding itself gets exercised.
    for (int32_t& id : ids)
      if (id >= 0 && (id & 0x40000000) == 0) id = int32_t(uint32_t(id) % tok->vocab_size());
    decode_checked(*tok, ids, (mode & 4) != 0);
    for (int32_t id : ids) (void)tok->token_to_piece(id);
  }
  return 0;
}
