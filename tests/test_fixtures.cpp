// End-to-end check against transformers: every checkpoint in tests/fixtures/models is
// converted with mamba-convert and run with mamba-cli on the CPU. The logits of every prompt
// position must be within rel-L2 1e-5 of transformers' float64 logits, and the greedy ids
// (which transformers produced through its recurrent decode path) must be identical.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace fs = std::filesystem;
using namespace mamba::test;
using nlohmann::json;

namespace {

const fs::path kFixtures = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/models";
const fs::path kBin = MAMBA_BIN_DIR;
const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "fixtures";

template <typename T>
std::vector<T> read_raw(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  const auto size = fs::file_size(path);
  REQUIRE(size % sizeof(T) == 0);
  std::vector<T> v(size / sizeof(T));
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(size));
  return v;
}

std::string join(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); i++) s += (i ? "," : "") + std::to_string(ids[i]);
  return s;
}

// rel-L2 of one row: ||ours - ref|| / ||ref||
double rel_l2(const float* ours, const double* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = double(ours[i]) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

struct Result {
  double worst_rel_l2 = 0;
  std::vector<int> greedy;
};

Result convert_and_run(const fs::path& dir, const json& ref, const std::string& outtype) {
  const std::string name = dir.filename().string();
  fs::create_directories(kTmp);
  const fs::path gguf = kTmp / (name + (outtype.empty() ? "" : "-" + outtype) + ".gguf");
  const fs::path logits_path = kTmp / (name + ".logits.f32");
  std::string cmd = (kBin / "mamba-convert").string() + " " + (dir / "hf").string() + " -o " +
                    gguf.string() + (outtype.empty() ? "" : " --outtype " + outtype) +
                    " 2>&1";
  std::string out;
  INFO(cmd);
  REQUIRE(run(cmd, &out) == 0);

  const std::vector<int> prompt = ref["prompt_ids"].get<std::vector<int>>();
  const std::vector<int> greedy_ref = ref["greedy_ids"].get<std::vector<int>>();
  cmd = (kBin / "mamba-cli").string() + " -m " + gguf.string() + " --prompt-ids " +
        join(prompt) + " -n " + std::to_string(greedy_ref.size()) +
        " --temp 0 --json --ignore-eos -t 2 --logits-out " + logits_path.string();
  INFO(cmd);
  REQUIRE(run(cmd, &out) == 0);
  const json j = json::parse(out);

  const size_t n_vocab = ref["n_vocab"].get<size_t>();
  const auto ours = read_raw<float>(logits_path);
  const auto want = read_raw<double>(dir / "logits.f64");
  REQUIRE(want.size() == prompt.size() * n_vocab);
  REQUIRE(ours.size() == want.size());
  Result r;
  for (size_t t = 0; t < prompt.size(); t++)
    r.worst_rel_l2 = std::max(r.worst_rel_l2, rel_l2(&ours[t * n_vocab], &want[t * n_vocab], n_vocab));
  r.greedy = j["ids"].get<std::vector<int>>();
  return r;
}

std::vector<fs::path> fixture_dirs() {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(kFixtures))
    if (fs::exists(e.path() / "ref.json")) dirs.push_back(e.path());
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

json load_ref(const fs::path& dir) {
  std::ifstream f(dir / "ref.json");
  return json::parse(f);
}

}  // namespace

TEST_CASE("fixtures: logits within rel-L2 1e-5 of transformers float64, greedy ids identical") {
  const auto dirs = fixture_dirs();
  REQUIRE(dirs.size() >= 9);
  for (const auto& dir : dirs) {
    const json ref = load_ref(dir);
    INFO("fixture ", dir.filename().string());
    const Result r = convert_and_run(dir, ref, "");
    MESSAGE(dir.filename().string(), ": worst rel-L2 ", r.worst_rel_l2);
    CHECK(r.worst_rel_l2 < 1e-5);
    CHECK(r.greedy == ref["greedy_ids"].get<std::vector<int>>());
  }
}

TEST_CASE("fixtures: converting f16/bf16 checkpoints to f32 is exact") {
  // Widening is lossless, so the f32 file must reproduce the reference just as well.
  for (const char* name : {"mamba1_bias_untied_f16", "mamba2_g2_bias_bf16"}) {
    const fs::path dir = kFixtures / name;
    const json ref = load_ref(dir);
    INFO("fixture ", name);
    const Result r = convert_and_run(dir, ref, "f32");
    CHECK(r.worst_rel_l2 < 1e-5);
    CHECK(r.greedy == ref["greedy_ids"].get<std::vector<int>>());
  }
}
