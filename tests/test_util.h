// Process and file utilities for the tests that run the built tools as processes: a shell
// command with its output and exit status captured (popen), a child started with fork + exec
// under a time limit (for tests that must signal it or keep its stdout and stderr apart without
// a shell), a whole file read into a string, and a random-weight model written to a file.
// Header-only so that each test executable includes just what it uses.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "model/random_model.h"

namespace mamba::test {

// Writes a random-weight model as dir/name (creating dir) and returns the file's path.
inline std::string write_model_file(const std::filesystem::path& dir, const std::string& name,
                                    const RandomModelOptions& o) {
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  write_random_model(o, path);
  return path;
}

// The whole file's bytes; empty when it does not exist (yet), as for the output file of a job
// still starting.
inline std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The whole file's bytes, for a file the test needs: a missing one fails the test.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A wait status as a shell reports it: the exit code, or 128 + the signal that ended it.
inline int exit_status(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs a shell command; returns its exit status (exit_status) and, when out is given, its
// stdout. Redirections in cmd (2>&1, 2>/dev/null) are the shell's.
inline int run(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = pclose(p);
  if (out) *out = text;
  return exit_status(status);
}

// The same with stdout and stderr apart: stderr goes to err_path (whose folder must exist) and
// is read back into *err.
inline int run(const std::string& cmd, std::string* out, std::string* err,
               const std::filesystem::path& err_path) {
  const int rc = run(cmd + " 2>\"" + err_path.string() + "\"", out);
  *err = slurp(err_path);
  return rc;
}

// Starts argv[0] (a path, no shell) with stdin from /dev/null and stdout and stderr to files
// ("/dev/null" drops one); returns its pid. alarm() survives exec, so a child that hangs ends
// in SIGALRM after timeout_s.
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& out_path,
                   const std::string& err_path, unsigned timeout_s) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int o = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int e = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int in = open("/dev/null", O_RDONLY);
    if (o < 0 || e < 0 || in < 0) _exit(126);
    dup2(in, 0);
    dup2(o, 1);
    dup2(e, 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    alarm(timeout_s);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// Waits for a spawned child; returns its raw wait status (exit_status, WIFSIGNALED, ...).
inline int wait_child(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

}  // namespace mamba::test
