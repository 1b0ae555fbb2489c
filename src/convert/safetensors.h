// safetensors: a memory-mapped, bounds-checked reader (and a small writer for tests).
//
// File layout: u64 little-endian N | N bytes of JSON header | data.
//   header = { "<tensor name>": { "dtype": "F32", "shape": [rows, cols],
//                                 "data_offsets": [begin, end] },   // relative to data start
//              "__metadata__": { "<key>": "<string>" } }            // optional
// Shapes are in PyTorch order (slowest dimension first), data is row-major little-endian.
//
// Checkpoints are untrusted input: the header length, the JSON, every dtype, shape product
// and offset pair are checked (no overflow, inside the file, exactly the tensor's size, no
// two tensors sharing bytes) before anything points into the data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mamba::safetensors {

// clang-format off
enum class DType {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
};
// clang-format on
const char* dtype_name(DType t);  // the header spelling, e.g. "BF16"
size_t dtype_size(DType t);       // bytes per element
// F64, F32, F16 and BF16 are the ones the converter can read as numbers.
bool is_float(DType t);

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;  // PyTorch order, slowest first; {} is a scalar
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // NOT aligned; valid while the File lives
};

class File {
 public:
  // Maps and validates the whole file. Throws mamba::Error naming the file and the problem.
  static std::unique_ptr<File> open(const std::string& path);
  // Parses a caller-owned buffer (tests, fuzzing); `data` must outlive the File.
  static std::unique_ptr<File> from_memory(const uint8_t* data, size_t size,
                                           const std::string& name = "<memory>");
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }  // in data-offset order
  const Tensor* find(const std::string& name) const;               // nullptr when absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  File() = default;
  void parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Converts n elements of a float tensor's raw data (F64/F32/F16/BF16) to float32.
// F64 rounds to nearest; the 16-bit formats widen exactly.
void to_f32(DType src, const uint8_t* src_data, uint64_t n, float* out);
// The same to double (exact for every source type), for math done in double precision.
void to_f64(DType src, const uint8_t* src_data, uint64_t n, double* out);

// Writes a safetensors file with the tensors in the given order. Used by tests to build
// checkpoints; `bytes` must hold exactly the tensor's n_elements * dtype_size bytes.
struct TensorBytes {
  std::string name;
  DType dtype = DType::F32;
  std::vector<uint64_t> shape;
  std::string bytes;
};
void write_file(const std::string& path, const std::vector<TensorBytes>& tensors,
                const std::map<std::string, std::string>& metadata = {});

}  // namespace mamba::safetensors
