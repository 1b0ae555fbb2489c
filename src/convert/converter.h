// Hugging Face directory -> GGUF: the tensor name mapping and the write.
//
// Output names and layouts are llama.cpp's (ne order is the reverse of the PyTorch shape):
//   token_embd.weight   (n_vocab, d_model)      output_norm.weight (d_model)
//   output.weight       (n_vocab, d_model)      omitted when tied to token_embd
//   blk.N.attn_norm.weight (d_model)
//   blk.N.ssm_in.weight (in_proj_rows, d_model)      [+ .bias]
//   blk.N.ssm_conv1d.weight (conv_dim, d_conv)       squeezed from (conv_dim, 1, d_conv)
//   blk.N.ssm_conv1d.bias (conv_dim)
//   Mamba-1: blk.N.ssm_x.weight (dt_rank + 2*d_state, d_inner)
//            blk.N.ssm_dt.weight (d_inner, dt_rank), blk.N.ssm_dt.bias (d_inner)
//            blk.N.ssm_a (d_inner, d_state) = -exp(A_log), blk.N.ssm_d (d_inner)
//   Mamba-2: blk.N.ssm_dt.bias (n_heads)  from mixer.dt_bias
//            blk.N.ssm_a (n_heads, 1) = -exp(A_log), blk.N.ssm_d (n_heads, 1)
//            blk.N.ssm_norm.weight (n_groups, d_inner / n_groups)
//   blk.N.ssm_out.weight (d_model, d_inner)          [+ .bias]
// The outtype applies to the 2-D matrices (token_embd, output, ssm_in, ssm_x, ssm_dt,
// ssm_out); norms, biases, conv1d, A and D are always float32 (they are small and the
// recurrence is sensitive to them).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "convert/hf_tokenizer.h"
#include "gguf/gguf.h"
#include "model/config.h"

namespace mamba::convert {

enum class OutType { Auto, F32, F16, BF16 };  // Auto: f32 for f32 sources, else as stored
// "auto", "f32", "f16" or "bf16"; anything else throws.
OutType parse_outtype(const std::string& s);

struct ConvertOptions {
  std::string hf_dir;
  std::string out_path;
  OutType outtype = OutType::Auto;
  bool vocab_only = false;  // metadata and tokenizer only, no tensors
  std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;
  std::function<void(const std::string&)> warn;  // defaults to "warning: ..." on stderr
};

struct ConvertResult {
  Arch arch = Arch::Mamba1;
  int64_t n_vocab = 0;
  size_t n_tensors = 0;
  uint64_t file_bytes = 0;
  gguf::DType matrix_dtype = gguf::DType::F32;
  bool output_tied = false;  // output.weight omitted
  TokenizerSummary tokenizer;
};

// Converts opt.hf_dir to opt.out_path. Throws mamba::Error with one line naming the problem
// (missing or contradictory config, missing / unexpected / misshapen tensors, bad files).
ConvertResult convert(const ConvertOptions& opt);

}  // namespace mamba::convert
