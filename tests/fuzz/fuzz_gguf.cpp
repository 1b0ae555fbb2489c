// Fuzz target: a whole GGUF file's bytes, through everything that reads a model file.
// The reader parses and validates the header; then, as mamba-cli does, the loader checks the
// tensors against the config (including the NaN/Inf scan of the weights) and the tokenizer is
// rebuilt from the metadata and used once. The only acceptable failure is mamba::Error.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"

using namespace mamba;

namespace {

// Reads every value through the typed getters, as inspectors and the config mapping do.
void touch_metadata(const gguf::File& f) {
  for (const auto& [key, v] : f.metadata()) {
    (void)gguf::describe_type(v);
    try {
      switch (v.type) {
        case gguf::Type::STRING: (void)f.get_str(key); break;
        case gguf::Type::BOOL: (void)f.get_bool(key); break;
        case gguf::Type::FLOAT32:
        case gguf::Type::FLOAT64: (void)f.get_float(key); break;
        case gguf::Type::ARRAY:
          if (v.elem == gguf::Type::STRING) (void)f.get_str_array(key);
          else if (v.elem == gguf::Type::FLOAT32 || v.elem == gguf::Type::FLOAT64)
            (void)f.get_float_array(key);
          else if (v.elem != gguf::Type::ARRAY && v.elem != gguf::Type::BOOL)
            (void)f.get_int_array(key);
          break;
        default: (void)f.get_int(key); break;
      }
    } catch (const Error&) {
    }
  }
}

void use_tokenizer(const gguf::File& f) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = tokenizer_from_gguf(f);
  } catch (const Error&) {
    return;
  }
  if (!tok) return;
  const std::vector<int32_t> ids = tok->encode("Hello world! \xF0\x9F\x98\x80 <s>\n\t 123");
  (void)tok->decode(ids, true);
  // Every id of a small vocabulary, and the edges of a large one, through both decoders.
  std::vector<int32_t> probe;
  const int32_t n = int32_t(std::min<size_t>(tok->vocab_size(), 1u << 20));
  for (int32_t i = 0; i < std::min(n, 300); i++) probe.push_back(i);
  for (int32_t i = std::max(0, n - 8); i < n + 2; i++) probe.push_back(i);
  probe.push_back(-1);
  StreamDecoder sd(*tok, true);
  std::string streamed;
  for (int32_t id : probe) sd.feed(id, streamed);
  sd.finish(streamed);
  if (streamed != tok->decode(probe, true)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<gguf::File> f;
  try {
    f = gguf::File::from_memory(data, size);
  } catch (const Error&) {
    return 0;
  }
  touch_metadata(*f);
  use_tokenizer(*f);
  try {
    (void)Model::from_gguf(std::move(f));
  } catch (const Error&) {
  }
  return 0;
}
