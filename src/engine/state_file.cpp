#include "engine/state_file.h"

#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "common/error.h"
#include "model/model.h"

namespace mamba {

static_assert(std::endian::native == std::endian::little,
              "state files are little-endian and written with memcpy");

namespace {

constexpr char kMagic[8] = {'M', 'A', 'M', 'B', 'A', 'S', 'T', 'A'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kFlagLogits = 1;
constexpr size_t kHeaderBytes = 48;  // magic, version, flags, model id, n_vocab, state, n_ids
constexpr size_t kChecksumBytes = 8;
constexpr uint64_t kChecksumSeed = 0x6d616d6261737461ull;  // "mambasta"

// A bounds-checked reader over the file's bytes: every take() says what it was reading, so a
// short file names the field it ended in.
struct Reader {
  std::span<const uint8_t> b;
  size_t at = 0;
  const std::string& where;

  const uint8_t* take(size_t n, const char* what) {
    if (n > b.size() - at)
      fail(where, ": truncated in ", what, " (", b.size(), " bytes; remove the file to start over)");
    const uint8_t* p = b.data() + at;
    at += n;
    return p;
  }
  template <typename T>
  T get(const char* what) {
    T v;
    std::memcpy(&v, take(sizeof v, what), sizeof v);
    return v;
  }
};

void put(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  const size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}
template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  put(out, &v, sizeof v);
}

}  // namespace

uint64_t hash64(const void* data, size_t n, uint64_t seed) {
  // A multiply-xorshift over 64-bit words (the MurmurHash2-64 mixing step): fast enough for
  // states of tens of megabytes, and any changed byte changes the result with overwhelming
  // probability. Not a cryptographic hash: it detects corruption, not tampering.
  constexpr uint64_t m = 0xc6a4a7935bd1e995ull;
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = seed ^ (n * m);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t k;
    std::memcpy(&k, p + i, 8);
    k *= m;
    k ^= k >> 47;
    k *= m;
    h ^= k;
    h *= m;
  }
  if (i < n) {
    uint64_t k = 0;
    std::memcpy(&k, p + i, n - i);
    h ^= k;
    h *= m;
  }
  h ^= h >> 47;
  h *= m;
  h ^= h >> 47;
  return h;
}

uint64_t model_identity(const Model& model) {
  const gguf::File& f = model.gguf();
  const ModelConfig& c = model.config();
  constexpr std::string_view kDomain = "mamba-engine model identity 1";
  uint64_t h = hash64(kDomain.data(), kDomain.size(), 0);
  const auto mix = [&h](const void* p, size_t n) { h = hash64(p, n, h); };
  const auto mix_int = [&mix](int64_t v) { mix(&v, sizeof v); };
  mix_int(int64_t(f.file_size()));
  for (int64_t v : {int64_t(c.arch), c.n_vocab, c.d_model, c.n_layer, c.d_inner, c.d_state,
                    c.d_conv, c.dt_rank, c.n_groups, c.n_heads, c.head_dim, int64_t(c.dt_b_c_rms)})
    mix_int(v);
  for (float v : {c.norm_eps, c.mixer_rms_eps, c.dt_min, c.dt_max}) mix(&v, sizeof v);
  constexpr uint64_t kSample = 4096;  // bytes hashed at each end of every tensor
  for (const gguf::TensorInfo& t : f.tensors()) {
    mix(t.name.data(), t.name.size());
    mix_int(int64_t(t.dtype));
    for (uint64_t d : t.ne) mix_int(int64_t(d));
    const uint64_t head = std::min(t.n_bytes, kSample);
    mix(t.data, head);
    if (t.n_bytes > head) {
      const uint64_t tail = std::min(t.n_bytes - head, kSample);
      mix(t.data + (t.n_bytes - tail), tail);
    }
  }
  return h;
}

std::vector<uint8_t> serialize_state_file(const SavedState& s) {
  if (!s.logits.empty() && int64_t(s.logits.size()) != s.n_vocab)
    fail("state file: ", s.logits.size(), " logits for n_vocab = ", s.n_vocab);
  std::vector<uint8_t> out;
  out.reserve(kHeaderBytes + 4 * (s.ids.size() + s.logits.size()) + s.state.size() +
              kChecksumBytes);
  put(out, kMagic, sizeof kMagic);
  put(out, kVersion);
  put(out, uint32_t(s.logits.empty() ? 0 : kFlagLogits));
  put(out, s.model_id);
  put(out, uint64_t(s.n_vocab));
  put(out, uint64_t(s.state.size()));
  put(out, uint64_t(s.ids.size()));
  put(out, s.ids.data(), 4 * s.ids.size());
  put(out, s.logits.data(), 4 * s.logits.size());
  put(out, s.state.data(), s.state.size());
  put(out, hash64(out.data(), out.size(), kChecksumSeed));
  return out;
}

void write_state_file(const std::string& path, const SavedState& s) {
  const std::vector<uint8_t> bytes = serialize_state_file(s);
  // Write beside the target and rename, so that a reader never sees half a file and an
  // interrupted write leaves the old file in place.
  // The process id keeps two runs that write the same file from sharing a temporary.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) fail("cannot write ", tmp, ": ", std::strerror(errno), "; check the directory");
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    f.flush();
    if (!f) fail("cannot write ", tmp, " (disk full?); check the directory");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail("cannot write ", path, ": ", ec.message());
  }
}

SavedState parse_state_file(std::span<const uint8_t> bytes, const StateFileExpect& want,
                            const std::string& where) {
  Reader r{bytes, 0, where};
  if (bytes.size() < sizeof kMagic || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0)
    fail(where, ": not a mamba-engine state file (bad magic)");
  r.take(sizeof kMagic, "the magic");
  const uint32_t version = r.get<uint32_t>("the version");
  if (version != kVersion)
    fail(where, ": state file version ", version, " is not supported (this build reads version ",
         kVersion, "); save it again");
  const uint32_t flags = r.get<uint32_t>("the flags");
  if (flags & ~kFlagLogits) fail(where, ": unknown flags ", flags, " in the header");
  SavedState s;
  s.model_id = r.get<uint64_t>("the model identity");
  const uint64_t n_vocab = r.get<uint64_t>("n_vocab");
  const uint64_t state_bytes = r.get<uint64_t>("state_bytes");
  const uint64_t n_ids = r.get<uint64_t>("n_ids");

  // The counts must account for the file's size exactly; computed with overflow checks, since
  // they are arbitrary 64-bit numbers from the file.
  constexpr uint64_t kMaxVocab = uint64_t(1) << 31;
  if (n_vocab == 0 || n_vocab >= kMaxVocab) fail(where, ": n_vocab = ", n_vocab, " is out of range");
  uint64_t need = kHeaderBytes, ids_bytes = 0, logit_bytes = 0;
  const bool has_logits = flags & kFlagLogits;
  if (mul_overflows(n_ids, 4, &ids_bytes) || add_overflows(need, ids_bytes, &need) ||
      (has_logits && (mul_overflows(n_vocab, 4, &logit_bytes) ||
                      add_overflows(need, logit_bytes, &need))) ||
      add_overflows(need, state_bytes, &need) || add_overflows(need, kChecksumBytes, &need))
    fail(where, ": the header's sizes overflow (a corrupt file)");
  if (need != bytes.size())
    fail(where, ": the header says ", need, " bytes but the file has ", bytes.size(),
         " (truncated or corrupt; remove it to start over)");

  // The checksum before anything else is believed.
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - kChecksumBytes, kChecksumBytes);
  if (hash64(bytes.data(), bytes.size() - kChecksumBytes, kChecksumSeed) != stored)
    fail(where, ": checksum mismatch (the file is corrupt; remove it to start over)");

  if (want.model_id && s.model_id != want.model_id)
    fail(where, ": saved with a different model (identity ", s.model_id, ", this model's is ",
         want.model_id, "); use the model that wrote it");
  if (want.n_vocab > 0 && n_vocab != uint64_t(want.n_vocab))
    fail(where, ": n_vocab = ", n_vocab, " but the model has ", want.n_vocab);
  if (want.state_bytes > 0 && state_bytes != want.state_bytes)
    fail(where, ": ", state_bytes, " bytes of state but the model's state is ", want.state_bytes,
         " bytes");
  s.n_vocab = int64_t(n_vocab);

  s.ids.resize(size_t(n_ids));
  std::memcpy(s.ids.data(), r.take(size_t(ids_bytes), "the ids"), size_t(ids_bytes));
  for (int32_t id : s.ids)
    if (id < 0 || uint64_t(id) >= n_vocab)
      fail(where, ": token id ", id, " is out of range (n_vocab = ", n_vocab, ")");
  if (has_logits) {
    s.logits.resize(size_t(n_vocab));
    std::memcpy(s.logits.data(), r.take(size_t(logit_bytes), "the logits"), size_t(logit_bytes));
  }
  const uint8_t* st = r.take(size_t(state_bytes), "the state");
  s.state.assign(st, st + state_bytes);
  return s;
}

SavedState read_state_file(const std::string& path, const StateFileExpect& want) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("cannot open state file ", path,
         std::filesystem::exists(path, ec) ? ": not a regular file" : ": no such file",
         "; check the path");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot open state file ", path, ": ", std::strerror(errno), "; check the path");
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string bytes = ss.str();
  return parse_state_file(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
      want, path);
}

}  // namespace mamba
