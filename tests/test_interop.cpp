// GGUF files written by llama.cpp's converter carry the same tensors and keys as ours minus a
// few extension keys (vocab_size, chunk_size, the Falcon mixer epsilon, the embedded
// tokenizer files). Such a file must load and compute the same logits.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "gguf/gguf.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace mamba;

namespace {

const fs::path kFixtures = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/models";
const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "interop";

fs::path convert(const std::string& name) {
  fs::create_directories(kTmp);
  const fs::path out = kTmp / (name + ".gguf");
  const std::string cmd = std::string(MAMBA_BIN_DIR) + "/mamba-convert " +
                          (kFixtures / name / "hf").string() + " -o " + out.string() +
                          " > /dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  return out;
}

// Rewrites `in` the way llama.cpp's converter would have written it: without our extension
// keys. Tensors are copied byte for byte.
fs::path strip_extensions(const fs::path& in) {
  static const std::set<std::string> ours = {
      "mamba.vocab_size", "mamba2.vocab_size", "mamba2.ssm.chunk_size",
      "mamba.ssm.dt_b_c_rms_epsilon", "tokenizer.huggingface.json",
      "tokenizer.sentencepiece.model"};
  auto f = gguf::File::open(in.string());
  gguf::Writer w;
  for (const auto& [key, value] : f->metadata())
    if (!ours.count(key)) w.set_value(key, value);
  for (const auto& t : f->tensors()) {
    const gguf::TensorInfo* ti = &t;
    w.add_tensor(t.name, t.dtype, t.ne,
                 [ti](uint8_t* out, size_t n) { std::memcpy(out, ti->data, n); });
  }
  const fs::path out = kTmp / (in.stem().string() + ".llamacpp.gguf");
  w.write(out.string());
  return out;
}

std::vector<float> all_logits(const fs::path& path, const std::vector<int32_t>& ids) {
  auto model = Model::load(path.string());
  BackendOptions opts;
  opts.n_threads = 2;
  auto be = make_backend(*model, opts);
  std::vector<float> logits;
  be->prefill(0, ids, true, logits);
  return logits;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); i++) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("interop: a file without our extension keys loads and computes the same logits") {
  for (const char* name : {"mamba1_bias_untied_f16", "falcon_mamba_bf16", "mamba2_g4_f16",
                           "ss_mamba2", "mamba1_neox_f16"}) {
    INFO("fixture ", name);
    const fs::path ours = convert(name);
    const fs::path theirs = strip_extensions(ours);
    auto f = gguf::File::open(theirs.string());
    CHECK_FALSE(f->has("tokenizer.huggingface.json"));
    CHECK_FALSE(f->has("mamba2.ssm.chunk_size"));

    std::ifstream rf(kFixtures / name / "ref.json");
    const auto ref = nlohmann::json::parse(rf);
    const auto ids = ref["prompt_ids"].get<std::vector<int32_t>>();
    const auto a = all_logits(ours, ids);
    const auto b = all_logits(theirs, ids);
    // Only the Mamba-2 chunk size differs (it reorders arithmetic, nothing more).
    CHECK(rel_l2(b, a) < 1e-6);
  }
}

TEST_CASE("interop: quantised tensor types are refused with a clear message") {
  const fs::path ours = convert("mamba1_tiny");
  auto f = gguf::File::open(ours.string());
  // Rewrite blk.0.ssm_in.weight's type field to Q8_0 (8) in a copy of the file: the header
  // stores the type right after the dims.
  std::ifstream in(ours, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string name = "blk.0.ssm_in.weight";
  const size_t at = bytes.find(name);
  REQUIRE(at != std::string::npos);
  const size_t type_at = at + name.size() + 4 + 8 * 2;  // n_dims (u32) + 2 dims (u64)
  const uint32_t q8_0 = 8;
  std::memcpy(&bytes[type_at], &q8_0, 4);
  const fs::path bad = kTmp / "q8.gguf";
  std::ofstream(bad, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  try {
    Model::load(bad.string());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("blk.0.ssm_in.weight") != std::string::npos);
  }
}
