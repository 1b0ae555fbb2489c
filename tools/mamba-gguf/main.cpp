// mamba-gguf: print the metadata and tensor table of a GGUF file.
//
//   mamba-gguf FILE.gguf [--items N] [--no-tensors]
//
// Opening the file runs the full validation, so this doubles as a file checker: a broken
// file prints one error line and exits with status 1.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "common/tool_main.h"
#include "gguf/gguf.h"

using namespace mamba::gguf;

namespace {

// Strings are quoted with control characters escaped, so every entry stays on one line.
std::string quote(const std::string& s, size_t max_len = 60) {
  std::string out = "\"";
  for (size_t k = 0; k < s.size(); k++) {
    if (k == max_len) {
      out += "...";
      break;
    }
    const unsigned char c = s[k];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

std::string scalar(const Value& v) {
  switch (v.type) {
    case Type::UINT8: case Type::UINT16: case Type::UINT32: case Type::UINT64:
      return std::to_string(v.u);
    case Type::INT8: case Type::INT16: case Type::INT32: case Type::INT64:
      return std::to_string(v.i);
    case Type::FLOAT32: case Type::FLOAT64: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.9g", v.f);
      return buf;
    }
    case Type::BOOL: return v.u ? "true" : "false";
    case Type::STRING: return quote(v.s);
    case Type::ARRAY: break;
  }
  return "?";
}

// Arrays show their first `items` entries; byte arrays (embedded files) only their size.
std::string show(const Value& v, size_t items) {
  if (v.type != Type::ARRAY) return scalar(v);
  if (v.elem == Type::UINT8 || v.elem == Type::INT8)
    return "<" + std::to_string(v.bytes.size()) + " bytes>";
  std::string out = "[";
  for (size_t k = 0; k < v.arr.size(); k++) {
    if (k == items) {
      out += ", ... (" + std::to_string(v.arr.size()) + " items)";
      break;
    }
    if (k) out += ", ";
    out += show(v.arr[k], items);
  }
  return out + "]";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Print the metadata and tensors of a GGUF file"};
  std::string path;
  size_t items = 8;
  bool no_tensors = false;
  app.add_option("FILE", path, "GGUF file")->required();
  app.add_option("--items", items, "array items to print per metadata entry (default 8)");
  app.add_flag("--no-tensors", no_tensors, "print only the metadata");
  return mamba::tool_main(app, argc, argv, [&] {
    const auto f = File::open(path);
    std::printf("%s: GGUF v%u, %zu bytes, alignment %llu, %zu metadata entries, %zu tensors\n",
                path.c_str(), f->version(), f->file_size(),
                static_cast<unsigned long long>(f->alignment()), f->metadata().size(),
                f->tensors().size());
    for (const auto& [key, v] : f->metadata())
      std::printf("  %-40s %-18s %s\n", key.c_str(), describe_type(v).c_str(),
                  show(v, items).c_str());
    if (no_tensors) return 0;
    uint64_t total = 0;
    std::printf("\n  %-40s %-5s %-24s %12s %12s\n", "tensor", "type", "ne", "offset", "bytes");
    for (const TensorInfo& t : f->tensors()) {
      std::string ne = "[";
      for (size_t d = 0; d < t.ne.size(); d++) ne += (d ? ", " : "") + std::to_string(t.ne[d]);
      ne += "]";
      std::printf("  %-40s %-5s %-24s %12llu %12llu\n", t.name.c_str(), dtype_name(t.dtype),
                  ne.c_str(), static_cast<unsigned long long>(t.offset),
                  static_cast<unsigned long long>(t.n_bytes));
      total += t.n_bytes;
    }
    std::printf("  %zu tensors, %.2f MiB of tensor data\n", f->tensors().size(),
                double(total) / (1 << 20));
    return 0;
  });
}
