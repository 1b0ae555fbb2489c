// Saved sequence states: mamba-cli's --prompt-cache, --state-save and --state-load files.
//
// A recurrent model's whole context is its fixed-size state, so saving a sequence is saving
// that state, plus what is needed to go on from it without re-running anything: the token ids
// it covers (to check that a new prompt extends them, and for the sampler's penalty history)
// and the logits after its last token (to pick the next token at once).
//
// File layout, version 1, every integer little-endian:
//
//   offset  size            field
//   0       8               magic "MAMBASTA"
//   8       4               u32 version (1)
//   12      4               u32 flags: bit 0 = the logits are present
//   16      8               u64 model identity (model_identity(), below)
//   24      8               u64 n_vocab: floats in the logits
//   32      8               u64 state_bytes: bytes of backend state
//   40      8               u64 n_ids: token ids the state covers
//   48      4 * n_ids       i32 ids, in the order they were fed
//   ...     4 * n_vocab     f32 logits after the last id (only with flag bit 0)
//   ...     state_bytes     the backend's slot state (Backend::save_slot: f32 conv, then ssm)
//   end-8   8               u64 checksum: hash64 of every byte before it
//
// The files are untrusted input: read_state_file checks the magic, the version, every count
// against the bytes actually present (the total size must match exactly), the ids' range and
// the checksum before anything is used, and throws mamba::Error with one line on any problem.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mamba {

class Model;

struct SavedState {
  uint64_t model_id = 0;           // model_identity() of the model that computed the state
  int64_t n_vocab = 0;             // the model's n_vocab (the logits' length)
  std::vector<int32_t> ids;        // (n_ids) every id fed into the state, oldest first
  std::vector<float> logits;       // (n_vocab) logits after the last id; empty when unknown
  std::vector<uint8_t> state;      // (state_bytes) Backend::save_slot's bytes
};

// A cheap fingerprint of a model, so that a state is never continued with other weights: a
// 64-bit hash of the file size, the hyper-parameters, every tensor's name, dtype and shape, and
// the first and last 4 KiB of every tensor's data. It reads a few pages per tensor, never the
// whole file, and changes when any of those differ (a retrained or reconverted model of the
// same shape differs in the sampled bytes).
uint64_t model_identity(const Model& model);

// Writes `s` to `path` atomically (a temporary file beside it, then rename). Throws
// mamba::Error when the file cannot be written.
void write_state_file(const std::string& path, const SavedState& s);

// What the reader expects of a file.
struct StateFileExpect {
  uint64_t model_id = 0;     // must match (0: not checked, for tools that only inspect)
  int64_t n_vocab = 0;       // must match when > 0
  uint64_t state_bytes = 0;  // must match when > 0
};

// Reads and checks a state file. Throws mamba::Error naming the problem (cannot open, not a
// state file, unsupported version, truncated, checksum mismatch, another model, ...).
SavedState read_state_file(const std::string& path, const StateFileExpect& want);
// The same checks on bytes in memory (`where` names them in messages).
SavedState parse_state_file(std::span<const uint8_t> bytes, const StateFileExpect& want,
                            const std::string& where);
// The file's bytes for `s` (what write_state_file writes).
std::vector<uint8_t> serialize_state_file(const SavedState& s);

// The hash used for the checksum and the model identity: 64-bit, 8 bytes a step.
uint64_t hash64(const void* data, size_t n, uint64_t seed);

}  // namespace mamba
