#include "convert/files.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace mamba::convert {

bool is_regular_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string read_whole_file(const std::string& path, uint64_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    fail("cannot open ", path, ": ", std::string(std::strerror(errno)));
  if (S_ISDIR(st.st_mode)) fail(path, " is a directory, expected a file");
  if (!S_ISREG(st.st_mode)) fail(path, " is not a regular file");
  if (uint64_t(st.st_size) > max_bytes)
    fail(path, " is too large (", uint64_t(st.st_size), " bytes, limit ", max_bytes, ")");

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) fail("cannot open ", path, ": ", std::string(std::strerror(errno)));
  std::string data(size_t(st.st_size), '\0');
  if (!data.empty() && std::fread(data.data(), 1, data.size(), f.get()) != data.size())
    fail("cannot read ", path, ": short read");
  return data;
}

std::string join_path(const std::string& dir, const std::string& name) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (d.empty()) return name;
  if (d == "/") return "/" + name;
  return d + "/" + name;
}

}  // namespace mamba::convert
