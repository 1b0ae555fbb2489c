// Errors inside the library are exceptions carrying one clear line of text.
// Tools catch them at main() and print "error: <message>" with a non-zero exit.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace mamba {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Concatenates its arguments into one message: fail("tensor ", name, " has ", n, " dims").
template <typename... Args>
[[noreturn]] void fail(const Args&... args);

namespace detail {
inline void append(std::string& s, std::string_view v) { s.append(v); }
inline void append(std::string& s, const char* v) { s.append(v); }
inline void append(std::string& s, char* v) { s.append(v); }
inline void append(std::string& s, const std::string& v) { s.append(v); }
inline void append(std::string& s, char v) { s.push_back(v); }
template <typename T>
void append(std::string& s, const T& v) {
  s.append(std::to_string(v));
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::string msg;
  (detail::append(msg, args), ...);
  throw Error(msg);
}

// Overflow-checked arithmetic for sizes that come from untrusted files.
inline bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
inline bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

}  // namespace mamba
