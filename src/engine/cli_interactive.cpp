// mamba-cli -i: a conversation with the text.
//
// Each line read from stdin, with its newline, continues the sequence: it is tokenized on its
// own (no BOS, since it does not start a sequence) and prefilled after everything before it,
// so a turn costs only its own tokens however long the text has grown. When the text so far
// does not end with a newline, one is fed first: the line starts a line of its own, as the
// terminal shows it after the prompt marker. Then the model goes on
// for up to -n tokens (default: until end-of-sequence, at most kDefaultMaxTokens).
//
// When a turn ended with end-of-sequence, that EOS was never fed (generate() does not feed a
// final EOS): the next line simply continues the text before it, as if the model had stopped
// on its own.
//
// Output: the generated text on stdout, ended with a newline when a turn ends mid-line; the
// "> " prompt marker, notices and the summary on stderr. When stdin is not a terminal (lines
// piped in), each line is also written to stdout, so that stdout holds the whole text of the
// sequence; a terminal shows typed lines itself.
//
// Commands: a line that is exactly "/reset" starts a new, empty sequence (fresh state, the
// sampler's history and random stream reset); the next line then starts it with BOS.
//
// Ctrl-C: during a generation it stops that generation (the cancel flag that generate() polls
// once per token) and returns to the prompt; at the prompt it quits. Two Ctrl-C within one
// generation also quit, once the current step returns. Quitting on Ctrl-C exits with 130
// (128 + SIGINT, the shell convention); end of input (Ctrl-D) exits with 0. Either way the
// summary is printed and --state-save is written.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "common/error.h"
#include "engine/cli_session.h"
#include "tokenizer/tokenizer.h"

namespace mamba {

namespace {

static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free,
              "the SIGINT handler may only touch lock-free atomics");
std::atomic<bool> g_cancel{false};  // polled by generate(): stop picking tokens
std::atomic<int> g_interrupts{0};   // SIGINTs since clear_interrupts()

extern "C" void on_sigint(int) {
  g_interrupts.fetch_add(1);
  g_cancel.store(true);
}

// Whether the terminal's cursor is at the start of a line, judged from what this process wrote
// to stdout and stderr (both usually go to the same terminal).
bool g_line_start = true;

void ui(std::string_view s) {
  if (s.empty()) return;
  write_fd(2, s);
  g_line_start = s.back() == '\n';
}

// Lines from stdin without blocking Ctrl-C: poll() with a short timeout, so an interrupt at the
// prompt is seen within 100 ms even when no byte arrives (and whatever SA_RESTART says).
class LineReader {
 public:
  enum Status { Line, Eof, Interrupted };

  Status read(std::string& line) {
    for (;;) {
      const size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Line;
      }
      if (eof_) {
        if (buf_.empty()) return Eof;
        line = std::move(buf_);  // a last line without a newline
        buf_.clear();
        return Line;
      }
      if (interrupt_count() > 0) return Interrupted;
      pollfd p{0, POLLIN, 0};
      const int r = ::poll(&p, 1, 100);
      if (r == 0 || (r < 0 && errno == EINTR)) continue;
      if (r < 0) {
        eof_ = true;
        continue;
      }
      char b[4096];
      const ssize_t n = ::read(0, b, sizeof b);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0)
        eof_ = true;
      else
        buf_.append(b, size_t(n));
    }
  }

 private:
  std::string buf_;   // bytes read but not yet returned as a line
  bool eof_ = false;  // stdin has ended (or failed)
};

}  // namespace

void install_interrupt_handler() {
  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // writes and reads elsewhere carry on; poll() still wakes
  sigaction(SIGINT, &sa, nullptr);
}
const std::atomic<bool>* cancel_flag() { return &g_cancel; }
int interrupt_count() { return g_interrupts.load(); }
void clear_interrupts() {
  g_interrupts.store(0);
  g_cancel.store(false);
}

void write_stdout(std::string_view s) {
  if (s.empty()) return;
  write_fd(1, s);
  g_line_start = s.back() == '\n';
}

int run_interactive(CliSession& s, const CliOptions& o, RunTotals& t, bool generate_first) {
  const bool tty_in = isatty(0);
  const int n_predict = o.n_predict.value_or(kDefaultMaxTokens);
  const std::function<void(std::string_view)> out = write_stdout;
  // One turn's generation, from whatever was just fed.
  const auto generate = [&] {
    const GenerateResult r = s.generate(n_predict, out, cancel_flag());
    t.add(r);
    if (r.finish_reason == "cancelled") ui(g_line_start ? "[stopped]\n" : "\n[stopped]\n");
  };
  if (generate_first) generate();

  int code = 0;
  LineReader in;
  for (;;) {
    if (interrupt_count() >= 2) {  // twice within the last generation
      code = 130;
      break;
    }
    clear_interrupts();
    // The text so far ends its line on stdout (that newline is also what is fed before the
    // next line, see below); the marker goes to stderr.
    if (!g_line_start) write_stdout("\n");
    ui("> ");
    std::string line;
    const LineReader::Status st = in.read(line);
    if (st != LineReader::Line) {
      ui("\n");
      code = st == LineReader::Interrupted ? 130 : 0;
      break;
    }
    if (line == "/reset") {
      s.reset();
      ui("[reset: a new sequence starts]\n");
      continue;
    }
    try {
      // The line starts a line of its own, as the terminal shows it after the "> " marker.
      const bool at_line_start = s.empty() || s.text_tail().ends_with('\n');
      const std::string text = (at_line_start ? "" : "\n") + line + "\n";
      if (!tty_in && !o.no_display_prompt) write_stdout(line + "\n");
      const bool fresh = s.empty();
      const std::vector<int32_t> ids = s.encode(text, /*continuing=*/!fresh);
      PromptInfo pi;
      pi.n_prompt = pi.n_prefilled = int(ids.size());
      pi.prompt_ms = s.feed(ids, fresh);
      t.add(pi);
      generate();
    } catch (const Error& e) {
      ui(std::string(g_line_start ? "" : "\n") + "error: " + e.what() + "\n");
    }
  }
  if (!o.state_save.empty()) write_state_file(o.state_save, s.save());
  print_summary(t, s.backend().state_bytes());
  return code;
}

}  // namespace mamba
