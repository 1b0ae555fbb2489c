// mamba-random: write a random-weights GGUF model of any shape (for benchmarks and tests).
//
//   mamba-random --arch mamba --d-model 768 --n-layer 24 --n-vocab 50280 --dtype f32 -o out.gguf
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <string>

#include "common/error.h"
#include "common/tool_main.h"
#include "model/random_model.h"

using namespace mamba;

static gguf::DType parse_dtype(const std::string& s) {
  if (s == "f32") return gguf::DType::F32;
  if (s == "f16") return gguf::DType::F16;
  if (s == "bf16") return gguf::DType::BF16;
  fail("unknown dtype '", s, "' (expected f32, f16 or bf16)");
}

int main(int argc, char** argv) {
  CLI::App app{"mamba-random: write a random-weights Mamba model as GGUF"};
  RandomModelOptions o;
  std::string arch = "mamba", dtype = "f32", small_dtype = "f32", out;
  bool untied = false, no_conv_bias = false;
  app.add_option("--arch", arch, "mamba, mamba2 or falcon-mamba");
  app.add_option("--d-model", o.d_model, "residual width");
  app.add_option("--n-layer", o.n_layer, "number of blocks");
  app.add_option("--n-vocab", o.n_vocab, "vocabulary rows");
  app.add_option("--d-state", o.d_state, "SSM state size N");
  app.add_option("--d-conv", o.d_conv, "conv1d width");
  app.add_option("--expand", o.expand, "d_inner = expand * d_model");
  app.add_option("--dt-rank", o.dt_rank, "Mamba-1 dt rank (0 = ceil(d_model / 16))");
  app.add_option("--n-groups", o.n_groups, "Mamba-2 B/C groups");
  app.add_option("--head-dim", o.head_dim, "Mamba-2 head dim");
  app.add_option("--chunk-size", o.chunk_size, "Mamba-2 chunk size");
  app.add_flag("--bias", o.proj_bias, "in_proj and out_proj biases");
  app.add_flag("--no-conv-bias", no_conv_bias, "no conv1d bias");
  app.add_flag("--untied", untied, "separate output.weight");
  app.add_option("--dtype", dtype, "dtype of the matrices: f32, f16, bf16");
  app.add_option("--small-dtype", small_dtype, "dtype of norms, biases, conv, A, D");
  app.add_option("--scale", o.weight_scale, "weight scale");
  app.add_option("--seed", o.seed, "random seed");
  app.add_option("--eos", o.eos_id, "tokenizer.ggml.eos_token_id to write (-1: none)");
  app.add_option("-o,--output", out, "output GGUF file")->required();
  return tool_main(app, argc, argv, [&] {
    if (arch == "mamba") {
      o.arch = Arch::Mamba1;
    } else if (arch == "falcon-mamba") {
      o.arch = Arch::Mamba1;
      o.falcon = true;
    } else if (arch == "mamba2") {
      o.arch = Arch::Mamba2;
    } else {
      fail("unknown arch '", arch, "' (expected mamba, mamba2 or falcon-mamba)");
    }
    o.dtype = parse_dtype(dtype);
    o.small_dtype = parse_dtype(small_dtype);
    o.tied = !untied;
    o.conv_bias = !no_conv_bias;
    write_random_model(o, out);
    return 0;
  });
}
