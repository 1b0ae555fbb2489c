// Names and sizes of GGUF metadata and tensor types, and the small Value helpers.
#include "gguf/gguf.h"

namespace mamba::gguf {

const char* type_name(Type t) {
  switch (t) {
    case Type::UINT8: return "UINT8";
    case Type::INT8: return "INT8";
    case Type::UINT16: return "UINT16";
    case Type::INT16: return "INT16";
    case Type::UINT32: return "UINT32";
    case Type::INT32: return "INT32";
    case Type::FLOAT32: return "FLOAT32";
    case Type::BOOL: return "BOOL";
    case Type::STRING: return "STRING";
    case Type::ARRAY: return "ARRAY";
    case Type::UINT64: return "UINT64";
    case Type::INT64: return "INT64";
    case Type::FLOAT64: return "FLOAT64";
  }
  return "UNKNOWN";
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
  }
  return "UNKNOWN";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
  }
  return 0;
}

size_t type_size(Type t) {
  switch (t) {
    case Type::UINT8: case Type::INT8: case Type::BOOL: return 1;
    case Type::UINT16: case Type::INT16: return 2;
    case Type::UINT32: case Type::INT32: case Type::FLOAT32: return 4;
    case Type::UINT64: case Type::INT64: case Type::FLOAT64: return 8;
    case Type::STRING: case Type::ARRAY: return 0;
  }
  return 0;
}

std::string describe_type(const Value& v) {
  if (v.type != Type::ARRAY) return type_name(v.type);
  std::string s = "ARRAY of ";
  // The element type of a nested array is only known from its items; an empty outer array
  // of arrays says no more than "ARRAY of ARRAY".
  if (v.elem == Type::ARRAY && !v.arr.empty()) return s + describe_type(v.arr[0]);
  return s + type_name(v.elem);
}

// Keys and tensor names must be non-empty UTF-8 without control characters, so that they
// print on one line and compare the way a user types them.
bool is_valid_name(const std::string& s) {
  if (s.empty() || s.size() > 65535) return false;
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      i++;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; k++) {
      const unsigned char cc = s[i + k];
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

bool Value::is_int() const {
  switch (type) {
    case Type::UINT8: case Type::INT8: case Type::UINT16: case Type::INT16:
    case Type::UINT32: case Type::INT32: case Type::UINT64: case Type::INT64:
      return true;
    default:
      return false;
  }
}

bool Value::is_float() const { return type == Type::FLOAT32 || type == Type::FLOAT64; }

size_t Value::array_size() const {
  if (type != Type::ARRAY) return 0;
  // Byte arrays keep their payload raw instead of one Value per byte.
  if (elem == Type::UINT8 || elem == Type::INT8) return bytes.size();
  return arr.size();
}

}  // namespace mamba::gguf
