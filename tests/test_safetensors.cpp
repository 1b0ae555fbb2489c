// The safetensors reader: round trips through the writer, and every way a header can lie.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/half.h"
#include "convert/safetensors.h"

using namespace mamba;
namespace st = mamba::safetensors;

namespace {

std::string tmp_dir(const std::string& name) {
  const std::string dir = std::string(MAMBA_TEST_TMP) + "/safetensors/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// u64 little-endian header length, header, data: a file as the format lays it out.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[size_t(i)] = char(uint64_t(header.size()) >> (8 * i));
  return out + header + data;
}

std::unique_ptr<st::File> parse(const std::string& buf) {
  return st::File::from_memory(reinterpret_cast<const uint8_t*>(buf.data()), buf.size(), "t.st");
}

// Parses `buf` expecting an error whose message contains `needle`.
void expect_error(const std::string& buf, const std::string& needle) {
  try {
    parse(buf);
    FAIL("no error; expected one mentioning '" << needle << "'");
  } catch (const Error& e) {
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    CHECK(std::string(e.what()).find('\n') == std::string::npos);
  }
}

}  // namespace

TEST_CASE("safetensors: written tensors read back with names, shapes, dtypes and values") {
  const std::string dir = tmp_dir("roundtrip");
  const std::vector<float> f32 = {1.5f, -2.25f, 3.0f, 0.1f, -0.0f, 65504.0f};
  const std::vector<double> f64 = {0.1, -1e300, 3.0};
  const std::vector<uint16_t> f16 = {f32_to_f16(1.0f), f32_to_f16(-0.5f), f32_to_f16(1e-7f),
                                     f32_to_f16(2.0f)};
  const std::vector<uint16_t> bf16 = {f32_to_bf16(3.140625f), f32_to_bf16(-1e30f)};
  const std::vector<int64_t> i64 = {7, -7};
  st::write_file(dir + "/m.safetensors",
                 {{"a.f32", st::DType::F32, {2, 3}, bytes_of(f32)},
                  {"b.f64", st::DType::F64, {3}, bytes_of(f64)},
                  {"c.f16", st::DType::F16, {2, 1, 2}, bytes_of(f16)},
                  {"d.bf16", st::DType::BF16, {2}, bytes_of(bf16)},
                  {"e.i64", st::DType::I64, {2}, bytes_of(i64)},
                  {"f.empty", st::DType::F32, {0, 4}, ""}},
                 {{"format", "pt"}});
  auto f = st::File::open(dir + "/m.safetensors");
  REQUIRE(f->tensors().size() == 6);
  CHECK(f->metadata().at("format") == "pt");

  const st::Tensor* a = f->find("a.f32");
  REQUIRE(a);
  CHECK(a->dtype == st::DType::F32);
  CHECK(a->shape == std::vector<uint64_t>{2, 3});
  CHECK(a->n_elements == 6);
  CHECK(a->n_bytes == 24);
  std::vector<float> out(6);
  st::to_f32(a->dtype, a->data, 6, out.data());
  CHECK(std::memcmp(out.data(), f32.data(), 24) == 0);

  const st::Tensor* b = f->find("b.f64");
  REQUIRE(b);
  std::vector<double> d(3);
  st::to_f64(b->dtype, b->data, 3, d.data());
  CHECK(d == f64);
  st::to_f32(b->dtype, b->data, 3, out.data());
  CHECK(out[0] == 0.1f);  // rounded to nearest
  CHECK(std::isinf(out[1]));

  const st::Tensor* c = f->find("c.f16");
  REQUIRE(c);
  CHECK(c->shape == std::vector<uint64_t>{2, 1, 2});
  st::to_f32(c->dtype, c->data, 4, out.data());
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == -0.5f);
  CHECK(out[2] == f16_to_f32(f32_to_f16(1e-7f)));  // subnormal survives
  CHECK(out[3] == 2.0f);

  const st::Tensor* bt = f->find("d.bf16");
  REQUIRE(bt);
  st::to_f32(bt->dtype, bt->data, 2, out.data());
  CHECK(out[0] == 3.140625f);
  CHECK(out[1] == bf16_to_f32(f32_to_bf16(-1e30f)));

  const st::Tensor* e = f->find("e.i64");
  REQUIRE(e);
  CHECK_FALSE(st::is_float(e->dtype));
  CHECK_THROWS_AS(st::to_f32(e->dtype, e->data, 2, out.data()), Error);

  const st::Tensor* empty = f->find("f.empty");
  REQUIRE(empty);
  CHECK(empty->n_elements == 0);
  CHECK(f->find("nope") == nullptr);
}

TEST_CASE("safetensors: a well-formed hand-made buffer parses; tensors come back in file order") {
  const std::string data(24, '\x01');
  const std::string header = R"({"z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("a":{"dtype":"BF16","shape":[4,2],"data_offsets":[8,24]}})";
  auto f = parse(raw_file(header + "   ", data));  // trailing spaces pad headers
  REQUIRE(f->tensors().size() == 2);
  CHECK(f->tensors()[0].name == "z");
  CHECK(f->tensors()[1].name == "a");
  CHECK(f->find("a")->data == f->find("z")->data + 8);
}

TEST_CASE("safetensors: malformed headers are rejected with a message naming the problem") {
  const std::string data(16, '\0');
  auto one = [&](const std::string& entry) { return raw_file("{\"w\":" + entry + "}", data); };

  expect_error("abc", "too small");
  {
    std::string buf = raw_file("{}", "");
    buf[0] = char(200);  // header length 200 in a 10-byte file
    expect_error(buf, "runs past the end of the file");
  }
  {
    std::string buf = raw_file("{}", "");
    for (int i = 0; i < 8; i++) buf[size_t(i)] = '\xff';  // u64 max
    expect_error(buf, "runs past the end of the file");
  }
  expect_error(raw_file("{\"w\": [", data), "not valid JSON");
  expect_error(raw_file("[1, 2]", data), "not a JSON object");
  expect_error(one(R"("x")"), "not a JSON object");
  expect_error(one(R"({"dtype":"Q4","shape":[4],"data_offsets":[0,4]})"), "unknown dtype 'Q4'");
  expect_error(one(R"({"shape":[4],"data_offsets":[0,16]})"), "dtype");
  expect_error(one(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"), "non-negative");
  expect_error(one(R"({"dtype":"F32","shape":[2.5],"data_offsets":[0,16]})"), "non-negative");
  expect_error(one(R"({"dtype":"F32","data_offsets":[0,16]})"), "shape");
  expect_error(one(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]})"),
               "overflows");
  expect_error(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]})"),
               "overflows");
  expect_error(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"), "data_offsets");
  expect_error(one(R"({"dtype":"F32","shape":[4],"data_offsets":[8,4]})"), "begin after");
  expect_error(one(R"({"dtype":"F32","shape":[8],"data_offsets":[0,32]})"),
               "runs past the end of the file");
  expect_error(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})"),
               "has 16 data bytes, but its shape and dtype need 12");
  expect_error(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        data),
               "overlap");
  expect_error(raw_file(R"({"__metadata__":[1]})", data), "__metadata__");
}

TEST_CASE("safetensors: files on disk: missing, directory, truncated") {
  const std::string dir = tmp_dir("files");
  CHECK_THROWS_WITH_AS(st::File::open(dir + "/missing.safetensors"),
                       doctest::Contains("cannot open"), Error);
  CHECK_THROWS_WITH_AS(st::File::open(dir), doctest::Contains("is a directory"), Error);

  const std::vector<float> v(64, 1.0f);
  const std::string path = dir + "/t.safetensors";
  st::write_file(path, {{"w", st::DType::F32, {8, 8}, bytes_of(v)}});
  CHECK_NOTHROW(st::File::open(path));
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 4);
  CHECK_THROWS_WITH_AS(st::File::open(path), doctest::Contains("runs past the end"), Error);
  std::filesystem::resize_file(path, 5);
  CHECK_THROWS_WITH_AS(st::File::open(path), doctest::Contains("too small"), Error);
}
