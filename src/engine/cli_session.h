// mamba-cli's engine side: everything the command does between parsing its flags
// (tools/mamba-cli/main.cpp) and exiting. Kept in the library so that the tool stays a thin
// main and the pieces can be tested in-process.
//
// One run works on one sequence in backend slot 0. The CliSession tracks the ids fed into it
// and the logits after the last one, so that generation can always continue without
// re-running anything: after a prompt, after an interactive turn, after loading a saved state.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "engine/state_file.h"

namespace mamba {

class Model;
class Tokenizer;

// Generation without -n stops at end-of-sequence, a stop string, or after this many tokens.
constexpr int kDefaultMaxTokens = 4096;

// Every flag of mamba-cli, as parsed (main.cpp names each flag).
struct CliOptions {
  // ---- model ----
  std::string model;          // -m: GGUF file
  std::string device;         // --device: "cpu", "cuda", "cuda:N"; empty = cuda if usable, else cpu
  int n_threads = 0;          // -t: CPU threads; 0 = all cores
  // ---- prompt (at most one of prompt / prompt_file / prompt_ids; none: stdin or -i) ----
  std::optional<std::string> prompt;  // -p TEXT
  std::string prompt_file;            // -f FILE
  std::string prompt_ids;             // --prompt-ids 1,2,3
  // ---- generation ----
  std::optional<int> n_predict;   // -n; absent: until EOS or a stop string, at most kDefaultMaxTokens
  std::vector<std::string> stop;  // --stop, repeatable
  bool ignore_eos = false;        // --ignore-eos
  bool interactive = false;       // -i
  // ---- sampling ----
  SamplerParams sampling;               // --temp, --top-k, ...; its seed is set from `seed`
  int64_t seed = -1;                    // -s: -1 = a random seed (reported)
  std::vector<std::string> logit_bias;  // --logit-bias ID(+|-)BIAS, repeatable
  // ---- state ----
  std::string prompt_cache;       // --prompt-cache FILE
  bool prompt_cache_ro = false;   // --prompt-cache-ro: use the cache, never write it
  std::string state_save;         // --state-save FILE: after generation
  std::string state_load;         // --state-load FILE: start from it
  // ---- output ----
  bool json = false;               // --json: one JSON object on stdout, nothing else
  bool no_display_prompt = false;  // --no-display-prompt
  std::string logits_out;          // --logits-out FILE: float32 (n_prompt, n_vocab)
};

// Runs mamba-cli. Returns the exit code (0; 130 after Ctrl-C ended the run). Throws
// mamba::Error (one line saying what to do) for every user-facing problem.
int run_cli(const CliOptions& o);

// Writes all of `s` to a file descriptor, retrying after signals (Ctrl-C may arrive mid-write).
void write_fd(int fd, std::string_view s);
// write_fd(1, s), remembering whether the output now ends a line (for interactive mode's
// prompt marker).
void write_stdout(std::string_view s);

// How a prompt went in: what was reused from a saved state and what was prefilled.
struct PromptInfo {
  int n_prompt = 0;      // ids in the prompt
  int n_reused = 0;      // of those, covered by the prompt cache (not run again)
  int n_prefilled = 0;   // of those, run through the model
  double prompt_ms = 0;  // prefill time
  // --prompt-cache only:
  std::string cache_status;  // "hit" (all reused), "partial", "miss" (no file), "rejected"
  std::string cache_reason;  // why the file was rejected
  bool cache_saved = false;  // the file was (re)written
};

// Counts and times over a run (over every turn in interactive mode), for the summary line.
struct RunTotals {
  int n_prompt = 0, n_prefilled = 0, n_reused = 0;  // prompt ids: all, run, taken from a cache
  double prompt_ms = 0;                             // prefill time
  int n_generated = 0;                              // ids picked
  int n_decode = 0;                                 // decode steps, within predict_ms
  double predict_ms = 0;                            // picking and decoding
  std::string finish_reason;                        // of the last generation

  void add(const PromptInfo& p) {
    n_prompt += p.n_prompt;
    n_prefilled += p.n_prefilled;
    n_reused += p.n_reused;
    prompt_ms += p.prompt_ms;
  }
  void add(const GenerateResult& r) {
    n_generated += int(r.ids.size());
    n_decode += r.n_decode;
    predict_ms += r.predict_ms;
    finish_reason = r.finish_reason;
  }
};

// One stderr line: prompt and generation counts, times and speeds, the state size.
void print_summary(const RunTotals& t, uint64_t state_bytes);

class CliSession {
 public:
  // Loads the model and its tokenizer (when it has one), opens the backend and the sampler.
  explicit CliSession(const CliOptions& o);
  ~CliSession();

  const Model& model() const { return *model_; }
  const Tokenizer* tokenizer() const { return tok_.get(); }
  Backend& backend() { return *be_; }
  Sampler& sampler() { return *sampler_; }
  uint64_t seed() const { return seed_; }
  const std::string& device() const { return device_; }

  // Text -> ids. continuing: the text continues the sequence (no BOS); otherwise it starts one
  // (BOS as the tokenizer adds it). Warns once on stderr when the text is not valid UTF-8.
  std::vector<int32_t> encode(const std::string& text, bool continuing) const;
  // Throws unless every id is in [0, n_vocab).
  void check_ids(std::span<const int32_t> ids) const;

  // Feeds `ids` after what the sequence holds (fresh: from an empty sequence). all_logits:
  // also return the logits of every position in *prompt_logits.
  double feed(std::span<const int32_t> ids, bool fresh, std::vector<float>* prompt_logits = nullptr);
  // The prompt of a run: with a prompt cache file, reuses its state when the prompt's ids
  // start with the cached ones, prefills the rest and rewrites the file (unless read-only).
  // continuing: the prompt continues the sequence (after --state-load).
  PromptInfo process_prompt(std::span<const int32_t> prompt, bool continuing,
                            std::vector<float>* prompt_logits);

  // Generates from the sequence's last logits: at most n_predict tokens, streaming text (or
  // ids) to on_text. The sequence afterwards covers every generated id but a final EOS.
  GenerateResult generate(int n_predict, const std::function<void(std::string_view)>& on_text,
                          const std::atomic<bool>* cancel);

  // Starts over: an empty sequence, the sampler's history and random stream reset.
  void reset();
  bool empty() const { return ids_.empty(); }
  bool can_generate() const { return !last_logits_.empty(); }
  const std::vector<int32_t>& ids() const { return ids_; }
  // The text of the sequence's last few ids (to see how the text ends); "" without a tokenizer.
  std::string text_tail() const;

  SavedState save();  // the sequence as a state file holds it
  // Replaces the sequence with a saved one (checked against this model by the reader).
  void restore(const SavedState& s);
  StateFileExpect expect();  // what a state file for this model must say

 private:
  const CliOptions& o_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;   // nullptr: the model has no tokenizer
  std::unique_ptr<Backend> be_;      // one slot: slot 0 holds the sequence
  std::unique_ptr<Sampler> sampler_;
  std::string device_;               // the backend actually used
  uint64_t seed_ = 0;                // the sampler's seed (drawn when -s was -1)
  uint64_t model_id_ = 0;            // model_identity(), computed when a state file needs it
  std::vector<int32_t> ids_;         // every id fed into slot 0, oldest first
  std::vector<float> last_logits_;   // (n_vocab) logits after ids_; empty when unknown
                                     // (an empty sequence, or one whose last pick was EOS)
};

// Interactive mode (-i), after the initial prompt (if any) has run: reads lines from stdin
// and continues the sequence with each; see cli_interactive.cpp. Returns the exit code.
// `t` holds the initial prompt's counts; the summary at exit covers every turn.
// generate_first: an initial prompt was fed; generate its continuation before the first line.
int run_interactive(CliSession& s, const CliOptions& o, RunTotals& t, bool generate_first);

// What -i prints on stderr before it starts.
constexpr const char* kInteractiveHelp =
    "interactive: each line continues the text; /reset starts over; Ctrl-C stops a "
    "generation; Ctrl-C at the prompt or end of input (Ctrl-D) quits\n";

// Ctrl-C: the handler only counts interrupts and raises the cancel flag that generate() polls.
void install_interrupt_handler();
const std::atomic<bool>* cancel_flag();
int interrupt_count();
void clear_interrupts();

}  // namespace mamba
