// mamba-cli -i on a real terminal, through tmux: tests/cli_tmux_test.sh drives it (streaming,
// a continued second turn, /reset, Ctrl-C during a generation, Ctrl-C at the prompt, Ctrl-D).
// Skipped, and says so, where tmux is not installed.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "test_util.h"

namespace fs = std::filesystem;
using namespace mamba::test;

TEST_CASE("mamba-cli -i in a terminal: streaming, turns, /reset, Ctrl-C, Ctrl-D") {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0) {
    MESSAGE("tmux is not installed: the terminal test of mamba-cli -i is skipped");
    return;
  }
  const std::string script = std::string(MAMBA_SOURCE_DIR) + "/tests/cli_tmux_test.sh";
  const std::string cli = std::string(MAMBA_BIN_DIR) + "/mamba-cli";
  const fs::path tmp = fs::path(MAMBA_TEST_TMP) / "cli_tmux";
  fs::create_directories(tmp);
  std::string out;
  // The script bounds every wait itself (20 s each); stdin from /dev/null so that nothing of
  // the test runner's terminal reaches it.
  const int rc = run("bash '" + script + "' '" + cli + "' '" + tmp.string() + "' </dev/null 2>&1", &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out == "ok\n");
}
