// The end of every tool's main(): parse the command line, run the tool, and turn any failure
// into one "error: ..." line and exit status 1 (a command-line mistake also names the tool's
// --help). --help (and --version, where a tool has it) print and exit 0. Header-only: the
// library itself does not link CLI11, the tools do.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <exception>

namespace mamba {

template <typename Body>
int tool_main(CLI::App& app, int argc, char** argv, Body&& body) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    const char* slash = argc > 0 ? std::strrchr(argv[0], '/') : nullptr;
    const char* tool = argc > 0 ? (slash ? slash + 1 : argv[0]) : "the tool";
    std::fprintf(stderr, "error: %s (see %s --help)\n", e.what(), tool);
    return 1;
  }
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

}  // namespace mamba
