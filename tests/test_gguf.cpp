// GGUF reader/writer: round trips of every metadata type and tensor dtype, then a
// corruption suite that feeds the reader broken files (each must fail with mamba::Error
// naming the problem, never crash or over-read), and the half-precision conversions.
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

using namespace mamba;
using namespace mamba::gguf;
namespace fs = std::filesystem;

namespace {

std::string tmp_path(const std::string& name) {
  fs::create_directories(MAMBA_TEST_TMP);
  return std::string(MAMBA_TEST_TMP) + "/" + name;
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_all(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

std::string error_of(const std::function<void()>& fn) {
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
std::string parse_prefix(const std::vector<uint8_t>& b, size_t n) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n]);
  if (n) std::memcpy(copy.get(), b.data(), n);
  return error_of([&] {
    auto f = File::from_memory(copy.get(), n);
    volatile uint32_t sum = 0;
    for (const TensorInfo& t : f->tensors())
      for (uint64_t k = 0; k < t.n_bytes; k++) sum = sum + t.data[k];
  });
}
std::string parse_error(const std::vector<uint8_t>& b) { return parse_prefix(b, b.size()); }

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
void patch(std::vector<uint8_t>& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof(T));
}

// Positions of the fields of the base file that the corruption tests overwrite.
struct BaseLayout {
  size_t key0_len, str_len, u32_type, arr_elem, arr_len, t0_ndims, t0_ne0, t0_dtype, t1_offset,
      data_start, end;
};

// A small valid file: 4 metadata entries and two tensors (F32 [4,2] at 0, F16 [8] at 32).
std::vector<uint8_t> base_file(BaseLayout* L) {
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

Value scalar(Type t, uint64_t u, int64_t i = 0, double f = 0) {
  Value v;
  v.type = t;
  v.u = u;
  v.i = i;
  v.f = f;
  return v;
}
Value vu(Type t, uint64_t u) { return scalar(t, u); }
Value vi(Type t, int64_t i) { return scalar(t, 0, i); }
Value vf(Type t, double f) { return scalar(t, 0, 0, f); }
Value vs(const std::string& s) {
  Value v;
  v.type = Type::STRING;
  v.s = s;
  return v;
}
Value varr(Type elem, std::vector<Value> items) {
  Value v;
  v.type = Type::ARRAY;
  v.elem = elem;
  v.arr = std::move(items);
  return v;
}
Value vbytes(Type elem, const std::string& bytes) {
  Value v;
  v.type = Type::ARRAY;
  v.elem = elem;
  v.bytes = bytes;
  return v;
}

bool same(const Value& a, const Value& b) {
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

std::string all_bytes() {
  std::string s;
  for (int k = 0; k < 256; k++) s.push_back(char(k));
  return s;
}

// Metadata covering every type, nesting, and the empty cases, in insertion order.
std::vector<std::pair<std::string, Value>> rich_metadata() {
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

std::vector<TestTensor> rich_tensors() {
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

void write_rich(const std::string& path, uint64_t alignment = 32) {
  Writer w(alignment);
  for (const auto& [k, v] : rich_metadata()) w.set_value(k, v);
  for (const TestTensor& t : rich_tensors())
    w.add_tensor(t.name, t.dtype, t.ne, [bytes = t.bytes](uint8_t* out, size_t n) {
      REQUIRE(n == bytes.size());
      std::memcpy(out, bytes.data(), n);
    });
  w.write(path);
}

void check_rich(const File& f, uint64_t alignment) {
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

}  // namespace

// ---- round trips -------------------------------------------------------------------------

TEST_CASE("gguf: every metadata type and tensor dtype round-trips through a file") {
  const std::string path = tmp_path("rich.gguf");
  write_rich(path);
  auto f = File::open(path);
  check_rich(*f, 32);
  CHECK(f->path() == path);
  CHECK(f->file_size() == fs::file_size(path));
  // mmap returns a page-aligned base, so aligned offsets give aligned pointers.
  for (const TensorInfo& t : f->tensors()) CHECK(reinterpret_cast<uintptr_t>(t.data) % 32 == 0);
  // No temporary file is left behind.
  CHECK_FALSE(fs::exists(path + ".tmp"));

  // The same bytes parse identically from memory, and in version 2 layout.
  std::vector<uint8_t> bytes = read_all(path);
  auto m = File::from_memory(bytes.data(), bytes.size());
  check_rich(*m, 32);
  CHECK(m->path().empty());
  // Data starts on an aligned offset, and the file ends with the last tensor padded.
  const size_t data_start = size_t(m->tensors()[0].data - bytes.data());
  const TensorInfo& last = m->tensors().back();
  CHECK(data_start % 32 == 0);
  CHECK(bytes.size() == data_start + last.offset + (last.n_bytes + 31) / 32 * 32);
  patch<uint32_t>(bytes, 4, 2);
  CHECK(File::from_memory(bytes.data(), bytes.size())->version() == 2);
}

TEST_CASE("gguf: custom alignment places data and tensors on its multiples") {
  for (uint64_t a : {1ull, 8ull, 64ull, 4096ull}) {
    CAPTURE(a);
    const std::string path = tmp_path("align.gguf");
    write_rich(path, a);
    auto f = File::open(path);
    check_rich(*f, a);
    std::vector<uint8_t> bytes = read_all(path);
    auto m = File::from_memory(bytes.data(), bytes.size());
    const size_t data_start = size_t(m->tensors()[0].data - bytes.data());
    CHECK(data_start % a == 0);
    for (const TensorInfo& t : f->tensors()) CHECK(reinterpret_cast<uintptr_t>(t.data) % a == 0);
  }
  CHECK_CONTAINS(error_of([] { Writer w(24); }), "power of two");
  CHECK_CONTAINS(error_of([] { Writer w(0); }), "power of two");
  // Setting general.alignment changes the writer's alignment rather than adding a key.
  Writer w;
  w.set_u32("general.alignment", 128);
  w.add_tensor("x", DType::F32, {3}, [](uint8_t* out, size_t n) { std::memset(out, 1, n); });
  w.add_tensor("y", DType::F32, {3}, [](uint8_t* out, size_t n) { std::memset(out, 2, n); });
  const std::string path = tmp_path("align128.gguf");
  w.write(path);
  auto f = File::open(path);
  CHECK(f->alignment() == 128);
  CHECK(f->metadata().size() == 1);
  CHECK(f->tensors()[1].offset == 128);
  CHECK_CONTAINS(error_of([&] { w.set_u32("general.alignment", 48); }), "power of two");
}

TEST_CASE("gguf: writer keeps insertion order and replaces values in place") {
  Writer w;
  w.set_u32("x", 1);
  w.set_str("y", "first");
  w.set_u8("z", 9);
  w.set_u32("x", 2);
  w.set_str("y", "second");
  w.set_i32("i", -5);
  w.set_u64("u64", 1ull << 50);
  w.set_f32("f", 2.5f);
  w.set_f64("d", -0.125);
  w.set_bool("b", true);
  w.set_str_array("sa", {"a", "", "ccc"});
  w.set_i32_array("ia", {3, -4});
  w.set_f32_array("fa", {0.5f, -1.0f});
  w.set_bytes("bytes", std::string("\0\1\2\xff", 4));
  const std::string path = tmp_path("order.gguf");
  w.write(path);
  auto f = File::open(path);
  std::vector<std::string> keys;
  for (const auto& kv : f->metadata()) keys.push_back(kv.first);
  CHECK(keys == std::vector<std::string>{"x", "y", "z", "i", "u64", "f", "d", "b", "sa", "ia",
                                         "fa", "bytes"});
  CHECK(f->get_int("x") == 2);
  CHECK(f->get_str("y") == "second");
  CHECK(f->get_int("z") == 9);
  CHECK(f->get_int("i") == -5);
  CHECK(f->get_int("u64") == int64_t(1) << 50);
  CHECK(f->get_float("f") == 2.5);
  CHECK(f->get_float("d") == -0.125);
  CHECK(f->get_bool("b") == true);
  CHECK(f->get_str_array("sa") == std::vector<std::string>{"a", "", "ccc"});
  CHECK(f->get_int_array("ia") == std::vector<int64_t>{3, -4});
  CHECK(f->get_float_array("fa") == std::vector<float>{0.5f, -1.0f});
  CHECK(f->get_int_array("bytes") == std::vector<int64_t>{0, 1, 2, 255});
  CHECK(f->find("bytes")->bytes == std::string("\0\1\2\xff", 4));
  CHECK(f->find("bytes")->array_size() == 4);
  CHECK(f->find("sa")->array_size() == 3);
  CHECK(f->tensors().empty());
}

TEST_CASE("gguf: typed getters convert, range-check and name type mismatches") {
  const std::string path = tmp_path("getters.gguf");
  write_rich(path);
  auto f = File::open(path);
  CHECK(f->get_int("t.u8") == 255);
  CHECK(f->get_int("t.i8") == -128);
  CHECK(f->get_int("t.u16") == 65535);
  CHECK(f->get_int("t.i16") == -32768);
  CHECK(f->get_int("t.u32") == 4294967295ll);
  CHECK(f->get_int("t.i64") == std::numeric_limits<int64_t>::min());
  CHECK_CONTAINS(error_of([&] { f->get_int("t.u64"); }), "does not fit");
  CHECK_CONTAINS(error_of([&] { f->get_int("t.u64"); }), "t.u64");
  CHECK(f->get_float("t.f32") == double(0.1f));
  CHECK(f->get_float("t.f64") == 0.1);
  CHECK(f->get_float("t.i32") == double(std::numeric_limits<int32_t>::min()));
  CHECK(f->get_float("t.u64") == 18446744073709551615.0);
  CHECK(f->get_bool("t.true") == true);
  CHECK(f->get_bool("t.false") == false);
  CHECK(f->get_str("t.empty_str").empty());
  CHECK(f->get_str("general.architecture") == "mamba2");
  CHECK(f->get_str_array("t.strs") == std::vector<std::string>{"<s>", "", "\xe2\x96\x81the"});
  CHECK(f->get_str_array("t.empty_strs").empty());
  CHECK(f->get_int_array("t.u64s") == std::vector<int64_t>{1, int64_t(1) << 40});
  CHECK(f->get_int_array("t.i8s") == std::vector<int64_t>{-128, -1, 1});
  CHECK(f->get_int_array("t.u8s").size() == 256);
  CHECK(f->get_int_array("t.u8s")[200] == 200);
  CHECK(f->get_int_array("t.empty_u8s").empty());
  CHECK(f->get_float_array("t.f64s") == std::vector<float>{float(1e300)});
  CHECK(f->get_float_array("t.f32s") == std::vector<float>{-0.5f, 3.25f});

  // Defaults apply only when the key is absent; a present key of the wrong type still fails.
  CHECK(f->get_str("nope", "dflt") == "dflt");
  CHECK(f->get_int("nope", 42) == 42);
  CHECK(f->get_float("nope", 1.5) == 1.5);
  CHECK(f->get_bool("nope", true) == true);
  CHECK(f->get_int("t.u8", 3) == 255);
  CHECK_CONTAINS(error_of([&] { f->get_int("t.f32", 0); }), "has type FLOAT32, expected");

  const std::string p = path + ": ";
  CHECK(error_of([&] { f->get_str("nope"); }) == p + "missing metadata key 'nope'");
  CHECK(error_of([&] { f->get_int("t.true"); }) ==
        p + "metadata key 't.true' has type BOOL, expected an integer");
  CHECK(error_of([&] { f->get_str("t.u32"); }) ==
        p + "metadata key 't.u32' has type UINT32, expected STRING");
  CHECK_CONTAINS(error_of([&] { f->get_bool("t.u8"); }), "has type UINT8, expected BOOL");
  CHECK_CONTAINS(error_of([&] { f->get_float("t.strs"); }), "has type ARRAY of STRING");
  CHECK_CONTAINS(error_of([&] { f->get_str_array("t.i32s"); }),
                 "'t.i32s' has type ARRAY of INT32, expected ARRAY of STRING");
  CHECK_CONTAINS(error_of([&] { f->get_int_array("t.strs"); }), "expected ARRAY of an integer type");
  CHECK_CONTAINS(error_of([&] { f->get_int_array("t.u32"); }), "has type UINT32");
  CHECK_CONTAINS(error_of([&] { f->get_float_array("t.i32s"); }), "expected ARRAY of FLOAT32");
  CHECK_CONTAINS(error_of([&] { f->get_int_array("t.nested"); }), "ARRAY of ARRAY of INT32");

  // A UINT64 array item beyond int64 is rejected rather than wrapped.
  Writer w;
  w.set_value("big", varr(Type::UINT64, {vu(Type::UINT64, 1ull << 63)}));
  w.write(path);
  CHECK_CONTAINS(error_of([&] { File::open(path)->get_int_array("big"); }), "does not fit");
}

TEST_CASE("gguf: writer validates tensors and values") {
  Writer w;
  auto fill = [](uint8_t* out, size_t n) { std::memset(out, 0, n); };
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType::F32, {}, fill); }), "0 dimensions");
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType::F32, {1, 1, 1, 1, 1}, fill); }),
                 "5 dimensions");
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType::F32, {4, 0}, fill); }), "zero-sized");
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType::F32, {1ull << 32, 1ull << 32}, fill); }),
                 "too many elements");
  CHECK_CONTAINS(error_of([&] { w.add_tensor("", DType::F32, {1}, fill); }), "empty");
  CHECK_CONTAINS(error_of([&] { w.add_tensor(std::string(64, 'n'), DType::F32, {1}, fill); }),
                 "at most 63");
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType(8), {1}, fill); }), "unsupported type 8");
  w.add_tensor("a", DType::F32, {2}, fill);
  CHECK_CONTAINS(error_of([&] { w.add_tensor("a", DType::F16, {2}, fill); }),
                 "duplicate tensor name 'a'");
  CHECK_CONTAINS(error_of([&] { w.set_u32("", 1); }), "empty");
  CHECK_CONTAINS(error_of([&] { w.set_value("k", varr(Type::INT32, {vu(Type::UINT32, 1)})); }),
                 "holds an item of type UINT32");
  CHECK_CONTAINS(error_of([&] { w.set_value("k", vi(Type::INT8, 200)); }), "out of range");
  CHECK_CONTAINS(error_of([&] { w.set_value("k", vu(Type::BOOL, 2)); }), "BOOL");
  CHECK_CONTAINS(error_of([&] { w.set_value("k", varr(Type::UINT8, {vu(Type::UINT8, 1)})); }),
                 "Value::bytes");
  Value deep = vbytes(Type::UINT8, "x");
  for (int k = 0; k < 4; k++) deep = varr(Type::ARRAY, {deep});
  CHECK_CONTAINS(error_of([&] { w.set_value("k", deep); }), "nested more than 4");
}

TEST_CASE("gguf: a failed write leaves neither the file nor its temporary") {
  const std::string path = tmp_path("failed.gguf");
  fs::remove(path);
  Writer w;
  w.set_str("k", "v");
  w.add_tensor("ok", DType::F32, {4}, [](uint8_t* out, size_t n) { std::memset(out, 0, n); });
  w.add_tensor("bad", DType::F32, {4}, [](uint8_t*, size_t) { fail("producer broke"); });
  CHECK(error_of([&] { w.write(path); }) == "producer broke");
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));

  CHECK_CONTAINS(error_of([&] { w.write(tmp_path("no/such/dir/x.gguf")); }), "cannot create");

  // A temporary that is really /dev/full makes every write fail with ENOSPC, as on a full disk.
  if (fs::exists("/dev/full")) {
    const std::string full = tmp_path("full.gguf");
    fs::remove(full + ".tmp");
    fs::create_symlink("/dev/full", full + ".tmp");
    Writer big;
    big.add_tensor("t", DType::F32, {1 << 20}, [](uint8_t* out, size_t n) { std::memset(out, 1, n); });
    const std::string e = error_of([&] { big.write(full); });
    CHECK_CONTAINS(e, full);
    CHECK_CONTAINS(e, "No space left");
    CHECK_FALSE(fs::exists(full));
    CHECK_FALSE(fs::is_symlink(full + ".tmp"));
  }

  // Progress reports cumulative tensor bytes.
  Writer p;
  p.add_tensor("a", DType::F32, {3}, [](uint8_t* out, size_t n) { std::memset(out, 0, n); });
  p.add_tensor("b", DType::F16, {5}, [](uint8_t* out, size_t n) { std::memset(out, 0, n); });
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  p.write(tmp_path("progress.gguf"), [&](uint64_t d, uint64_t t) { calls.emplace_back(d, t); });
  CHECK(calls == std::vector<std::pair<uint64_t, uint64_t>>{{12, 22}, {22, 22}});
}

TEST_CASE("gguf: File::open reports missing paths, directories and bad files by name") {
  CHECK_CONTAINS(error_of([] { File::open(tmp_path("does-not-exist.gguf")); }), "cannot open");
  CHECK_CONTAINS(error_of([] { File::open(MAMBA_TEST_TMP); }), "directory");
  const std::string empty = tmp_path("empty.gguf");
  write_all(empty, {});
  CHECK(error_of([&] { File::open(empty); }) == empty + ": not a GGUF file (bad magic)");
  BaseLayout L;
  std::vector<uint8_t> b = base_file(&L);
  b.resize(b.size() - 1);
  const std::string cut = tmp_path("cut.gguf");
  write_all(cut, b);
  CHECK(error_of([&] { File::open(cut); }) ==
        cut + ": tensor 't1' data (offset 32, 16 bytes) runs past the end of the file "
              "(data starts at " + std::to_string(L.data_start) + ", size " +
              std::to_string(b.size()) + ")");
}

// ---- corruption suite --------------------------------------------------------------------

TEST_CASE("gguf: the base corruption file is valid") {
  BaseLayout L;
  const std::vector<uint8_t> b = base_file(&L);
  auto f = File::from_memory(b.data(), b.size());
  CHECK(f->get_str("general.name") == "tiny");
  CHECK(f->get_int("a.u32") == 7);
  CHECK(f->get_int_array("a.arr") == std::vector<int64_t>{1, -2, 3});
  CHECK(f->get_float("a.f") == 1.5);
  REQUIRE(f->tensors().size() == 2);
  CHECK(f->tensors()[1].data == b.data() + L.data_start + 32);
  CHECK(f16_to_f32(reinterpret_cast<const uint16_t*>(f->tensors()[1].data)[7]) == 3.0f);
}

TEST_CASE("gguf: truncation at every byte offset fails cleanly") {
  // Every prefix shorter than the end of the last tensor's data must be rejected; longer ones
  // (cutting only the trailing padding) are still complete files.
  BaseLayout L;
  const std::vector<uint8_t> base = base_file(&L);
  for (size_t n = 0; n < base.size(); n++) {
    CAPTURE(n);
    CHECK(parse_prefix(base, n) != "<no error>");
  }
  CHECK(parse_prefix(base, base.size()) == "<no error>");

  const std::string path = tmp_path("trunc.gguf");
  write_rich(path);
  const std::vector<uint8_t> rich = read_all(path);
  auto f = File::from_memory(rich.data(), rich.size());
  const TensorInfo& last = f->tensors().back();
  const size_t end = size_t(last.data - rich.data()) + last.n_bytes;
  REQUIRE(end < rich.size());  // the rich file has trailing padding
  size_t failures = 0;
  for (size_t n = 0; n < rich.size(); n++) {
    const std::string e = parse_prefix(rich, n);
    if (n < end) {
      failures += e != "<no error>";
      if (e == "<no error>") FAIL_CHECK("prefix of ", n, " bytes parsed");
    } else {
      CHECK(e == "<no error>");
    }
  }
  CHECK(failures == end);
  CHECK_CONTAINS(parse_prefix(rich, 30), "corrupt or truncated");
  CHECK(parse_prefix(base, L.t0_ne0 + 4) == "file truncated: tensor dimension at offset " +
                                                std::to_string(L.t0_ne0) + " needs 8 bytes, only 4 left");
  std::vector<uint8_t> b = base;
  patch<uint64_t>(b, L.str_len, 1000);
  CHECK(parse_error(b) == "string value at offset " + std::to_string(L.str_len) +
                              " has length 1000, which exceeds the remaining " +
                              std::to_string(base.size() - L.str_len - 8) + " bytes of the file");
}

TEST_CASE("gguf: bad magic and versions") {
  BaseLayout L;
  std::vector<uint8_t> b = base_file(&L);
  b[0] = 'X';
  CHECK(parse_error(b) == "not a GGUF file (bad magic)");
  b = base_file(&L);
  patch<uint32_t>(b, 4, 7);
  CHECK(parse_error(b) == "unsupported GGUF version 7 (only 2 and 3 are supported)");
  patch<uint32_t>(b, 4, 1);
  CHECK_CONTAINS(parse_error(b), "unsupported GGUF version 1");
  patch<uint32_t>(b, 4, 3u << 24);
  CHECK_CONTAINS(parse_error(b), "big-endian");
  patch<uint32_t>(b, 4, 2);
  CHECK(parse_error(b) == "<no error>");
}

TEST_CASE("gguf: huge counts and lengths are rejected before allocating") {
  BaseLayout L;
  const std::vector<uint8_t> base = base_file(&L);
  for (uint64_t huge : {uint64_t(1) << 63, ~uint64_t(0), uint64_t(1) << 60, uint64_t(1) << 32,
                        uint64_t(1000)}) {
    CAPTURE(huge);
    std::vector<uint8_t> b = base;
    patch<uint64_t>(b, 8, huge);
    CHECK_CONTAINS(parse_error(b), "n_tensors");
    b = base;
    patch<uint64_t>(b, 16, huge);
    CHECK_CONTAINS(parse_error(b), "n_kv");
    b = base;
    patch<uint64_t>(b, L.key0_len, huge);
    CHECK_CONTAINS(parse_error(b), "metadata key at offset 24 has length");
    b = base;
    patch<uint64_t>(b, L.str_len, huge);
    CHECK_CONTAINS(parse_error(b), "exceeds the remaining");
    b = base;
    patch<uint64_t>(b, L.arr_len, huge);
    CHECK_CONTAINS(parse_error(b), "'a.arr' array at offset");
    CHECK_CONTAINS(parse_error(b), "exceeds the remaining");
  }
  // One more entry than the file holds runs into the tensor infos and fails there.
  std::vector<uint8_t> b = base;
  patch<uint64_t>(b, 16, 5);
  CHECK(parse_error(b) != "<no error>");
  b = base;
  patch<uint64_t>(b, 8, 3);
  CHECK(parse_error(b) != "<no error>");

  // An array whose items fit the file but exceed the total item budget is refused up front,
  // before one Value per item is allocated.
  Raw r;
  r.header(3, 0, 1);
  r.str("many");
  r.u32(uint32_t(Type::ARRAY));
  r.u32(uint32_t(Type::UINT16));
  const uint64_t n = (uint64_t(1) << 24) + 1;
  r.u64(n);
  r.zeros(n * 2);
  CHECK_CONTAINS(parse_error(r.b), "items in total");
}

TEST_CASE("gguf: bad metadata types, keys and values") {
  BaseLayout L;
  const std::vector<uint8_t> base = base_file(&L);
  std::vector<uint8_t> b = base;
  patch<uint32_t>(b, L.u32_type, 13);
  CHECK(parse_error(b) == "metadata key 'a.u32' has unknown type 13");
  b = base;
  patch<uint32_t>(b, L.u32_type, 0xffffffffu);
  CHECK_CONTAINS(parse_error(b), "'a.u32' has unknown type 4294967295");
  b = base;
  patch<uint32_t>(b, L.arr_elem, 99);
  CHECK(parse_error(b) == "metadata key 'a.arr' is an array of unknown type 99");

  auto one_kv = [](const std::string& key, uint32_t type, const std::vector<uint8_t>& payload) {
    Raw r;
    r.header(3, 0, 1);
    r.str(key);
    r.u32(type);
    r.b.insert(r.b.end(), payload.begin(), payload.end());
    return r.b;
  };
  CHECK_CONTAINS(parse_error(one_kv("", uint32_t(Type::UINT8), {1})), "is empty or not valid UTF-8");
  CHECK_CONTAINS(parse_error(one_kv("a\nb", uint32_t(Type::UINT8), {1})), "'a?b' is empty or not valid");
  CHECK_CONTAINS(parse_error(one_kv("\xc3(", uint32_t(Type::UINT8), {1})), "not valid UTF-8");
  CHECK_CONTAINS(parse_error(one_kv("\xc0\xaf", uint32_t(Type::UINT8), {1})), "not valid UTF-8");
  CHECK(parse_error(one_kv("caf\xc3\xa9", uint32_t(Type::UINT8), {1})) == "<no error>");
  CHECK(parse_error(one_kv("b", uint32_t(Type::BOOL), {2})) ==
        "metadata key 'b' has invalid BOOL value 2");

  // Arrays nest at most four deep.
  auto nested = [](int depth) {
    Raw r;
    r.header(3, 0, 1);
    r.str("deep");
    r.u32(uint32_t(Type::ARRAY));
    for (int k = 1; k < depth; k++) {
      r.u32(uint32_t(Type::ARRAY));
      r.u64(1);
    }
    r.u32(uint32_t(Type::UINT32));
    r.u64(1);
    r.u32(5);
    return r.b;
  };
  CHECK(parse_error(nested(4)) == "<no error>");
  CHECK(parse_error(nested(5)) == "metadata key 'deep' nests arrays more than 4 deep");

  Raw dup;
  dup.header(3, 0, 2);
  dup.kv_u32("k", 1);
  dup.kv_u32("k", 2);
  CHECK(parse_error(dup.b) == "duplicate metadata key 'k'");
}

TEST_CASE("gguf: general.alignment must be a UINT32 power of two") {
  size_t info_end = 0;
  auto with_alignment = [&](Type type, uint64_t a) {
    Raw r;
    r.header(3, 1, 1);
    r.str("general.alignment");
    r.u32(uint32_t(type));
    if (type == Type::UINT32) r.u32(uint32_t(a)); else r.u64(a);
    r.tensor("t", {4}, 0, 0);
    info_end = r.b.size();
    r.pad(a && a <= 4096 && (a & (a - 1)) == 0 ? a : 32);
    r.zeros(16);
    return r.b;
  };
  CHECK(parse_error(with_alignment(Type::UINT32, 64)) == "<no error>");
  CHECK(parse_error(with_alignment(Type::UINT32, 1)) == "<no error>");
  const std::vector<uint8_t> b = with_alignment(Type::UINT32, 64);
  auto f = File::from_memory(b.data(), b.size());
  CHECK(f->alignment() == 64);
  CHECK(size_t(f->tensors()[0].data - b.data()) == (info_end + 63) / 64 * 64);
  CHECK(info_end % 64 != 0);
  CHECK(parse_error(with_alignment(Type::UINT32, 24)) == "general.alignment 24 is not a power of two");
  CHECK_CONTAINS(parse_error(with_alignment(Type::UINT32, 0)), "not a power of two");
  CHECK(parse_error(with_alignment(Type::UINT64, 32)) ==
        "general.alignment has type UINT64, expected UINT32");
}

TEST_CASE("gguf: bad tensor infos") {
  BaseLayout L;
  const std::vector<uint8_t> base = base_file(&L);
  std::vector<uint8_t> b = base;
  patch<uint32_t>(b, L.t0_dtype, 8);
  CHECK(parse_error(b) ==
        "tensor 't0' has unsupported type 8 (Q8_0); only F32, F16 and BF16 are supported");
  patch<uint32_t>(b, L.t0_dtype, 2);
  CHECK_CONTAINS(parse_error(b), "unsupported type 2 (Q4_0)");
  patch<uint32_t>(b, L.t0_dtype, 1000);
  CHECK_CONTAINS(parse_error(b), "unsupported type 1000 (unknown)");
  b = base;
  patch<uint32_t>(b, L.t0_ndims, 0);
  CHECK(parse_error(b) == "tensor 't0' has 0 dimensions (must be 1 to 4)");
  patch<uint32_t>(b, L.t0_ndims, 5);
  CHECK(parse_error(b) == "tensor 't0' has 5 dimensions (must be 1 to 4)");
  b = base;
  patch<uint64_t>(b, L.t0_ne0, 0);
  CHECK(parse_error(b) == "tensor 't0' has a zero-sized dimension (ne[0] = 0)");
  b = base;
  patch<uint64_t>(b, L.t0_ne0, 5);  // 40 bytes at offset 0 reach into t1 at 32
  CHECK(parse_error(b) == "tensors 't0' and 't1' overlap (offsets 0 + 40 bytes and 32)");
  b = base;
  patch<uint64_t>(b, L.t1_offset, 0);
  CHECK_CONTAINS(parse_error(b), "tensors 't0' and 't1' overlap");
  patch<uint64_t>(b, L.t1_offset, 33);
  CHECK(parse_error(b) == "tensor 't1' data offset 33 is not a multiple of the alignment 32");
  patch<uint64_t>(b, L.t1_offset, 64);
  CHECK_CONTAINS(parse_error(b), "tensor 't1' data (offset 64, 16 bytes) runs past the end");
  patch<uint64_t>(b, L.t1_offset, uint64_t(1) << 40);
  CHECK_CONTAINS(parse_error(b), "runs past the end of the file");
  patch<uint64_t>(b, L.t1_offset, ~uint64_t(31));  // aligned, and data_start + offset wraps
  CHECK_CONTAINS(parse_error(b), "runs past the end of the file");

  // Dimension products that overflow 64 bits, and ones whose byte size does.
  Raw r;
  r.header(3, 1, 0);
  r.tensor("big", {1ull << 32, 1ull << 32, 1ull << 32}, 0, 0);
  r.pad(32);
  CHECK(parse_error(r.b) ==
        "tensor 'big' has too many elements (the product of its dimensions overflows)");
  Raw r2;
  r2.header(3, 1, 0);
  r2.tensor("big", {1ull << 31, 1ull << 31, 2}, 0, 0);  // 2^63 elements, 2^65 bytes
  r2.pad(32);
  CHECK(parse_error(r2.b) == "tensor 'big' size in bytes overflows");
  Raw r3;
  r3.header(3, 1, 0);
  r3.tensor("big", {1ull << 20, 1ull << 20}, 0, 0);
  r3.pad(32);
  CHECK_CONTAINS(parse_error(r3.b), "runs past the end of the file");

  Raw dup;
  dup.header(3, 2, 0);
  dup.tensor("w", {4}, 0, 0);
  dup.tensor("w", {4}, 0, 32);
  dup.pad(32);
  dup.zeros(64);
  CHECK(parse_error(dup.b) == "duplicate tensor name 'w'");
  Raw unnamed;
  unnamed.header(3, 1, 0);
  unnamed.tensor("", {4}, 0, 0);
  unnamed.pad(32);
  unnamed.zeros(16);
  CHECK_CONTAINS(parse_error(unnamed.b), "tensor #0 name '' is empty");
}

TEST_CASE("gguf: random mutations either parse or throw mamba::Error") {
  const std::string path = tmp_path("mutate.gguf");
  write_rich(path);
  const std::vector<uint8_t> rich = read_all(path);
  auto f = File::from_memory(rich.data(), rich.size());
  const size_t header_end = size_t(f->tensors()[0].data - rich.data());
  std::mt19937_64 rng(12345);
  int parsed = 0, rejected = 0;
  for (int iter = 0; iter < 2000; iter++) {
    std::vector<uint8_t> b = rich;
    const int n_mut = 1 + int(rng() % 4);
    for (int m = 0; m < n_mut; m++) {
      // Mostly mutate the header, where every byte means something.
      const size_t at = rng() % 8 ? rng() % header_end : rng() % b.size();
      switch (rng() % 3) {
        case 0: b[at] = uint8_t(rng()); break;
        case 1: b[at] ^= uint8_t(1u << (rng() % 8)); break;
        default:  // a whole 8-byte field, often a length, set to something large
          if (at + 8 <= b.size()) patch<uint64_t>(b, at, rng() >> (rng() % 64));
      }
    }
    if (rng() % 8 == 0) b.resize(rng() % b.size());
    std::unique_ptr<uint8_t[]> copy(new uint8_t[b.size()]);
    std::memcpy(copy.get(), b.data(), b.size());
    try {
      auto g = File::from_memory(copy.get(), b.size());
      // Whatever parsed must be safe to use: walk every getter and tensor byte.
      for (const auto& [key, v] : g->metadata()) {
        for (auto fn : {+[](const File& x, const std::string& k) { x.get_int(k); },
                        +[](const File& x, const std::string& k) { x.get_float(k); },
                        +[](const File& x, const std::string& k) { x.get_str_array(k); },
                        +[](const File& x, const std::string& k) { x.get_int_array(k); },
                        +[](const File& x, const std::string& k) { x.get_float_array(k); }}) {
          try {
            fn(*g, key);
          } catch (const Error&) {
          }
        }
      }
      volatile uint32_t sum = 0;
      for (const TensorInfo& t : g->tensors())
        for (uint64_t k = 0; k < t.n_bytes; k++) sum = sum + t.data[k];
      parsed++;
    } catch (const Error&) {
      rejected++;
    }
  }
  CHECK(parsed + rejected == 2000);
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

TEST_CASE("gguf: a 50k-entry vocabulary and 300 tensors round-trip") {
  std::vector<std::string> vocab(50000);
  std::vector<float> scores(vocab.size());
  std::vector<int32_t> types(vocab.size());
  for (size_t k = 0; k < vocab.size(); k++) {
    vocab[k] = "\xe2\x96\x81tok" + std::to_string(k * 7919 % 100003);
    scores[k] = -float(k);
    types[k] = int32_t(k % 6);
  }
  Writer w;
  w.set_str_array("tokenizer.ggml.tokens", vocab);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_bytes("tokenizer.model", std::string(600 * 1024, 'm'));
  for (int k = 0; k < 300; k++)
    w.add_tensor("blk." + std::to_string(k) + ".w", k % 2 ? DType::F16 : DType::F32,
                 {uint64_t(16 + k % 5), 3}, [k](uint8_t* out, size_t n) {
                   for (size_t j = 0; j < n; j++) out[j] = uint8_t(j + k);
                 });
  const std::string path = tmp_path("vocab.gguf");
  w.write(path);
  auto f = File::open(path);
  CHECK(f->get_str_array("tokenizer.ggml.tokens") == vocab);
  CHECK(f->get_float_array("tokenizer.ggml.scores") == scores);
  CHECK(f->get_int_array("tokenizer.ggml.token_type").at(49999) == 49999 % 6);
  CHECK(f->find("tokenizer.model")->bytes.size() == 600 * 1024);
  REQUIRE(f->tensors().size() == 300);
  const TensorInfo* t = f->find_tensor("blk.299.w");
  REQUIRE(t != nullptr);
  CHECK(t->dtype == DType::F16);
  CHECK(t->ne == std::vector<uint64_t>{20, 3});
  CHECK(t->data[5] == uint8_t(5 + 299));
}

// ---- half precision ------------------------------------------------------------------------

TEST_CASE("half: f32 <-> f16 matches IEEE bit patterns with round-to-nearest-even") {
  struct Case { float f; uint16_t h; };
  const Case cases[] = {
      {0.0f, 0x0000},        {-0.0f, 0x8000},          {1.0f, 0x3c00},
      {-2.0f, 0xc000},       {0.5f, 0x3800},           {65504.0f, 0x7bff},
      {0.1f, 0x2e66},        {3.14159265f, 0x4248},    {std::ldexp(1.0f, -24), 0x0001},
      {std::ldexp(1.0f, -14), 0x0400},                 {std::ldexp(1023.0f, -24), 0x03ff},
      {65519.0f, 0x7bff},    {65520.0f, 0x7c00},       {1e6f, 0x7c00},
      {-1e6f, 0xfc00},       {INFINITY, 0x7c00},       {-INFINITY, 0xfc00},
      {std::ldexp(1.0f, -25), 0x0000},                 // halfway to the smallest subnormal: even
      {std::ldexp(1.5f, -25), 0x0001},                 // above halfway rounds up
      {std::ldexp(3.0f, -25), 0x0002},                 // 1.5 ulp: tie to even (2)
      {std::ldexp(5.0f, -25), 0x0002},                 // 2.5 ulp: tie to even (2)
      {1.0f + std::ldexp(1.0f, -11), 0x3c00},          // tie between 1 and 1+2^-10: even
      {1.0f + std::ldexp(3.0f, -11), 0x3c02},          // tie, rounds up to even
      {std::ldexp(1.0f, -14) - std::ldexp(1.0f, -25), 0x0400},  // rounds up into the normals
      {1e-8f, 0x0000},
  };
  for (const Case& c : cases) {
    CAPTURE(c.f);
    CHECK(f32_to_f16(c.f) == c.h);
  }
  CHECK((f32_to_f16(NAN) & 0x7c00) == 0x7c00);
  CHECK((f32_to_f16(NAN) & 0x03ff) != 0);
  // Every finite f16 converts to f32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
      CHECK(std::isnan(f16_to_f32(uint16_t(h))));
      continue;
    }
    if (f32_to_f16(f16_to_f32(uint16_t(h))) != h) FAIL_CHECK("f16 ", h, " does not round-trip");
  }
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(f16_to_f32(0x2e66) == 0.0999755859375f);
  CHECK(std::isinf(f16_to_f32(0x7c00)));
}

TEST_CASE("half: f32 <-> bf16 matches IEEE bit patterns with round-to-nearest-even") {
  auto bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(-2.0f) == 0xc000);
  CHECK(f32_to_bf16(0.0f) == 0x0000);
  CHECK(f32_to_bf16(-0.0f) == 0x8000);
  CHECK(f32_to_bf16(3.14159265f) == 0x4049);
  CHECK(f32_to_bf16(bits(0x3f808000)) == 0x3f80);  // tie, even stays down
  CHECK(f32_to_bf16(bits(0x3f818000)) == 0x3f82);  // tie, odd rounds up to even
  CHECK(f32_to_bf16(bits(0x3f808001)) == 0x3f81);  // above half rounds up
  CHECK(f32_to_bf16(bits(0x3f807fff)) == 0x3f80);  // below half rounds down
  CHECK(f32_to_bf16(bits(0x7f7fffff)) == 0x7f80);  // FLT_MAX rounds to infinity
  CHECK(f32_to_bf16(INFINITY) == 0x7f80);
  CHECK(f32_to_bf16(-INFINITY) == 0xff80);
  CHECK(f32_to_bf16(bits(0x00000001)) == 0x0000);  // smallest f32 subnormal
  CHECK(f32_to_bf16(bits(0x00018000)) == 0x0002);  // subnormal tie to even
  const uint16_t nan = f32_to_bf16(bits(0x7f800001));  // NaN whose payload lies in the low bits
  CHECK((nan & 0x7f80) == 0x7f80);
  CHECK((nan & 0x007f) != 0);
  CHECK(bf16_to_f32(0x3f80) == 1.0f);
  CHECK(bf16_to_f32(0xc049) == -3.140625f);
  for (uint32_t h = 0; h < 0x10000; h++) {
    const float f = bf16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    if (f32_to_bf16(f) != h) FAIL_CHECK("bf16 ", h, " does not round-trip");
  }
}
