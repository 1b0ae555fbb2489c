// State files (src/engine/state_file.h): the layout round-trips, every damaged file is refused
// with one line, the model identity tells models apart, and a restored state continues a
// sequence exactly as if it had never stopped.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common/error.h"
#include "engine/generate.h"
#include "engine/sampler.h"
#include "engine/state_file.h"
#include "model/model.h"
#include "model/random_model.h"
#include "test_util.h"

using namespace mamba;
namespace fs = std::filesystem;

namespace {

const fs::path kTmp = fs::path(MAMBA_TEST_TMP) / "state_file";

SavedState sample_state(bool logits) {
  SavedState s;
  s.model_id = 0x1234567890abcdefull;
  s.n_vocab = 7;
  s.ids = {3, 0, 6, 6, 1};
  if (logits) s.logits = {0.5f, -1.0f, 2.0f, 0.0f, -0.25f, 8.0f, 1e-3f};
  for (int i = 0; i < 40; i++) s.state.push_back(uint8_t(i * 37 + 5));
  return s;
}

StateFileExpect expect_of(const SavedState& s) {
  StateFileExpect e;
  e.model_id = s.model_id;
  e.n_vocab = s.n_vocab;
  e.state_bytes = s.state.size();
  return e;
}

SavedState parse(const std::vector<uint8_t>& b, const StateFileExpect& e) {
  return parse_state_file(b, e, "test.state");
}

// The message of the Error that parsing `b` throws ("" when it does not throw).
std::string error_of(const std::vector<uint8_t>& b, const StateFileExpect& e) {
  try {
    parse(b, e);
  } catch (const Error& err) {
    return err.what();
  }
  return "";
}

std::string write_model(const std::string& name, uint64_t seed) {
  RandomModelOptions o;
  o.d_model = 32;
  o.n_vocab = 101;
  o.seed = seed;
  return test::write_model_file(kTmp, name, o);
}

}  // namespace

TEST_CASE("state file: the bytes follow the documented layout and round-trip") {
  for (bool logits : {true, false}) {
    const SavedState s = sample_state(logits);
    const std::vector<uint8_t> b = serialize_state_file(s);
    const size_t want = 48 + 4 * s.ids.size() + (logits ? 4 * 7 : 0) + s.state.size() + 8;
    REQUIRE(b.size() == want);
    CHECK(std::memcmp(b.data(), "MAMBASTA", 8) == 0);
    uint32_t version, flags;
    uint64_t id, n_vocab, state_bytes, n_ids;
    std::memcpy(&version, &b[8], 4);
    std::memcpy(&flags, &b[12], 4);
    std::memcpy(&id, &b[16], 8);
    std::memcpy(&n_vocab, &b[24], 8);
    std::memcpy(&state_bytes, &b[32], 8);
    std::memcpy(&n_ids, &b[40], 8);
    CHECK(version == 1);
    CHECK(flags == (logits ? 1u : 0u));
    CHECK(id == s.model_id);
    CHECK(n_vocab == 7);
    CHECK(state_bytes == 40);
    CHECK(n_ids == 5);
    int32_t id2;
    std::memcpy(&id2, &b[48 + 8], 4);
    CHECK(id2 == 6);
    // The state's bytes sit just before the checksum.
    CHECK(std::memcmp(&b[b.size() - 8 - 40], s.state.data(), 40) == 0);

    const SavedState r = parse(b, expect_of(s));
    CHECK(r.model_id == s.model_id);
    CHECK(r.n_vocab == 7);
    CHECK(r.ids == s.ids);
    CHECK(r.logits == s.logits);
    CHECK(r.state == s.state);
  }
}

TEST_CASE("state file: every truncation and every changed byte is refused") {
  const SavedState s = sample_state(true);
  const std::vector<uint8_t> good = serialize_state_file(s);
  const StateFileExpect e = expect_of(s);
  for (size_t n = 0; n < good.size(); n++) {
    const std::vector<uint8_t> cut(good.begin(), good.begin() + std::ptrdiff_t(n));
    const std::string msg = error_of(cut, e);
    INFO("kept ", n, " bytes");
    CHECK(!msg.empty());
    CHECK(msg.find('\n') == std::string::npos);
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  CHECK(error_of(longer, e).find("the header says") != std::string::npos);
  for (size_t i = 0; i < good.size(); i++) {
    std::vector<uint8_t> bad = good;
    bad[i] ^= 0x10;
    INFO("byte ", i);
    CHECK(!error_of(bad, e).empty());
  }
  // A flipped state byte gets past every size check: only the checksum catches it.
  std::vector<uint8_t> flipped = good;
  flipped[good.size() - 9] ^= 1;
  CHECK(error_of(flipped, e).find("checksum mismatch") != std::string::npos);
}

TEST_CASE("state file: headers with absurd counts fail on the sizes, before any allocation") {
  const SavedState s = sample_state(false);
  std::vector<uint8_t> b = serialize_state_file(s);
  const StateFileExpect none;
  const auto set_u64 = [&](size_t at, uint64_t v) { std::memcpy(&b[at], &v, 8); };
  set_u64(40, ~uint64_t(0) / 2);  // n_ids: 4 * n_ids overflows
  CHECK(error_of(b, none).find("overflow") != std::string::npos);
  set_u64(40, uint64_t(1) << 40);  // fits in 64 bits, not in the file
  CHECK(error_of(b, none).find("the header says") != std::string::npos);
  b = serialize_state_file(s);
  set_u64(32, ~uint64_t(0) - 10);  // state_bytes
  CHECK(error_of(b, none).find("overflow") != std::string::npos);
  b = serialize_state_file(s);
  set_u64(24, 0);  // n_vocab
  CHECK(error_of(b, none).find("n_vocab = 0") != std::string::npos);
  b = serialize_state_file(s);
  b[8] = 2;  // version
  CHECK(error_of(b, none).find("version 2 is not supported") != std::string::npos);
  b = serialize_state_file(s);
  b[0] = 'X';
  CHECK(error_of(b, none).find("not a mamba-engine state file") != std::string::npos);
  CHECK(error_of({}, none).find("not a mamba-engine state file") != std::string::npos);
}

TEST_CASE("state file: another model, vocabulary or state size is refused") {
  const SavedState s = sample_state(true);
  const std::vector<uint8_t> b = serialize_state_file(s);
  StateFileExpect e = expect_of(s);
  e.model_id ^= 1;
  CHECK(error_of(b, e).find("saved with a different model") != std::string::npos);
  e = expect_of(s);
  e.n_vocab = 8;
  CHECK(error_of(b, e).find("n_vocab = 7 but the model has 8") != std::string::npos);
  e = expect_of(s);
  e.state_bytes = 41;
  CHECK(error_of(b, e).find("40 bytes of state") != std::string::npos);
  // Ids outside the vocabulary, with a valid checksum.
  SavedState bad = s;
  bad.ids.push_back(7);
  CHECK(error_of(serialize_state_file(bad), expect_of(s)).find("token id 7 is out of range") !=
        std::string::npos);
  bad.logits.resize(3);  // logits of the wrong length are not written
  CHECK_THROWS_AS(serialize_state_file(bad), Error);
}

TEST_CASE("state file: write and read through the file system") {
  fs::create_directories(kTmp);
  const std::string path = (kTmp / "s.state").string();
  const SavedState s = sample_state(true);
  write_state_file(path, s);
  for (const auto& e : fs::directory_iterator(kTmp))  // no temporary left behind
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  CHECK(read_state_file(path, expect_of(s)).state == s.state);
  CHECK_THROWS_WITH_AS(read_state_file((kTmp / "missing.state").string(), expect_of(s)),
                       doctest::Contains("no such file"), Error);
  CHECK_THROWS_WITH_AS(read_state_file(kTmp.string(), expect_of(s)),
                       doctest::Contains("not a regular file"), Error);
  CHECK_THROWS_AS(write_state_file((kTmp / "no-dir" / "x.state").string(), s), Error);
}

TEST_CASE("model identity: stable for one file, different for other weights") {
  const std::string a = write_model("a.gguf", 1), a2 = write_model("a2.gguf", 1),
                    b = write_model("b.gguf", 2);
  const uint64_t ia = model_identity(*Model::load(a));
  CHECK(ia != 0);
  CHECK(model_identity(*Model::load(a)) == ia);
  CHECK(model_identity(*Model::load(a2)) == ia);  // the same bytes under another name
  CHECK(model_identity(*Model::load(b)) != ia);   // same shape, other weights
}

TEST_CASE("a saved and restored state continues the sequence exactly") {
  const auto model = Model::load(write_model("a.gguf", 1));
  const int32_t V = int32_t(model->config().n_vocab);
  BackendOptions bo;
  bo.n_threads = 1;
  const auto be = make_backend(*model, bo);
  const std::vector<int32_t> prompt = {4, 8, 15, 16, 23, 42};

  // One run of 12 tokens.
  Sampler s1(SamplerParams{}, V);
  GenerateOptions go;
  go.n_predict = 12;
  const GenerateResult whole = generate(*be, 0, prompt, s1, go);

  // 5 tokens, save to a file, wipe the slot, load, 7 more.
  Sampler s2(SamplerParams{}, V);
  go.n_predict = 5;
  const GenerateResult first = generate(*be, 0, prompt, s2, go);
  SavedState st;
  st.model_id = model_identity(*model);
  st.n_vocab = V;
  st.ids = prompt;
  st.ids.insert(st.ids.end(), first.ids.begin(), first.ids.end());
  st.logits = first.last_logits;
  be->save_slot(0, st.state);
  CHECK(st.state.size() == be->state_bytes());
  const std::string path = (kTmp / "cont.state").string();
  write_state_file(path, st);
  be->reset_slot(0);

  StateFileExpect e;
  e.model_id = model_identity(*model);
  e.n_vocab = V;
  e.state_bytes = be->state_bytes();
  const SavedState back = read_state_file(path, e);
  be->load_slot(0, back.state);
  Sampler s3(SamplerParams{}, V);
  s3.accept(back.ids);
  go.n_predict = 7;
  go.continue_state = true;
  go.last_logits = back.logits;
  const GenerateResult rest = generate(*be, 0, {}, s3, go);
  std::vector<int32_t> joined = first.ids;
  joined.insert(joined.end(), rest.ids.begin(), rest.ids.end());
  CHECK(joined == whole.ids);
  CHECK(rest.last_logits == whole.last_logits);  // bit for bit
}

TEST_CASE("prefilling a prompt in two parts gives the same logits as in one (the prompt cache)") {
  // --prompt-cache prefills a prompt's remainder after a loaded state; on the CPU backend that
  // must be bit for bit a cold prefill, for both architectures.
  for (Arch arch : {Arch::Mamba1, Arch::Mamba2}) {
    RandomModelOptions o;
    o.arch = arch;
    o.d_model = 32;
    o.n_vocab = 101;
    o.chunk_size = 4;
    const std::string path = test::write_model_file(kTmp, "split.gguf", o);
    const auto model = Model::load(path);
    BackendOptions bo;
    bo.n_threads = 2;
    const auto be = make_backend(*model, bo);
    const std::vector<int32_t> ids = {1, 5, 9, 33, 2, 100, 0, 47, 8, 8, 13};
    std::vector<float> whole, part;
    be->reset_slot(0);
    be->prefill(0, ids, false, whole);
    for (size_t cut : {size_t(1), size_t(5), size_t(10)}) {
      be->reset_slot(0);
      const std::span<const int32_t> all(ids);
      be->prefill(0, all.first(cut), false, part);
      std::vector<uint8_t> saved;
      be->save_slot(0, saved);
      be->reset_slot(0);
      be->load_slot(0, saved);
      be->prefill(0, all.subspan(cut), false, part);
      INFO("arch ", int(arch), ", cut after ", cut);
      CHECK(part == whole);
    }
  }
}
