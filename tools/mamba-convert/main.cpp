// mamba-convert: Hugging Face model directory -> GGUF.
//
//   mamba-convert HF_DIR -o OUT.gguf [--outtype f32|f16|bf16] [--vocab-only]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "common/tool_main.h"
#include "convert/converter.h"

namespace {

// "[#####.....] 52% 120/230 MiB", redrawn in place; only used when stderr is a terminal.
void draw_progress(uint64_t done, uint64_t total) {
  constexpr int kWidth = 30;
  const double frac = total ? double(done) / double(total) : 1.0;
  const int filled = int(frac * kWidth);
  static int last_permille = -1;  // redraw only when the bar visibly moves
  const int permille = int(frac * 1000);
  if (permille == last_permille && done < total) return;
  last_permille = permille;
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '.');
  std::fprintf(stderr, "\r[%s] %3d%% %.0f/%.0f MiB", bar.c_str(), int(frac * 100),
               double(done) / (1 << 20), double(total) / (1 << 20));
  if (done >= total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Convert a Hugging Face Mamba, Mamba-2 or Falcon-Mamba model directory to GGUF"};
  std::string dir, out, outtype = "auto";
  bool vocab_only = false;
  app.add_option("HF_DIR", dir, "model directory with config.json and model.safetensors")
      ->required();
  app.add_option("-o,--output", out, "output GGUF file")->required();
  app.add_option("--outtype", outtype,
                 "type of the weight matrices: f32, f16 or bf16 (default: as stored, f32 for "
                 "f32 weights); norms, biases, conv1d, A and D stay f32");
  app.add_flag("--vocab-only", vocab_only, "write only the metadata and the tokenizer");
  return mamba::tool_main(app, argc, argv, [&] {
    mamba::convert::ConvertOptions opt;
    opt.hf_dir = dir;
    opt.out_path = out;
    opt.outtype = mamba::convert::parse_outtype(outtype);
    opt.vocab_only = vocab_only;
    if (isatty(STDERR_FILENO)) opt.progress = draw_progress;
    const auto r = mamba::convert::convert(opt);
    std::printf("wrote %s (%zu tensors, %.2f MiB, arch %s)\n", out.c_str(), r.n_tensors,
                double(r.file_bytes) / (1 << 20), mamba::arch_gguf_name(r.arch));
    return 0;
  });
}
