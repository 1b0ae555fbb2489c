// Fuzz target: config.json text through the Hugging Face / state-spaces config mapping
// (Python-style bare Infinity/NaN accepted), then the ModelConfig checks the loader applies.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "convert/hf_config.h"

using namespace mamba;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    convert::HfConfig c = convert::parse_hf_config(text);
    (void)c.padded_vocab_size();
    c.model.n_vocab = c.vocab_size > 0 ? c.vocab_size : 1;
    c.model.validate();
    (void)c.model.state_bytes();
    (void)c.model.in_proj_rows();
    (void)c.model.conv_dim();
  } catch (const Error&) {
  }
  // The Infinity/NaN rewrite must not grow or shrink anything but the tokens it quotes.
  (void)convert::python_json_to_strict(text);
  return 0;
}
