// The bad-input corpus (tests/bad-inputs/cases.json, made by scripts/make_bad_inputs.py): every
// case runs the real tool and must end within seconds, never on a signal, with the expected exit
// code and exactly one line on stderr: "error: ..." or "warning: ..." holding the expected text.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace mamba::test;
using nlohmann::json;

namespace {

const std::string kDir = MAMBA_SOURCE_DIR "/tests/bad-inputs";
constexpr unsigned kTimeoutSeconds = 30;  // generous for sanitizer builds; cases take well under 1 s

std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// {file}, {good}, {dir}, {tmp} and {hex:..} placeholders, as make_bad_inputs.py writes them.
std::string expand(std::string arg, const json& c, const std::string& tmp) {
  if (arg.rfind("{hex:", 0) == 0 && arg.back() == '}') return unhex(arg.substr(5, arg.size() - 6));
  auto replace = [&](const std::string& key, const std::string& value) {
    for (size_t at; (at = arg.find(key)) != std::string::npos;) arg.replace(at, key.size(), value);
  };
  if (c.contains("file")) replace("{file}", kDir + "/" + c["file"].get<std::string>());
  replace("{good}", kDir + "/good.gguf");
  replace("{dir}", kDir);
  replace("{tmp}", tmp);
  return arg;
}

struct Outcome {
  bool signalled = false;
  int signal = 0;
  int code = -1;
  std::string out, err;
};

// Without a shell, stdout and stderr to files; a hang ends in SIGALRM.
Outcome run_tool(const std::vector<std::string>& argv, const std::string& tmp) {
  const std::string out_path = tmp + "/stdout", err_path = tmp + "/stderr";
  const int status = wait_child(spawn(argv, out_path, err_path, kTimeoutSeconds));
  Outcome r;
  r.signalled = WIFSIGNALED(status);
  if (r.signalled) r.signal = WTERMSIG(status);
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

}  // namespace

TEST_CASE("bad inputs: one clear line, the expected exit code, never a signal") {
  const json cases = json::parse(slurp(kDir + "/cases.json"));
  REQUIRE(cases.size() >= 80);
  const std::string tmp = MAMBA_TEST_TMP "/bad-inputs";
  fs::create_directories(tmp);
  for (const json& c : cases) {
    const std::string name = c["name"];
    std::vector<std::string> argv{std::string(MAMBA_BIN_DIR) + "/" + c["tool"].get<std::string>()};
    for (const json& a : c["args"]) argv.push_back(expand(a.get<std::string>(), c, tmp));
    const Outcome r = run_tool(argv, tmp);
    INFO("case ", name, ": exit ", r.code, ", stderr: ", r.err);
    CHECK_MESSAGE(!r.signalled, "ended on signal ", r.signal,
                  r.signal == SIGALRM ? " (timed out)" : "");
    CHECK(r.code == c["exit"].get<int>());
    const char* kind = c.contains("error") ? "error" : c.contains("warning") ? "warning" : nullptr;
    if (kind) {
      const std::string expect = c[kind];
      const std::string prefix = std::string(kind) + ": ";
      // Exactly one line: the prefix, the expected text, a single newline at the end.
      CHECK(r.err.rfind(prefix, 0) == 0);
      CHECK(r.err.find(expect) != std::string::npos);
      CHECK(!r.err.empty());
      CHECK(r.err.find('\n') == r.err.size() - 1);
    } else {
      CHECK(r.err.empty());
    }
    if (c.contains("stdout")) CHECK(r.out.find(c["stdout"].get<std::string>()) != std::string::npos);
  }
}

// CLI11 reports the first problem it meets (a missing required option comes before the unknown
// flag); whatever it is, the answer is one line that names the tool's --help.
TEST_CASE("bad inputs: every tool answers an unknown flag with one line naming its --help") {
  const std::string tmp = MAMBA_TEST_TMP "/bad-inputs-flags";
  fs::create_directories(tmp);
  for (const char* tool : {"mamba-cli", "mamba-convert", "mamba-gguf", "mamba-bench", "mamba-batch",
                           "mamba-random", "mamba-tokenize", "mamba-perplexity", "mamba-soak"}) {
    const std::string path = std::string(MAMBA_BIN_DIR) + "/" + tool;
    if (!fs::exists(path)) continue;  // a tool this build leaves out
    const Outcome r = run_tool({path, "--frobnicate"}, tmp);
    INFO(tool, ": exit ", r.code, ", stderr: ", r.err);
    CHECK(!r.signalled);
    CHECK(r.code == 1);
    CHECK(r.err.rfind("error: ", 0) == 0);
    CHECK(r.err.find(std::string("(see ") + tool + " --help)\n") != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
  }
}

TEST_CASE("bad inputs: the corpus files are small") {
  uintmax_t total = 0;
  for (const auto& e : fs::directory_iterator(kDir))
    if (e.is_regular_file()) total += e.file_size();
  CHECK(total < 2u * 1024 * 1024);
}

// In process, so every offset is cheap: the valid file cut at each length, and each header byte
// flipped, must either load or throw mamba::Error (sanitizer builds catch any memory error).
namespace {

// Returns true when the bytes load as a model (and its tokenizer, when it has one).
bool loads(const std::string& bytes) {
  try {
    auto f = mamba::gguf::File::from_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                           bytes.size());
    (void)mamba::tokenizer_from_gguf(*f);
    (void)mamba::Model::from_gguf(std::move(f));
    return true;
  } catch (const mamba::Error& e) {
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
    return false;
  }
}

}  // namespace

TEST_CASE("bad inputs: the valid model cut at every length fails cleanly") {
  const std::string good = slurp(kDir + "/good.gguf");
  REQUIRE(good.size() > 10000);
  CHECK(loads(good));
  int loaded = 0;
  for (size_t n = 0; n < good.size(); n++) loaded += loads(good.substr(0, n));
  CHECK(loaded == 0);
}

TEST_CASE("bad inputs: every header byte of the valid model changed fails cleanly or loads") {
  const std::string good = slurp(kDir + "/good.gguf");
  // Everything before the data section: counts, metadata, tensor infos.
  const auto* base = reinterpret_cast<const uint8_t*>(good.data());
  size_t header = good.size();
  const auto file = mamba::gguf::File::from_memory(base, good.size());
  for (const auto& t : file->tensors()) header = std::min(header, size_t(t.data - base));
  REQUIRE(header > 1000);
  int failed = 0;
  for (size_t i = 0; i < header; i++) {
    for (unsigned char x : {0x01, 0x80, 0xFF}) {
      std::string bad = good;
      bad[i] = char(bad[i] ^ x);
      failed += !loads(bad);
    }
  }
  CHECK(failed > 1000);  // most changes break something; none may crash
}
