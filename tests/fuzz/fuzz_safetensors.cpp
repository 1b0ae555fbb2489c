// Fuzz target: a safetensors file's bytes (8-byte header length, JSON header, data), through
// the reader and the float conversions the converter applies to every tensor.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "convert/safetensors.h"

using namespace mamba;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<safetensors::File> f;
  try {
    f = safetensors::File::from_memory(data, size);
  } catch (const Error&) {
    return 0;
  }
  for (const safetensors::Tensor& t : f->tensors()) {
    if (f->find(t.name) != &t) __builtin_trap();  // the index must agree with the list
    if (t.data < data || t.data + t.n_bytes > data + size) __builtin_trap();
    if (!safetensors::is_float(t.dtype)) continue;
    // Convert the whole tensor (bounded so a large valid tensor does not dominate the run).
    const uint64_t n = std::min<uint64_t>(t.n_elements, 1 << 16);
    std::vector<float> f32(n);
    std::vector<double> f64(n);
    safetensors::to_f32(t.dtype, t.data, n, f32.data());
    safetensors::to_f64(t.dtype, t.data, n, f64.data());
  }
  return 0;
}
