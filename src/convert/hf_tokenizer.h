// Embeds a Hugging Face tokenizer into GGUF metadata (llama.cpp's tokenizer.ggml.* keys).
//
//   tokenizer.json (BPE)      -> tokenizer.ggml.model "gpt2": tokens, token_type, merges,
//                                tokenizer.ggml.pre, and tokenizer.huggingface.json (the whole
//                                file, so the exact HF pipeline can be rebuilt).
//   tokenizer.model (SentencePiece) -> tokenizer.ggml.model "llama": tokens, scores,
//                                token_type, and tokenizer.sentencepiece.model (the raw bytes).
// Both get the special token ids and add_bos_token / add_eos_token. The token arrays have
// exactly n_vocab entries: ids the tokenizer does not use (the embedding's padding rows) are
// "[PAD<id>]" with type 5 (unused).
//
// Token types (llama.cpp's): 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "convert/hf_config.h"

namespace mamba::gguf {
class Writer;
}

namespace mamba::convert {

struct TokenizerSummary {
  std::string model;     // "gpt2", "llama", or "" when the directory has no tokenizer
  std::string file;      // the file it came from
  int64_t n_tokens = 0;  // real tokens (the rest of n_vocab is padding)
};

// Adds the tokenizer.* keys for the tokenizer in `dir` to `w`. Mamba-1 prefers tokenizer.json
// and Mamba-2 prefers tokenizer.model when both exist. With neither, calls `warn` and adds
// nothing. Throws mamba::Error if the tokenizer is malformed or has more than n_vocab tokens.
TokenizerSummary add_tokenizer(const std::string& dir, const HfConfig& cfg, int64_t n_vocab,
                               gguf::Writer& w,
                               const std::function<void(const std::string&)>& warn);

}  // namespace mamba::convert
