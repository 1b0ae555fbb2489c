// GGUF v3: a memory-mapped, bounds-checked reader and a streaming writer.
//
// This layer knows nothing about Mamba. File layout (all little-endian):
//   magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x (string key | u32 type | value)
//   n_tensors x (string name | u32 n_dims | u64 ne[n_dims] | u32 dtype | u64 offset)
//   padding to `general.alignment` (default 32)
//   tensor data; each tensor at data_start + offset, offset a multiple of the alignment.
// ne[0] is the fastest-varying dimension: a PyTorch tensor of shape (rows, cols) has
// ne = {cols, rows}.
//
// The reader treats the file as untrusted: every count, string length, array length,
// dimension product and offset is checked for overflow and against the file size before use.
// Any problem throws mamba::Error with one line naming what is wrong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mamba::gguf {

enum class Type : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* type_name(Type t);
size_t type_size(Type t);  // bytes of one scalar on disk; 0 for STRING and ARRAY

// Keys and tensor names must be non-empty, valid UTF-8, without control characters, and at
// most 65535 bytes: what the reader accepts and the writer enforces.
bool is_valid_name(const std::string& s);

// Format limits shared by the reader and the writer.
constexpr uint64_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;        // ggml tensors have at most 4 dimensions
constexpr int kMaxArrayDepth = 4;       // arrays nested deeper than this are rejected

// Tensor element types (ggml_type values). Only the unquantised ones are supported.
enum class DType : uint32_t { F32 = 0, F16 = 1, BF16 = 30 };
const char* dtype_name(DType t);
size_t dtype_size(DType t);  // bytes per element

// One metadata value. Scalars use the member matching `type`; arrays keep their element
// type in `elem` and their items in `arr` (nested arrays are allowed by the format).
struct Value {
  Type type = Type::UINT8;
  uint64_t u = 0;        // UINT8/16/32/64, BOOL (0/1)
  int64_t i = 0;         // INT8/16/32/64
  double f = 0;          // FLOAT32/64
  std::string s;         // STRING
  Type elem = Type::UINT8;  // ARRAY: element type
  std::vector<Value> arr;   // ARRAY items (not for UINT8/INT8 arrays, see `bytes`)
  std::string bytes;        // ARRAY of UINT8 or INT8: raw bytes (e.g. an embedded file)

  bool is_int() const;       // any integer type (not bool)
  bool is_float() const;     // FLOAT32 / FLOAT64
  size_t array_size() const; // number of items of an ARRAY
};
// "UINT32", "ARRAY of STRING", "ARRAY of ARRAY of INT32": for messages and inspectors.
std::string describe_type(const Value& v);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> ne;  // dims, ne[0] fastest
  uint64_t offset = 0;       // from the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // points into the mapping, valid while the File lives
};

class File {
 public:
  // Maps and validates the whole file. Throws mamba::Error naming the problem.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses from a caller-owned buffer (for tests and fuzzing); `data` must outlive the File.
  static std::unique_ptr<File> from_memory(const uint8_t* data, size_t size);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& path() const { return path_; }
  size_t file_size() const { return size_; }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters. The one-argument forms throw "missing metadata key 'k'" when absent, and
  // all throw "metadata key 'k' has type T, expected ..." on a type mismatch. Integer getters
  // accept any integer type and range-check the value.
  std::string get_str(const std::string& key) const;
  std::string get_str(const std::string& key, const std::string& def) const;
  int64_t get_int(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t def) const;
  double get_float(const std::string& key) const;  // accepts FLOAT32/64 (and integers)
  double get_float(const std::string& key, double def) const;
  bool get_bool(const std::string& key) const;
  bool get_bool(const std::string& key, bool def) const;
  std::vector<std::string> get_str_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(const std::string& name) const;  // nullptr when absent

 private:
  File() = default;
  void parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF file: metadata in insertion order, then tensors whose bytes are produced
// on demand at write() time, so a converter never holds a whole model in memory.
class Writer {
 public:
  explicit Writer(uint64_t alignment = 32);

  void set_u8(const std::string& key, uint8_t v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_f32(const std::string& key, float v);
  void set_f64(const std::string& key, double v);
  void set_bool(const std::string& key, bool v);
  void set_str(const std::string& key, const std::string& v);
  void set_str_array(const std::string& key, const std::vector<std::string>& v);
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void set_f32_array(const std::string& key, const std::vector<float>& v);
  void set_bytes(const std::string& key, const std::string& bytes);  // ARRAY of UINT8
  void set_value(const std::string& key, const Value& v);            // any value, for copying
  // A key set twice keeps its first position and takes the new value.

  // `produce` fills exactly n_elements * dtype_size bytes into `out`, which is already sized.
  using Producer = std::function<void(uint8_t* out, size_t n_bytes)>;
  void add_tensor(const std::string& name, DType dtype, std::vector<uint64_t> ne,
                  Producer produce);

  // Writes the file (to a temporary name, renamed on success so a failed write leaves no
  // partial file). `progress(done_bytes, total_bytes)` is called after each tensor.
  void write(const std::string& path,
             const std::function<void(uint64_t, uint64_t)>& progress = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    std::vector<uint64_t> ne;
    Producer produce;
    uint64_t n_bytes;
  };
  uint64_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace mamba::gguf
