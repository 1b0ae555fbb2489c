#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <thread>
#include <utility>

#include "backend/cpu/threadpool.h"
#include "common/error.h"
#include "engine/stop.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace mamba {

// A running sequence: everything generate() keeps on its stack, kept here between steps.
struct Scheduler::Seq {
  int slot = -1;                        // the backend state slot it owns
  int n_predict = 0;                    // Request::n_predict
  bool ignore_eos = false;              // Request::ignore_eos
  Sampler sampler;                      // its own seed stream and penalty history
  std::unique_ptr<StreamDecoder> text;  // ids -> UTF-8-safe pieces; null without a tokenizer
  StopMatcher stop;                     // stop strings over the streamed text
  // (n_vocab) logits for the next pick: a row of the last Backend::decode_view (valid until
  // the next backend call, so every pick happens before one), or `own`. Never written:
  // ignore_eos bans EOS inside the Sampler instead of in a copy of the row.
  std::span<const float> last;
  std::vector<int32_t> prompt;  // its prompt ids, from start() until its prefill
  std::vector<float> own;      // (n_vocab) its prefill's logits
  int32_t next = -1;           // the id choose() sampled, for take()
  int32_t picked = -1;         // >= 0: the backend's greedy pick for the next choose()
  std::exception_ptr error;    // what choose() threw, rethrown by take() in slot order
  double decode_start_ms = 0;  // when its prefill ended
  Result r;                    // filled as it goes

  Seq(const SamplerParams& p, int32_t n_vocab, std::vector<std::string> stops)
      : sampler(p, n_vocab), stop(std::move(stops)) {}
};

Scheduler::Scheduler(Backend& be, const SchedulerOptions& o)
    : be_(be), o_(o), n_vocab_(be.config().n_vocab) {
  if (o_.n_parallel < 1) fail("--parallel must be >= 1");
  if (o_.n_parallel > be.n_slots())
    fail("--parallel ", o_.n_parallel, " needs as many state slots; the backend has ",
         be.n_slots());
  if (o_.prefill_budget < 1) fail("--batch-size must be >= 1");
  int n_pick = o_.n_pick_threads;
  if (n_pick <= 0) n_pick = std::min(16, int(std::max(1u, std::thread::hardware_concurrency())));
  n_pick = std::min(n_pick, o_.n_parallel);
  if (n_pick > 1) pick_pool_ = std::make_unique<cpu::ThreadPool>(n_pick);
  slots_.resize(size_t(o_.n_parallel));
  t0_ns_ = std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
               .count();
}

Scheduler::~Scheduler() = default;

double Scheduler::now_ms() const {
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
  return double(ns - t0_ns_) / 1e6;
}

int Scheduler::n_running() const {
  int n = 0;
  for (const auto& s : slots_) n += s != nullptr;
  return n;
}

void Scheduler::submit(Request r) { waiting_.push_back(Waiting{std::move(r), now_ms()}); }

namespace {

Result error_result(uint64_t key, const std::string& msg) {
  Result r;
  r.key = key;
  r.finish_reason = "error";
  r.error = msg;
  return r;
}

}  // namespace

// The checks generate() makes, as per-request errors rather than exceptions: one bad request
// must not stop the others.
std::unique_ptr<Scheduler::Seq> Scheduler::start(Waiting&& w, int slot, const ResultFn& on_result) {
  Request& q = w.req;
  const double t_admit = now_ms();
  std::unique_ptr<Seq> s;
  std::vector<int32_t> prompt;
  try {
    if (q.n_predict < 0) fail("n_predict must be >= 0");
    if (!q.stop.empty() && !o_.tokenizer) fail("stop strings need the model's tokenizer");
    if (q.ignore_eos && o_.eos_id >= n_vocab_) fail("eos id out of range");
    // admit() has turned a text prompt into ids when there is a tokenizer.
    if (!q.has_prompt_ids) fail("this model has no tokenizer; give the prompt as prompt_ids");
    prompt = std::move(q.prompt_ids);
    if (prompt.empty()) fail("the prompt is empty");
    for (int32_t id : prompt)
      if (id < 0 || id >= n_vocab_)
        fail("prompt id ", id, " is out of range (n_vocab = ", n_vocab_, ")");
    s = std::make_unique<Seq>(q.sampling, n_vocab_, q.stop);  // validates the parameters
  } catch (const Error& e) {
    on_result(error_result(q.key, e.what()));
    return nullptr;
  }
  s->slot = slot;
  s->n_predict = q.n_predict;
  s->ignore_eos = q.ignore_eos;
  if (o_.tokenizer)
    s->text = std::make_unique<StreamDecoder>(*o_.tokenizer, false, /*text_start=*/false);
  s->r.key = q.key;
  s->r.n_prompt = int(prompt.size());
  s->r.queue_ms = t_admit - w.submitted_ms;

  // As generate(): a fresh state, every prompt id in the penalty history, then (in admit())
  // the whole prompt in one prefill.
  be_.reset_slot(slot);
  s->sampler.accept(prompt);
  s->prompt = std::move(prompt);
  return s;
}

void Scheduler::admit(const ResultFn& on_result) {
  int used = 0;  // prompt tokens prefilled in this iteration
  const auto cancelled = [&] { return o_.cancel && o_.cancel->load(); };
  // Rounds of: take waiting requests into the free slots while the budget lasts, prefill
  // them together (Backend::prefill_batch computes each as its own prefill call would), then
  // pick each one's first token in order of admission. A request that ends at its first pick
  // frees its slot for the next round.
  std::vector<Seq*> batch;
  std::vector<int> slots;
  std::vector<std::span<const int32_t>> prompts;
  std::vector<float> logits;  // (batch, n_vocab)
  for (bool more = true; more;) {
    batch.clear();
    more = take_waiting(used, batch, on_result);
    if (batch.empty()) return;
    slots.clear();
    prompts.clear();
    for (Seq* s : batch) {
      slots.push_back(s->slot);
      prompts.push_back(s->prompt);
    }
    const double t0 = now_ms();
    be_.prefill_batch(slots, prompts, logits);
    const double t1 = now_ms();
    const size_t V = size_t(n_vocab_);
    for (size_t i = 0; i < batch.size(); i++) {
      Seq& s = *batch[i];
      const auto row = logits.begin() + std::ptrdiff_t(i * V);
      s.own.assign(row, row + std::ptrdiff_t(V));
      s.last = s.own;
      s.prompt = {};
      s.decode_start_ms = t1;
      s.r.prefill_ms = t1 - t0;  // the shared call's time
    }
    for (Seq* s : batch) {
      const int slot = s->slot;
      if (pick(*s, on_result)) {  // done already (n_predict <= 1, EOS): the slot is free again
        slots_[size_t(slot)].reset();
        continue;
      }
      feed(*s);
    }
    if (cancelled()) return;
  }
}

bool Scheduler::take_waiting(int& used, std::vector<Seq*>& batch, const ResultFn& on_result) {
  while (!waiting_.empty()) {
    if (o_.cancel && o_.cancel->load()) return false;
    const auto free_slot = std::find(slots_.begin(), slots_.end(), nullptr);
    if (free_slot == slots_.end()) return true;  // slots may free up at the first picks
    Waiting& w = waiting_.front();
    // The budget counts ids; a text prompt's length in ids is only known after tokenizing,
    // so it is tokenized here once and kept as ids.
    if (!w.req.has_prompt_ids && o_.tokenizer) {
      try {
        // The tokenizers repair ill-formed UTF-8 as their references do (as mamba-cli does).
        const std::string& text = w.req.prompt;
        w.req.prompt_ids =
            utf8::is_valid(text)
                ? o_.tokenizer->encode(text)
                : o_.tokenizer->encode(utf8::repair(text, o_.tokenizer->utf8_repair()));
      } catch (const Error& e) {
        const uint64_t key = w.req.key;
        waiting_.pop_front();
        on_result(error_result(key, e.what()));
        continue;
      }
      w.req.has_prompt_ids = true;
      w.req.prompt.clear();
    }
    const int n = w.req.has_prompt_ids ? int(w.req.prompt_ids.size()) : 0;
    if (used > 0 && used + n > o_.prefill_budget) return false;
    Waiting taken = std::move(w);
    waiting_.pop_front();
    const int slot = int(free_slot - slots_.begin());
    std::unique_ptr<Seq> s = start(std::move(taken), slot, on_result);
    if (!s) continue;  // reported as an error; the slot stays free
    used += s->r.n_prompt;
    batch.push_back(s.get());
    *free_slot = std::move(s);
  }
  return false;
}

void Scheduler::finish(Seq& s, const std::string& reason, const ResultFn& on_result) {
  // Whatever the text decoder and the stop matcher still hold, as generate() ends.
  if (s.text && !s.stop.stopped()) s.r.text += s.stop.feed(s.text->finish()) + s.stop.finish();
  s.r.finish_reason = reason;
  s.r.decode_ms = now_ms() - s.decode_start_ms;
  on_result(std::move(s.r));
}

// One iteration of generate()'s loop body, up to (not including) the decode call.
bool Scheduler::pick(Seq& s, const ResultFn& on_result) {
  choose(s);
  return take(s, on_result);
}

void Scheduler::choose(Seq& s) const {
  if (int(s.r.ids.size()) >= s.n_predict) return;  // take() finishes it
  try {
    if (s.picked >= 0) {  // the step picked it (decode_greedy): what sample() would return
      s.next = std::exchange(s.picked, -1);
    } else {
      s.next = s.sampler.sample(s.last, banned_id(s));
    }
    s.sampler.accept(s.next);
  } catch (...) {
    s.error = std::current_exception();  // a pick thread must not throw
  }
}

// generate() sets the EOS logit to -inf for ignore_eos; the ban does the same.
int32_t Scheduler::banned_id(const Seq& s) const {
  return s.ignore_eos && o_.eos_id >= 0 ? o_.eos_id : -1;
}

void Scheduler::choose_all() {
  running_.clear();
  for (const auto& s : slots_)
    if (s) running_.push_back(s.get());
  const auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) choose(*running_[size_t(i)]);
  };
  if (pick_pool_)
    pick_pool_->parallel_for(int64_t(running_.size()), 1, run);
  else
    run(0, int64_t(running_.size()));
}

bool Scheduler::take(Seq& s, const ResultFn& on_result) {
  if (s.error) std::rethrow_exception(std::exchange(s.error, nullptr));
  if (int(s.r.ids.size()) >= s.n_predict) {  // n_predict == 0: prefill only
    finish(s, "length", on_result);
    return true;
  }
  const int32_t id = s.next;
  s.r.ids.push_back(id);
  n_generated_++;
  if (!s.ignore_eos && id == o_.eos_id) {
    finish(s, "eos", on_result);
    return true;
  }
  if (s.text) {
    s.r.text += s.stop.feed(s.text->feed(id));
    if (s.stop.stopped()) {
      finish(s, "stop", on_result);
      return true;
    }
  }
  // generate() feeds the final token too, so that the slot covers it; here the slot is
  // discarded, so the step is skipped.
  if (int(s.r.ids.size()) >= s.n_predict) {
    finish(s, "length", on_result);
    return true;
  }
  return false;
}

void Scheduler::cancel_all(const ResultFn& on_result) {
  for (auto& s : slots_) {
    if (!s) continue;
    Result r;
    r.key = s->r.key;
    r.finish_reason = "cancelled";
    r.n_prompt = s->r.n_prompt;
    s.reset();
    on_result(std::move(r));
  }
  std::deque<Waiting> waiting;
  waiting.swap(waiting_);
  for (const Waiting& w : waiting) {
    Result r;
    r.key = w.req.key;
    r.finish_reason = "cancelled";
    on_result(std::move(r));
  }
}

void Scheduler::feed(Seq& s) {
  batch_slots_.push_back(s.slot);
  batch_tokens_.push_back(s.r.ids.back());
  batch_seqs_.push_back(&s);
}

bool Scheduler::step(const ResultFn& on_result) {
  const auto cancelled = [&] { return o_.cancel && o_.cancel->load(); };
  if (cancelled()) {
    cancel_all(on_result);
    return false;
  }
  batch_slots_.clear();
  batch_tokens_.clear();
  batch_seqs_.clear();

  // Pick every running sequence's next token first: their logits are a view of the backend's
  // memory that the prefills below may overwrite. The finished ones leave now, and their
  // slots take new requests at once. The sampling runs for all of them at once; the results
  // are taken in slot order, as one pick() after another would.
  choose_all();
  for (auto& s : slots_) {
    if (!s) continue;
    if (take(*s, on_result)) {
      s.reset();
      continue;
    }
    feed(*s);
  }
  // Admit and prefill new requests; each picks its first token from its prefill's logits.
  admit(on_result);
  if (cancelled()) {
    cancel_all(on_result);
    return false;
  }

  // One batched recurrent step for every sequence that goes on. When all of them pick
  // greedily (Sampler::plain_greedy) and the backend picks on the device, it picks for them
  // and their logits stay there; else each gets its row of logits.
  if (!batch_seqs_.empty()) {
    const bool greedy =
        (be_.picks_on_device() || o_.backend_picks) &&
        std::all_of(batch_seqs_.begin(), batch_seqs_.end(),
                    [](const Seq* s) { return s->sampler.plain_greedy(); });
    if (greedy) {
      batch_banned_.clear();
      for (const Seq* s : batch_seqs_) batch_banned_.push_back(banned_id(*s));
      const std::span<const int32_t> ids =
          be_.decode_greedy(batch_slots_, batch_tokens_, batch_banned_);
      for (size_t i = 0; i < batch_seqs_.size(); i++) {
        batch_seqs_[i]->picked = ids[i];
        batch_seqs_[i]->last = {};
      }
      n_greedy_steps_++;
    } else {
      const std::span<const float> logits = be_.decode_view(batch_slots_, batch_tokens_);
      const size_t V = size_t(n_vocab_);
      for (size_t i = 0; i < batch_seqs_.size(); i++)
        batch_seqs_[i]->last = logits.subspan(i * V, V);
    }
    n_decode_calls_++;
    max_batch_ = std::max(max_batch_, int(batch_seqs_.size()));
  }
  return !waiting_.empty() || n_running() > 0;
}

void Scheduler::run(const ResultFn& on_result) {
  while (step(on_result)) {
  }
}

}  // namespace mamba
