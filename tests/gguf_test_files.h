// What the GGUF tests share: temporary paths, error capture, a hand-assembled small file whose
// field positions the corruption tests overwrite (base_file), and a "rich" file with every
// metadata type and tensor dtype (write_rich / check_rich).
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "gguf/gguf.h"

namespace mamba::gguf_test {

using namespace mamba::gguf;
namespace fs = std::filesystem;

inline std::string tmp_path(const std::string& name) {
  fs::create_directories(MAMBA_TEST_TMP);
  return std::string(MAMBA_TEST_TMP) + "/" + name;
}

inline std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

inline void write_all(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Parses the first `n` bytes of `b` from a heap block of exactly n bytes, so that any read
// past the end is a heap overflow that AddressSanitizer reports. Returns the error text, or
// "<no error>" when the parse succeeds (after touching every tensor byte).
inline std::string parse_prefix(const std::vector<uint8_t>& b, size_t n) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n]);
  if (n) std::memcpy(copy.get(), b.data(), n);
  return error_of([&] {
    auto f = File::from_memory(copy.get(), n);
    volatile uint32_t sum = 0;
    for (const TensorInfo& t : f->tensors())
      for (uint64_t k = 0; k < t.n_bytes; k++) sum = sum + t.data[k];
  });
}
inline std::string parse_error(const std::vector<uint8_t>& b) { return parse_prefix(b, b.size()); }

#define CHECK_CONTAINS(text, sub)                                            \
  do {                                                                       \
    const std::string t_ = (text);                                           \
    CHECK_MESSAGE(t_.find(sub) != std::string::npos, "message: ", t_);      \
  } while (0)

// Hand-assembled GGUF bytes, for files the Writer would refuse to produce.
struct Raw {
  std::vector<uint8_t> b;
  template <typename T>
  size_t put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return at;
  }
  size_t u8(uint8_t v) { return put(v); }
  size_t u32(uint32_t v) { return put(v); }
  size_t u64(uint64_t v) { return put(v); }
  size_t str(const std::string& s) {
    const size_t at = u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return at;
  }
  void header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    u32(version);
    u64(n_tensors);
    u64(n_kv);
  }
  size_t kv_u32(const std::string& key, uint32_t v) {
    str(key);
    const size_t type_at = u32(uint32_t(Type::UINT32));
    u32(v);
    return type_at;
  }
  void tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t dtype, uint64_t offset) {
    str(name);
    u32(uint32_t(ne.size()));
    for (uint64_t d : ne) u64(d);
    u32(dtype);
    u64(offset);
  }
  void pad(size_t a) {
    while (b.size() % a) b.push_back(0);
  }
  void zeros(size_t n) { b.resize(b.size() + n, 0); }
};

template <typename T>
inline void patch(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Positions of the fields of the base file that the corruption tests overwrite.
struct BaseLayout {
  size_t key0_len, str_len, u32_type, arr_elem, arr_len, t0_ndims, t0_ne0, t0_dtype, t1_offset,
      data_start, end;
};

// A small valid file: 4 metadata entries and two tensors (F32 [4,2] at 0, F16 [8] at 32).
inline std::vector<uint8_t> base_file(BaseLayout* L) {
  Raw r;
  r.header(3, 2, 4);
  L->key0_len = r.str("general.name");
  r.u32(uint32_t(Type::STRING));
  L->str_len = r.str("tiny");
  L->u32_type = r.kv_u32("a.u32", 7);
  r.str("a.arr");
  r.u32(uint32_t(Type::ARRAY));
  L->arr_elem = r.u32(uint32_t(Type::INT32));
  L->arr_len = r.u64(3);
  for (int32_t x : {1, -2, 3}) r.put(x);
  r.str("a.f");
  r.u32(uint32_t(Type::FLOAT32));
  r.put(1.5f);
  r.str("t0");
  L->t0_ndims = r.u32(2);
  L->t0_ne0 = r.u64(4);
  r.u64(2);
  L->t0_dtype = r.u32(0);
  r.u64(0);
  r.str("t1");
  r.u32(1);
  r.u64(8);
  r.u32(1);
  L->t1_offset = r.u64(32);
  r.pad(32);
  L->data_start = r.b.size();
  for (int k = 0; k < 8; k++) r.put(float(k) * 0.25f);
  for (int k = 0; k < 8; k++) r.put(f32_to_f16(float(k) - 4.0f));
  L->end = r.b.size();
  return r.b;
}

inline Value scalar(Type t, uint64_t u, int64_t i = 0, double f = 0) {
  Value v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}
inline Value vu(Type t, uint64_t u) { return scalar(t, u); }
inline Value vi(Type t, int64_t i) { return scalar(t, 0, i); }
inline Value vf(Type t, double f) { return scalar(t, 0, 0, f); }
inline Value vs(const std::string& s) {
  Value v;
  v.type = Type::STRING;
  v.s = s;
  return v;
}
inline Value varr(Type elem, std::vector<Value> items) {
  Value v;
  v.type = Type::ARRAY;
  v.elem = elem;
  v.arr = std::move(items);
  return v;
}
inline Value vbytes(Type elem, const std::string& bytes) {
  Value v;
  v.type = Type::ARRAY;
  v.elem = elem;
  v.bytes = bytes;
  return v;
}

inline bool same(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case Type::UINT8: case Type::UINT16: case Type::UINT32: case Type::UINT64: case Type::BOOL:
      return a.u == b.u;
    case Type::INT8: case Type::INT16: case Type::INT32: case Type::INT64:
      return a.i == b.i;
    case Type::FLOAT32: return float(a.f) == float(b.f);
    case Type::FLOAT64: return a.f == b.f;
    case Type::STRING: return a.s == b.s;
    case Type::ARRAY:
      if (a.elem != b.elem || a.bytes != b.bytes || a.arr.size() != b.arr.size()) return false;
      for (size_t k = 0; k < a.arr.size(); k++)
        if (!same(a.arr[k], b.arr[k])) return false;
      return true;
  }
  return false;
}

inline std::string all_bytes() {
  std::string s;
  for (int k = 0; k < 256; k++) s.push_back(char(k));
  return s;
}

// Metadata covering every type, nesting, and the empty cases, in insertion order.
inline std::vector<std::pair<std::string, Value>> rich_metadata() {
  std::vector<std::pair<std::string, Value>> m;
  m.emplace_back("general.architecture", vs("mamba2"));
  m.emplace_back("t.u8", vu(Type::UINT8, 255));
  m.emplace_back("t.i8", vi(Type::INT8, -128));
  m.emplace_back("t.u16", vu(Type::UINT16, 65535));
  m.emplace_back("t.i16", vi(Type::INT16, -32768));
  m.emplace_back("t.u32", vu(Type::UINT32, 4294967295u));
  m.emplace_back("t.i32", vi(Type::INT32, std::numeric_limits<int32_t>::min()));
  m.emplace_back("t.u64", vu(Type::UINT64, std::numeric_limits<uint64_t>::max()));
  m.emplace_back("t.i64", vi(Type::INT64, std::numeric_limits<int64_t>::min()));
  m.emplace_back("t.f32", vf(Type::FLOAT32, 0.1f));
  m.emplace_back("t.f64", vf(Type::FLOAT64, 0.1));
  m.emplace_back("t.true", vu(Type::BOOL, 1));
  m.emplace_back("t.false", vu(Type::BOOL, 0));
  m.emplace_back("t.empty_str", vs(""));
  m.emplace_back("t.utf8", vs("h\xc3\xa9llo \xe2\x96\x81world\n"));
  m.emplace_back("t.strs", varr(Type::STRING, {vs("<s>"), vs(""), vs("\xe2\x96\x81the")}));
  m.emplace_back("t.i32s", varr(Type::INT32, {vi(Type::INT32, 1), vi(Type::INT32, -7)}));
  m.emplace_back("t.u64s", varr(Type::UINT64, {vu(Type::UINT64, 1), vu(Type::UINT64, 1ull << 40)}));
  m.emplace_back("t.f32s", varr(Type::FLOAT32, {vf(Type::FLOAT32, -0.5), vf(Type::FLOAT32, 3.25)}));
  m.emplace_back("t.f64s", varr(Type::FLOAT64, {vf(Type::FLOAT64, 1e300)}));
  m.emplace_back("t.bools", varr(Type::BOOL, {vu(Type::BOOL, 1), vu(Type::BOOL, 0)}));
  m.emplace_back("t.u8s", vbytes(Type::UINT8, all_bytes()));
  m.emplace_back("t.i8s", vbytes(Type::INT8, std::string("\x80\xff\x01", 3)));
  m.emplace_back("t.empty_strs", varr(Type::STRING, {}));
  m.emplace_back("t.empty_i32s", varr(Type::INT32, {}));
  m.emplace_back("t.empty_u8s", vbytes(Type::UINT8, ""));
  m.emplace_back("t.empty_arrs", varr(Type::ARRAY, {}));
  m.emplace_back("t.nested", varr(Type::ARRAY, {varr(Type::INT32, {vi(Type::INT32, 5)}),
                                                varr(Type::STRING, {vs("a"), vs("bc")}),
                                                varr(Type::INT32, {})}));
  // Four levels of arrays: the deepest nesting the reader accepts.
  m.emplace_back("t.deep", varr(Type::ARRAY, {varr(Type::ARRAY, {varr(Type::ARRAY,
                                {vbytes(Type::UINT8, "xyz")})})}));
  return m;
}

struct TestTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> ne;
  std::vector<uint8_t> bytes;
};

inline std::vector<TestTensor> rich_tensors() {
  std::vector<TestTensor> ts;
  {
    TestTensor t{"blk.0.ssm_in.weight", DType::F32, {3, 5}, {}};
    for (int k = 0; k < 15; k++) {
      const float x = float(k) * 0.5f - 1.0f;
      const uint8_t* p = reinterpret_cast<const uint8_t*>(&x);
      t.bytes.insert(t.bytes.end(), p, p + 4);
    }
    ts.push_back(t);
  }
  {
    TestTensor t{"blk.0.norm.weight", DType::F16, {7}, {}};
    for (float x : {0.0f, 1.0f, -2.0f, 0.5f, 65504.0f, 1e-7f, 3.14159f}) {
      const uint16_t h = f32_to_f16(x);
      t.bytes.push_back(uint8_t(h));
      t.bytes.push_back(uint8_t(h >> 8));
    }
    ts.push_back(t);
  }
  {
    TestTensor t{"token_embd.weight", DType::BF16, {2, 3, 4}, {}};
    for (int k = 0; k < 24; k++) {
      const uint16_t h = f32_to_bf16(float(k) / 3.0f);
      t.bytes.push_back(uint8_t(h));
      t.bytes.push_back(uint8_t(h >> 8));
    }
    ts.push_back(t);
  }
  {
    TestTensor t{"four.d", DType::F32, {1, 2, 1, 3}, std::vector<uint8_t>(24)};
    for (size_t k = 0; k < t.bytes.size(); k++) t.bytes[k] = uint8_t(k * 7 + 1);
    ts.push_back(t);
  }
  return ts;
}

inline void write_rich(const std::string& path, uint64_t alignment = 32) {
  Writer w(alignment);
  for (const auto& [k, v] : rich_metadata()) w.set_value(k, v);
  for (const TestTensor& t : rich_tensors())
    w.add_tensor(t.name, t.dtype, t.ne, [bytes = t.bytes](uint8_t* out, size_t n) {
      REQUIRE(n == bytes.size());
      std::memcpy(out, bytes.data(), n);
    });
  w.write(path);
}

inline void check_rich(const File& f, uint64_t alignment) {
  CHECK(f.version() == 3);
  CHECK(f.alignment() == alignment);
  const auto want = rich_metadata();
  const auto& got = f.metadata();
  const size_t skip = alignment != 32 ? 1 : 0;  // the writer puts general.alignment first
  REQUIRE(got.size() == want.size() + skip);
  if (skip) {
    CHECK(got[0].first == "general.alignment");
    CHECK(got[0].second.type == Type::UINT32);
    CHECK(got[0].second.u == alignment);
  } else {
    CHECK_FALSE(f.has("general.alignment"));
  }
  for (size_t k = 0; k < want.size(); k++) {
    CHECK(got[k + skip].first == want[k].first);
    CHECK_MESSAGE(same(got[k + skip].second, want[k].second), "key ", want[k].first);
  }
  const auto ts = rich_tensors();
  REQUIRE(f.tensors().size() == ts.size());
  uint64_t expect_offset = 0;
  const uint8_t* data_start = f.tensors()[0].data;
  for (size_t k = 0; k < ts.size(); k++) {
    const TensorInfo& t = f.tensors()[k];
    CHECK(t.name == ts[k].name);
    CHECK(t.dtype == ts[k].dtype);
    CHECK(t.ne == ts[k].ne);
    CHECK(t.n_bytes == ts[k].bytes.size());
    CHECK(t.n_elements * dtype_size(t.dtype) == t.n_bytes);
    CHECK(t.offset == expect_offset);
    CHECK(t.offset % alignment == 0);
    CHECK(t.data == data_start + t.offset);
    CHECK(std::memcmp(t.data, ts[k].bytes.data(), t.n_bytes) == 0);
    CHECK(f.find_tensor(t.name) == &t);
    expect_offset = (t.offset + t.n_bytes + alignment - 1) / alignment * alignment;
  }
  CHECK(f.find_tensor("nope") == nullptr);
}

}  // namespace mamba::gguf_test
