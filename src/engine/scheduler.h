// Continuous batching: many independent generation requests over one Backend.
//
// Each running sequence owns one of the backend's state slots. Every iteration of the loop
//
//   1. picks the next token of every running sequence with that sequence's own Sampler;
//      sequences that are now finished (n_predict reached, EOS, a stop string) leave at once
//      and free their slot. The sampling runs on a few threads (each Sampler is touched by
//      one thread only); everything that depends on the order (text, stop strings, results)
//      follows serially, slot by slot, so the output does not depend on the thread count;
//   2. admits waiting requests (first come, first served) into free slots, prefills their
//      prompts together and picks their first token, until the iteration's prompt-token
//      budget is used up (at least one prompt is admitted when a slot is free, however long
//      it is). A prompt is never split: Backend::prefill_batch computes each prompt exactly
//      as the single Backend::prefill call that generate() makes, while a backend may read
//      the weights once for several short prompts;
//   3. feeds the picked tokens of all the sequences that go on back in ONE batched
//      Backend::decode_view call (or, when all of them pick greedily with nothing adjusted
//      and the backend picks on the device, Backend::decode_greedy, whose ids step 1 then
//      takes: the same ids the Samplers would pick, without the logits reaching the host).
//
// A request run here produces exactly what generate() produces for the same prompt and
// options: the same ids, the same text and the same finish reason. That rests on three
// things: each sequence's Sampler is its own (seed stream and penalty history); the prompt is
// prefilled in one call from a reset slot; and the backend computes each row of a batched
// decode step the same way whatever the other rows are (batch invariance, docs/batch.md).
// The one difference is that a sequence's final token is not fed back (its state is
// discarded), which changes nothing that is returned.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine/sampler.h"

namespace mamba {

namespace cpu {
class ThreadPool;
}
class Tokenizer;
class StreamDecoder;
class StopMatcher;

// One generation request. The prompt is either text (tokenized with the scheduler's
// tokenizer, special tokens added as the model asks) or ids.
struct Request {
  uint64_t key = 0;                 // the caller's handle; comes back in the Result
  bool has_prompt_ids = false;      // true: the prompt is prompt_ids, else prompt
  std::string prompt;               // prompt text (needs a tokenizer)
  std::vector<int32_t> prompt_ids;  // (n_prompt) prompt ids, used when has_prompt_ids
  SamplerParams sampling;           // temperature, top-k, ..., seed
  int n_predict = 128;              // tokens to generate at most (0: prefill only)
  std::vector<std::string> stop;    // stop strings (need a tokenizer); none may be empty
  bool ignore_eos = false;          // never pick EOS, always run n_predict tokens
};

struct Result {
  uint64_t key = 0;          // Request::key
  std::vector<int32_t> ids;  // generated ids (an EOS that ended generation included)
  std::string text;          // generated text, stop string removed ("" without a tokenizer)
  // "length", "eos", "stop" as generate() says; "cancelled" when the run was stopped before
  // the request finished (nothing else in the Result is meaningful then); "error" when the
  // request could not run (the reason is in `error`).
  std::string finish_reason;
  std::string error;      // one line, when finish_reason == "error"
  int n_prompt = 0;       // prompt tokens prefilled
  double queue_ms = 0;    // submit() until its prefill began
  double prefill_ms = 0;  // the prefill call that took the prompt (shared when admitted together)
  double decode_ms = 0;   // end of prefill until it finished (shared decode steps)

  bool completed() const { return finish_reason != "cancelled" && finish_reason != "error"; }
};

struct SchedulerOptions {
  int n_parallel = 1;  // sequences decoded together at most (<= the backend's n_slots)
  // Prompt tokens prefilled per iteration (llama.cpp's -b): bounds the time the running
  // sequences wait for newcomers. A prompt longer than this is still prefilled whole, alone.
  int prefill_budget = 512;
  int32_t eos_id = -1;                   // generation stops after this token (-1: none)
  const Tokenizer* tokenizer = nullptr;  // for text prompts, text output and stop strings
  // Polled before every iteration. When it reads true, run()/step() report every request
  // still waiting or running as "cancelled" (in-flight sequences are abandoned, their slots
  // freed) and the scheduler is empty afterwards.
  const std::atomic<bool>* cancel = nullptr;
  // Threads that sample the running sequences' next tokens each step: <= 0 = min(hardware
  // threads, 16), 1 = serially on the calling thread. Never more than n_parallel. Sampling
  // 64 sequences over a 50k vocabulary takes about 1 ms per step on one core (0.2 ms
  // greedy), next to a GPU decode step of a few ms.
  int n_pick_threads = 0;
  // A step whose sequences all pick greedily with nothing adjusted goes through
  // Backend::decode_greedy when the backend picks on the device (Backend::picks_on_device),
  // so the logits stay there. true: also when it picks on the host (its default, one thread),
  // which only costs time; the ids are the same either way.
  bool backend_picks = false;
};

using ResultFn = std::function<void(Result&&)>;

class Scheduler {
 public:
  Scheduler(Backend& be, const SchedulerOptions& o);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a request (first in, first out). Requests may be added at any time, also from
  // inside a result callback.
  void submit(Request r);

  // One iteration (admit and prefill, pick, one batched decode step). Each request that
  // finishes, fails or is cancelled is handed to on_result exactly once. Returns false when
  // nothing is left waiting or running. Errors of the backend itself propagate (mamba::Error).
  bool step(const ResultFn& on_result);
  // step() until nothing is left (or the cancel flag stops it).
  void run(const ResultFn& on_result);

  int n_waiting() const { return int(waiting_.size()); }
  int n_running() const;
  uint64_t n_generated() const { return n_generated_; }  // tokens picked so far, all requests
  uint64_t n_decode_calls() const { return n_decode_calls_; }
  // Decode calls whose picks the backend made (every sequence plain greedy: decode_greedy).
  uint64_t n_greedy_steps() const { return n_greedy_steps_; }
  int max_batch() const { return max_batch_; }  // largest decode batch seen

 private:
  struct Seq;  // a running sequence (scheduler.cpp)
  struct Waiting {
    Request req;
    double submitted_ms;  // on the scheduler's clock
  };

  void admit(const ResultFn& on_result);
  // Starts waiting requests in free slots (not yet prefilled) and appends them to batch, as
  // long as slots are free and `used` (prompt ids this iteration) stays within the budget.
  // Returns whether admit() should try again after this batch's first picks: true when it
  // stopped only for want of a free slot.
  bool take_waiting(int& used, std::vector<Seq*>& batch, const ResultFn& on_result);
  // Starts `w` in `slot`: checks, sampler, a reset slot; admit() prefills it. Returns nullptr
  // (after reporting the error) when the request cannot run.
  std::unique_ptr<Seq> start(Waiting&& w, int slot, const ResultFn& on_result);
  // Picks the next token of s; returns true when s is finished (and has been reported).
  // pick = choose, then take.
  bool pick(Seq& s, const ResultFn& on_result);
  // Samples s's next token into s.next (nothing when n_predict is reached). Touches only s:
  // step() runs it for all running sequences at once.
  void choose(Seq& s) const;
  // The rest of pick, in slot order: records s.next, decodes its text, matches stop strings,
  // reports s when it is finished (returns true then).
  bool take(Seq& s, const ResultFn& on_result);
  void choose_all();  // choose() for every running sequence, on the pick threads
  int32_t banned_id(const Seq& s) const;  // the id s may not pick (EOS for ignore_eos), or -1
  void feed(Seq& s);  // adds s and its last id to this step's decode batch
  void finish(Seq& s, const std::string& reason, const ResultFn& on_result);
  void cancel_all(const ResultFn& on_result);
  double now_ms() const;

  Backend& be_;
  SchedulerOptions o_;
  int32_t n_vocab_;                          // logits per row
  std::deque<Waiting> waiting_;              // submitted, not yet admitted (FIFO)
  std::vector<std::unique_ptr<Seq>> slots_;  // (n_parallel) running sequence per slot, or null
  uint64_t n_generated_ = 0;
  uint64_t n_decode_calls_ = 0;
  uint64_t n_greedy_steps_ = 0;
  int max_batch_ = 0;
  // Scratch of the batched decode step.
  std::vector<int> batch_slots_;       // (n) slots fed this step
  std::vector<int32_t> batch_tokens_;  // (n) their tokens
  std::vector<Seq*> batch_seqs_;       // (n) their sequences
  std::vector<int32_t> batch_banned_;  // (n) their banned ids, for a greedy step
  std::vector<Seq*> running_;          // (n_running) the sequences choose_all() samples
  std::unique_ptr<cpu::ThreadPool> pick_pool_;  // null when the picks run serially
  int64_t t0_ns_;                      // clock origin
};

}  // namespace mamba
