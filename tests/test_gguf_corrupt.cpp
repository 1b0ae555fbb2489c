// The GGUF reader fed broken files: truncation at every byte, bad magic and versions, huge
// counts, bad metadata, alignment and tensor infos, random mutations. Each must fail with
// mamba::Error naming the problem (or parse), never crash, over-read or allocate without
// limit; parse_prefix copies the bytes to a heap block of exactly their size so that
// AddressSanitizer sees any read past the end.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gguf_test_files.h"

using namespace mamba;
using namespace mamba::gguf_test;

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
