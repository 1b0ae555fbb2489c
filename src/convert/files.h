// Small file helpers for the converter: whole-file reads with a size cap, and
// existence checks that tell a regular file from a directory.
#pragma once

#include <cstdint>
#include <string>

namespace mamba::convert {

// True when `path` names a regular file (following symlinks, as HF caches use them).
bool is_regular_file(const std::string& path);
bool is_directory(const std::string& path);

// Reads a whole regular file. Throws mamba::Error when it is missing, is a directory,
// or is larger than `max_bytes` (config and tokenizer files are small; a huge one is a mistake).
std::string read_whole_file(const std::string& path, uint64_t max_bytes);

// "a/b" with exactly one separator, whatever trailing slashes `dir` has.
std::string join_path(const std::string& dir, const std::string& name);

}  // namespace mamba::convert
