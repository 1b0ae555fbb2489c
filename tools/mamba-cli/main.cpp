// mamba-cli: text generation with a Mamba model.
//
//   mamba-cli -p "def read_file(filename):" -n 64      the bundled model, greedy
//   mamba-cli -m MODEL -f prompt.txt --temp 0.8 -s 1   sampling, reproducible with the seed
//   echo "import os" | mamba-cli -n 32                 the prompt from stdin
//   mamba-cli -i                                       interactive: each line continues the text
//   mamba-cli -m MODEL --prompt-ids 1,2,3 -n 8 --json  scripts: one JSON object
//
// This file only declares the flags (llama.cpp's names where the meaning is the same) and
// hands them to run_cli() (src/engine/cli_session.h), which does the work.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "common/tool_main.h"
#include "engine/cli_session.h"

using namespace mamba;

int main(int argc, char** argv) {
  CLI::App app{"mamba-cli: generate text with a Mamba, Mamba-2 or Falcon-Mamba model"};
  app.footer(
      "Without -n, generation runs until end-of-sequence or a --stop string, at most " +
      std::to_string(kDefaultMaxTokens) +
      " tokens. Greedy (--temp 0) is the default; the same model, prompt and --seed always "
      "give the same text. In -i mode each line continues the text, /reset starts over, Ctrl-C "
      "stops a generation and Ctrl-C at the prompt quits.");
  app.set_version_flag("--version", std::string("mamba-cli ") + MAMBA_VERSION);
  CliOptions o;
  o.model = MAMBA_DEFAULT_MODEL;
  SamplerParams& sp = o.sampling;

  // ---- Model ----
  const std::string kModel = "Model";
  app.add_option("-m,--model", o.model, "GGUF model file (default: the bundled demo model)")
      ->type_name("FILE")
      ->group(kModel);
  app.add_option("--device", o.device,
                 "cpu or cuda (default: cuda when built in and a GPU is usable, else cpu)")
      ->type_name("cpu|cuda")
      ->group(kModel);
  app.add_option("-t,--threads", o.n_threads, "CPU threads (default: all cores)")
      ->type_name("N")->group(kModel);

  // ---- Prompt ----
  const std::string kPrompt = "Prompt (one of them; none: stdin when it is not a terminal)";
  std::string prompt;
  CLI::Option* p = app.add_option("-p,--prompt", prompt, "prompt text")
      ->type_name("TEXT")->group(kPrompt);
  app.add_option("-f,--file", o.prompt_file, "file holding the prompt text (its bytes exactly)")
      ->type_name("FILE")
      ->group(kPrompt);
  app.add_option("--prompt-ids", o.prompt_ids, "comma-separated prompt token ids")
      ->type_name("IDS")
      ->group(kPrompt);

  // ---- Generation ----
  const std::string kGen = "Generation";
  int n_predict = 0;
  CLI::Option* n = app.add_option("-n,--n-predict", n_predict,
                                  "tokens to generate (default: until end-of-sequence, at most " +
                                      std::to_string(kDefaultMaxTokens) + ")")
      ->type_name("N")
                       ->group(kGen);
  app.add_option("--stop", o.stop,
                 "stop when the text contains STR (repeatable); STR is not printed")
      ->type_name("STR")
      ->group(kGen)
      ->allow_extra_args(false);
  app.add_flag("--ignore-eos", o.ignore_eos, "never stop at (or pick) end-of-sequence")
      ->group(kGen);
  app.add_flag("-i,--interactive", o.interactive,
               "read lines from stdin, each continues the text (/reset starts over)")
      ->group(kGen);

  // ---- Sampling ----
  const std::string kSampling = "Sampling (llama.cpp's names and order)";
  app.add_option("--temp", sp.temp, "temperature; 0 = greedy")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--top-k", sp.top_k, "keep the k most likely; 0 = off")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--top-p", sp.top_p, "nucleus: smallest set with mass >= p; 1 = off")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--min-p", sp.min_p, "drop tokens below min-p * the top probability; 0 = off")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--typical", sp.typical_p, "locally typical sampling; 1 = off")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--repeat-penalty", sp.repeat_penalty, "penalise repeated tokens; 1 = off")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--repeat-last-n", sp.repeat_last_n,
                 "tokens the penalties look back on; 0 = off, -1 = all")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--presence-penalty", sp.presence_penalty, "subtract once per seen token")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--frequency-penalty", sp.frequency_penalty,
                 "subtract times the token's count")
      ->capture_default_str()
      ->group(kSampling);
  app.add_option("--logit-bias", o.logit_bias,
                 "ID(+|-)BIAS, e.g. 15043+1 or 2-inf (repeatable)")
      ->type_name("ID(+|-)BIAS")
      ->group(kSampling)
      ->allow_extra_args(false);
  app.add_option("-s,--seed", o.seed, "random seed; -1 = a random one (reported)")
      ->type_name("SEED")
      ->capture_default_str()
      ->group(kSampling);

  // ---- State ----
  const std::string kState = "State";
  app.add_option("--prompt-cache", o.prompt_cache,
                 "file with the state after the prompt: reused when the prompt starts with "
                 "its tokens, written otherwise")
      ->type_name("FILE")
      ->group(kState);
  app.add_flag("--prompt-cache-ro", o.prompt_cache_ro, "use --prompt-cache but never write it")
      ->group(kState);
  app.add_option("--state-save", o.state_save,
                 "after generation, save the state (prompt and generated text) to FILE")
      ->type_name("FILE")
      ->group(kState);
  app.add_option("--state-load", o.state_load,
                 "start from a --state-save file; the prompt (may be empty) continues it")
      ->type_name("FILE")
      ->group(kState);

  // ---- Output ----
  const std::string kOutput = "Output";
  app.add_flag("--json", o.json,
               "print one JSON object (text, ids, finish_reason, counts, timings) and nothing "
               "else on stdout")
      ->group(kOutput);
  app.add_flag("--no-display-prompt", o.no_display_prompt, "print only the generated text")
      ->group(kOutput);
  app.add_option("--logits-out", o.logits_out,
                 "write the float32 logits of every prompt position, (n_prompt, n_vocab)")
      ->type_name("FILE")
      ->group(kOutput);

  return tool_main(app, argc, argv, [&] {
    if (p->count() > 0) o.prompt = prompt;
    if (n->count() > 0) o.n_predict = n_predict;
    return run_cli(o);
  });
}
