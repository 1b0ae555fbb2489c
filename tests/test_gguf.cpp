// GGUF reader/writer: round trips of every metadata type and tensor dtype, the writer's
// checks and ordering, typed getters, and the half-precision conversions. The corruption
// suite is test_gguf_corrupt.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gguf_test_files.h"

using namespace mamba;
using namespace mamba::gguf_test;

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
