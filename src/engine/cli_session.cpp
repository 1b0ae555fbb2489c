// mamba-cli's run: the prompt from its source, the prompt cache and state files, generation,
// and what is printed. Interactive mode is in cli_interactive.cpp.
#include "engine/cli_session.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace mamba {

namespace fs = std::filesystem;

void write_fd(int fd, std::string_view s) {
  while (!s.empty()) {
    const ssize_t n = ::write(fd, s.data(), s.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // a closed pipe: nothing more can be shown
    s.remove_prefix(size_t(n));
  }
}

namespace {

void warn(const std::string& msg) { write_fd(2, "warning: " + msg + "\n"); }

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) fail("--prompt-ids '", s, "' has an empty item");
    item = item.substr(b, e - b + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < INT32_MIN || v > INT32_MAX)
      fail("--prompt-ids: '", item, "' is not a token id");
    ids.push_back(int32_t(v));
  }
  return ids;
}

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail("-f ", path, " is a directory; give a text file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open prompt file ", path, ": ", std::strerror(errno), "; check the path");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string read_stdin() {
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, size_t(n));
  }
  return text;
}

// The default device is the GPU when this build has the CUDA backend and a device is usable;
// otherwise the CPU, without a word: a CPU-only machine is a normal place to run.
std::unique_ptr<Backend> open_backend(const Model& m, const CliOptions& o, std::string* used) {
  BackendOptions bo;
  bo.n_threads = o.n_threads;
  bo.n_slots = 1;
  if (o.device.empty()) {
#ifdef MAMBA_HAVE_CUDA
    try {
      bo.device = "cuda";
      auto be = make_backend(m, bo);
      *used = "cuda";
      return be;
    } catch (const Error&) {
      // no usable GPU: fall through to the CPU
    }
#endif
    bo.device = "cpu";
  } else {
    bo.device = o.device;
  }
  try {
    auto be = make_backend(m, bo);
    *used = bo.device;
    return be;
  } catch (const Error& e) {
    fail(e.what(), "; use --device cpu");
  }
}

}  // namespace

// ---- the session --------------------------------------------------------------------------

CliSession::CliSession(const CliOptions& o) : o_(o) {
  std::error_code ec;
  if (!fs::exists(o.model, ec))
    fail(o.model, ": cannot open: no such file; give a GGUF model file with -m FILE");
  model_ = Model::load(o.model);
  for (const std::string& w : model_->warnings) warn(w);
  tok_ = tokenizer_from_gguf(model_->gguf());
  const int64_t V = model_->config().n_vocab;

  SamplerParams sp = o.sampling;
  for (const std::string& b : o.logit_bias) sp.logit_bias.push_back(parse_logit_bias(b));
  if (o.seed < -1) fail("-s/--seed must be >= 0, or -1 for a random seed");
  seed_ = o.seed == -1 ? (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}()
                       : uint64_t(o.seed);
  sp.seed = seed_;
  sampler_ = std::make_unique<Sampler>(sp, int32_t(V));  // validates, naming the flag
  be_ = open_backend(*model_, o, &device_);
}

CliSession::~CliSession() = default;

std::vector<int32_t> CliSession::encode(const std::string& text, bool continuing) const {
  if (!tok_) fail("this model has no tokenizer; give the prompt with --prompt-ids");
  std::string t = text;
  // The tokenizers repair ill-formed UTF-8 as their references do; say so, since the model
  // then sees U+FFFD where the user's bytes were.
  if (!utf8::is_valid(t)) {
    warn("the prompt is not valid UTF-8; ill-formed bytes become U+FFFD");
    t = utf8::repair(t, tok_->utf8_repair());
  }
  return tok_->encode(t, /*add_special=*/!continuing);
}

void CliSession::check_ids(std::span<const int32_t> ids) const {
  const int64_t V = model_->config().n_vocab;
  for (int32_t id : ids)
    if (id < 0 || id >= V) fail("prompt id ", id, " is out of range (n_vocab = ", V, ")");
}

double CliSession::feed(std::span<const int32_t> ids, bool fresh, std::vector<float>* prompt_logits) {
  if (fresh) {
    ids_.clear();
    last_logits_.clear();
  }
  if (ids.empty()) return 0;
  // generate() with n_predict = 0 is exactly a prefill: the ids go into the slot and into the
  // sampler's history, and the logits after the last one come back.
  GenerateOptions go;
  go.n_predict = 0;
  go.continue_state = !fresh;
  go.prompt_logits = prompt_logits != nullptr;
  GenerateResult r = mamba::generate(*be_, 0, ids, *sampler_, go);
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  last_logits_ = std::move(r.last_logits);
  if (prompt_logits) *prompt_logits = std::move(r.prompt_logits);
  return r.prompt_ms;
}

PromptInfo CliSession::process_prompt(std::span<const int32_t> prompt, bool continuing,
                                      std::vector<float>* prompt_logits) {
  PromptInfo info;
  info.n_prompt = int(prompt.size());
  if (o_.prompt_cache.empty() || prompt.empty()) {  // -i without a prompt: nothing to cache
    info.prompt_ms = feed(prompt, !continuing, prompt_logits);
    info.n_prefilled = info.n_prompt;
    return info;
  }

  // The cache is an optimisation: any problem with the file is a warning, then the whole
  // prompt is prefilled as if there were no file.
  const std::string& path = o_.prompt_cache;
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    info.cache_status = "miss";
  } else {
    try {
      SavedState c = read_state_file(path, expect());
      const bool prefix = c.ids.size() <= prompt.size() &&
                          std::equal(c.ids.begin(), c.ids.end(), prompt.begin());
      if (!prefix) {
        info.cache_reason = "its " + std::to_string(c.ids.size()) +
                            " token ids are not the start of this prompt's " +
                            std::to_string(prompt.size());
      } else if (c.ids.empty() || c.logits.empty()) {
        info.cache_reason = "it holds no prompt to continue";
      } else {
        restore(c);
        info.n_reused = int(c.ids.size());
        info.cache_status = info.n_reused == info.n_prompt ? "hit" : "partial";
      }
    } catch (const Error& e) {
      info.cache_reason = e.what();
    }
    if (info.cache_status.empty()) {
      info.cache_status = "rejected";
      warn("prompt cache " + path + " not used: " + info.cache_reason +
           "; prefilling the whole prompt");
    }
  }
  const bool reused = info.n_reused > 0;
  info.prompt_ms = feed(prompt.subspan(size_t(info.n_reused)), /*fresh=*/!reused, prompt_logits);
  info.n_prefilled = info.n_prompt - info.n_reused;
  if (info.cache_status != "hit" && !o_.prompt_cache_ro) {
    // Not being able to write the cache costs the next run time, not this run its output.
    try {
      write_state_file(path, save());
      info.cache_saved = true;
    } catch (const Error& e) {
      warn(std::string(e.what()) + "; the prompt cache is not saved");
    }
  }
  return info;
}

GenerateResult CliSession::generate(int n_predict,
                                    const std::function<void(std::string_view)>& on_text,
                                    const std::atomic<bool>* cancel) {
  if (last_logits_.empty())
    fail(ids_.empty() ? "nothing to continue: the sequence is empty; give a prompt"
                      : "the sequence ended with end-of-sequence; give more text to continue it");
  GenerateOptions go;
  go.n_predict = n_predict;
  go.eos_id = model_->eos_id;
  go.ignore_eos = o_.ignore_eos;
  go.continue_state = true;
  go.last_logits = last_logits_;
  go.cancel = cancel;
  if (tok_) {
    go.tokenizer = tok_.get();
    go.stop = o_.stop;
    go.on_text = on_text;
  } else if (on_text) {
    // Without a tokenizer the output is the ids, space-separated.
    go.on_token = [&on_text, first = true](int32_t id) mutable {
      std::string piece = first ? std::string() : std::string(" ");
      piece += std::to_string(id);
      on_text(piece);
      first = false;
    };
  }
  GenerateResult r = mamba::generate(*be_, 0, {}, *sampler_, go);
  // The state covers every generated id except a final EOS, which was not fed.
  const bool eos = r.finish_reason == "eos";
  ids_.insert(ids_.end(), r.ids.begin(), r.ids.end() - (eos ? 1 : 0));
  last_logits_ = eos ? std::vector<float>{} : r.last_logits;
  return r;
}

std::string CliSession::text_tail() const {
  if (!tok_ || ids_.empty()) return {};
  const size_t n = std::min<size_t>(ids_.size(), 8);
  return tok_->decode(std::span<const int32_t>(ids_).last(n));
}

void CliSession::reset() {
  be_->reset_slot(0);
  ids_.clear();
  last_logits_.clear();
  sampler_->reset();
}

StateFileExpect CliSession::expect() {
  if (!model_id_) model_id_ = model_identity(*model_);
  StateFileExpect e;
  e.model_id = model_id_;
  e.n_vocab = model_->config().n_vocab;
  e.state_bytes = be_->state_bytes();
  return e;
}

SavedState CliSession::save() {
  SavedState s;
  s.model_id = expect().model_id;
  s.n_vocab = model_->config().n_vocab;
  s.ids = ids_;
  s.logits = last_logits_;
  be_->save_slot(0, s.state);
  return s;
}

void CliSession::restore(const SavedState& s) {
  if (s.state.size() != be_->state_bytes())
    fail("a saved state of ", s.state.size(), " bytes does not fit this model's ",
         be_->state_bytes());
  be_->load_slot(0, s.state);
  ids_ = s.ids;
  last_logits_ = s.logits;
  // The penalties see the restored ids as if they had just been fed.
  sampler_->reset();
  sampler_->accept(ids_);
}

// ---- the run ------------------------------------------------------------------------------

void print_summary(const RunTotals& t, uint64_t state_bytes) {
  const auto tps = [](double n, double ms) { return ms > 0 ? 1000.0 * n / ms : 0.0; };
  char line[512];
  std::snprintf(line, sizeof line,
                "prompt: %d tokens (%d prefilled, %d reused), %.2f ms (%.1f tok/s); generated: "
                "%d tokens, %.2f ms (%.1f tok/s); %s; state: %llu bytes per sequence\n",
                t.n_prompt, t.n_prefilled, t.n_reused, t.prompt_ms,
                tps(t.n_prefilled, t.prompt_ms), t.n_generated, t.predict_ms,
                tps(t.n_decode, t.predict_ms), t.finish_reason.c_str(),
                static_cast<unsigned long long>(state_bytes));
  write_fd(2, line);
}

int run_cli(const CliOptions& o) {
  // Flag combinations first: they need nothing loaded.
  const int sources = int(o.prompt.has_value()) + int(!o.prompt_file.empty()) +
                      int(!o.prompt_ids.empty());
  if (sources > 1)
    fail("give the prompt either as -p TEXT, -f FILE or --prompt-ids 1,2,3, not several");
  if (o.n_predict && *o.n_predict < 0)
    fail("-n must be >= 0 (leave -n out to generate until end-of-sequence, at most ",
         kDefaultMaxTokens, " tokens)");
  if (o.interactive && o.json) fail("--json prints one object for one run; leave it out with -i");
  if (!o.prompt_cache.empty() && !o.state_load.empty())
    fail("--prompt-cache and --state-load both give the starting state; use one of them");
  for (const std::string& stop : o.stop)
    if (stop.empty()) fail("--stop was given an empty string; give the text to stop at");
  if (o.prompt_cache_ro && o.prompt_cache.empty())
    fail("--prompt-cache-ro needs --prompt-cache FILE");
  if (!o.logits_out.empty() && (!o.prompt_cache.empty() || !o.state_load.empty()))
    fail("--logits-out needs the whole prompt prefilled; leave out --prompt-cache/--state-load");

  // The prompt's source: a flag, else stdin when it is not a terminal (-i reads stdin line by
  // line instead).
  std::optional<std::string> text;
  if (o.prompt) {
    text = *o.prompt;
  } else if (!o.prompt_file.empty()) {
    text = read_text_file(o.prompt_file);
  } else if (o.prompt_ids.empty() && !o.interactive) {
    if (!isatty(0))
      text = read_stdin();
    else if (o.state_load.empty())
      fail("no prompt: give -p TEXT, -f FILE or --prompt-ids 1,2,3, pipe text on stdin, or "
           "use -i");
  }
  const bool continuing = !o.state_load.empty();
  const bool has_input = text.has_value() || !o.prompt_ids.empty();
  if (text && text->empty() && !continuing) fail("the prompt is empty; give some text");

  CliSession s(o);
  const Tokenizer* tok = s.tokenizer();
  if (o.interactive && !tok) fail("-i needs a model with a tokenizer; this one has none");
  if (!o.stop.empty() && !tok) fail("--stop needs a model with a tokenizer; this one has none");

  if (continuing) s.restore(read_state_file(o.state_load, s.expect()));
  std::vector<int32_t> prompt;
  if (text && !text->empty()) prompt = s.encode(*text, continuing);
  if (!o.prompt_ids.empty()) prompt = parse_ids(o.prompt_ids);
  if (has_input && prompt.empty() && !continuing) fail("the prompt is empty; give some text");
  s.check_ids(prompt);

  install_interrupt_handler();
  // Plain output streams to stdout: the prompt, then the text as it is generated.
  const bool plain = !o.json;
  if (o.interactive) write_fd(2, kInteractiveHelp);
  const auto out = [](std::string_view piece) { write_stdout(piece); };
  if (plain && tok && has_input && !o.no_display_prompt) {
    if (text)
      out(utf8::is_valid(*text) ? *text : utf8::repair(*text, tok->utf8_repair()));
    else
      out(tok->decode(prompt));
  }

  std::vector<float> prompt_logits;
  const PromptInfo pi = s.process_prompt(prompt, continuing,
                                         o.logits_out.empty() ? nullptr : &prompt_logits);
  if (!o.logits_out.empty()) {
    std::ofstream f(o.logits_out, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(prompt_logits.data()),
            std::streamsize(prompt_logits.size() * sizeof(float)));
    if (!f) fail("cannot write ", o.logits_out, "; check the path");
  }

  RunTotals t;
  t.add(pi);
  // In -i mode the initial prompt (if any) runs like a turn; the loop continues from it.
  if (o.interactive) return run_interactive(s, o, t, /*generate_first=*/has_input);

  const GenerateResult r = s.generate(o.n_predict.value_or(kDefaultMaxTokens),
                                      plain ? std::function<void(std::string_view)>(out) : nullptr,
                                      cancel_flag());
  t.add(r);
  if (!o.state_save.empty()) write_state_file(o.state_save, s.save());

  if (o.json) {
    const auto tps = [](double n, double ms) { return ms > 0 ? 1000.0 * n / ms : 0.0; };
    nlohmann::json j;
    if (tok) j["text"] = r.text;
    j["ids"] = r.ids;
    j["finish_reason"] = r.finish_reason;
    j["n_prompt"] = pi.n_prompt;
    j["n_prefilled"] = pi.n_prefilled;
    j["n_reused"] = pi.n_reused;
    j["n_predict"] = r.ids.size();
    j["timings"] = {{"prompt_ms", pi.prompt_ms},
                    {"predict_ms", r.predict_ms},
                    {"prompt_tok_s", tps(pi.n_prefilled, pi.prompt_ms)},
                    {"predict_tok_s", tps(r.n_decode, r.predict_ms)}};
    j["state_bytes"] = s.backend().state_bytes();
    j["seed"] = s.seed();
    j["device"] = s.device();
    if (!o.prompt_cache.empty())
      j["prompt_cache"] = {{"file", o.prompt_cache},     {"status", pi.cache_status},
                           {"n_reused", pi.n_reused},    {"saved", pi.cache_saved},
                           {"reason", pi.cache_reason}};
    if (continuing) j["state_load"] = {{"file", o.state_load}};
    if (!o.state_save.empty()) j["state_save"] = {{"file", o.state_save}, {"n_ids", s.ids().size()}};
    out(j.dump() + "\n");
  } else {
    out("\n");
    print_summary(t, s.backend().state_bytes());
  }
  return r.finish_reason == "cancelled" ? 130 : 0;
}

}  // namespace mamba
