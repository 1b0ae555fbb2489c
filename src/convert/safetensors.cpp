#include "convert/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/half.h"

namespace mamba::safetensors {

namespace {

struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1},       {DType::U8, "U8", 1},           {DType::I8, "I8", 1},
    {DType::F8_E5M2, "F8_E5M2", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},         {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::I32, "I32", 4},         {DType::U32, "U32", 4},         {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},         {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
};

// The format's own limit on the header; a larger length is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& d : kDTypes) {
    if (s == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

// A JSON number that is a non-negative integer (nlohmann keeps those as unsigned).
bool as_u64(const nlohmann::json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  *out = j.get<uint64_t>();
  return true;
}

}  // namespace

const char* dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

bool is_float(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

std::unique_ptr<File> File::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path, ": ", std::string(std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail("cannot stat ", path, ": ", std::string(std::strerror(e)));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, " is a directory, expected a safetensors file");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, " is not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, ": too small to be a safetensors file (", size, " bytes)");
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED) fail("cannot map ", path, ": ", std::string(std::strerror(e)));

  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->base_ = static_cast<const uint8_t*>(p);
  f->size_ = size;
  f->mapped_ = true;
  f->parse();  // on throw, ~File unmaps
  return f;
}

std::unique_ptr<File> File::from_memory(const uint8_t* data, size_t size, const std::string& name) {
  std::unique_ptr<File> f(new File());
  f->path_ = name;
  f->base_ = data;
  f->size_ = size;
  f->parse();
  return f;
}

File::~File() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

const Tensor* File::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void File::parse() {
  const std::string& P = path_;
  if (size_ < 8) fail(P, ": too small to be a safetensors file (", size_, " bytes)");
  const uint64_t header_len = read_u64_le(base_);
  if (header_len > size_ - 8)
    fail(P, ": header length ", header_len, " runs past the end of the file (", size_, " bytes)");
  if (header_len > kMaxHeaderBytes)
    fail(P, ": header length ", header_len, " exceeds the format's 100 MiB limit");
  const uint8_t* data_start = base_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(base_ + 8, base_ + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(P, ": the header is not valid JSON (", e.what(), ")");
  }
  if (!header.is_object()) fail(P, ": the header is not a JSON object");

  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(P, ": __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m)
        metadata_[m.key()] =
            m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    auto bad = [&](const char* why) { fail(P, ": tensor '", name, "': ", why); };
    if (!v.is_object()) bad("entry is not a JSON object");

    Tensor t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) bad("missing or non-string dtype");
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      fail(P, ": tensor '", name, "' has unknown dtype '", dt->get<std::string>(), "'");

    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) bad("missing or non-array shape");
    if (sh->size() > 16) bad("has more than 16 dimensions");
    uint64_t n = 1;
    for (const auto& d : *sh) {
      uint64_t dim;
      if (!as_u64(d, &dim)) bad("shape has a value that is not a non-negative integer");
      if (mul_overflows(n, dim, &n)) bad("shape product overflows");
      t.shape.push_back(dim);
    }
    t.n_elements = n;
    if (mul_overflows(n, dtype_size(t.dtype), &t.n_bytes)) bad("byte size overflows");

    auto off = v.find("data_offsets");
    uint64_t begin, end;
    if (off == v.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], &begin) ||
        !as_u64((*off)[1], &end))
      bad("data_offsets must be two non-negative integers");
    if (begin > end) bad("data_offsets begin after they end");
    if (end > data_size)
      fail(P, ": tensor '", name, "' data [", begin, ", ", end, ") runs past the end of the file (",
           data_size, " data bytes)");
    if (end - begin != t.n_bytes)
      fail(P, ": tensor '", name, "' has ", end - begin,
           " data bytes, but its shape and dtype need ", t.n_bytes);
    t.data = data_start + begin;
    tensors_.push_back(std::move(t));
  }

  // Sort by position and reject tensors that share bytes (empty tensors share nothing).
  std::sort(tensors_.begin(), tensors_.end(),
            [](const Tensor& a, const Tensor& b) { return a.data < b.data; });
  const Tensor* prev = nullptr;
  for (const Tensor& t : tensors_) {
    if (t.n_bytes == 0) continue;
    if (prev && t.data < prev->data + prev->n_bytes)
      fail(P, ": tensors '", prev->name, "' and '", t.name, "' overlap in the file");
    prev = &t;
  }
  for (size_t i = 0; i < tensors_.size(); i++) index_[tensors_[i].name] = i;
}

// ---- element conversion ----------------------------------------------------------------

namespace {
template <typename Out>
void convert_floats(DType src, const uint8_t* p, uint64_t n, Out* out) {
  switch (src) {
    case DType::F32:
      for (uint64_t i = 0; i < n; i++) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        out[i] = Out(v);
      }
      return;
    case DType::F64:
      for (uint64_t i = 0; i < n; i++) {
        double v;
        std::memcpy(&v, p + 8 * i, 8);
        out[i] = Out(v);
      }
      return;
    case DType::F16:
      for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = Out(f16_to_f32(h));
      }
      return;
    case DType::BF16:
      for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = Out(bf16_to_f32(h));
      }
      return;
    default:
      fail("cannot read ", dtype_name(src), " data as floating point");
  }
}
}  // namespace

void to_f32(DType src, const uint8_t* src_data, uint64_t n, float* out) {
  convert_floats(src, src_data, n, out);
}

void to_f64(DType src, const uint8_t* src_data, uint64_t n, double* out) {
  convert_floats(src, src_data, n, out);
}

// ---- writer ----------------------------------------------------------------------------

void write_file(const std::string& path, const std::vector<TensorBytes>& tensors,
                const std::map<std::string, std::string>& metadata) {
  // nlohmann's ordered_json keeps the tensors in the order given.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    uint64_t n = 1;
    for (uint64_t d : t.shape) n *= d;
    if (t.bytes.size() != n * dtype_size(t.dtype))
      fail("write_file: tensor '", t.name, "' has ", t.bytes.size(), " bytes, expected ",
           n * dtype_size(t.dtype));
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');  // the format pads the header with spaces

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) fail("cannot create ", path, ": ", std::string(std::strerror(errno)));
  uint8_t len[8];
  for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f.get()) == 8 &&
            std::fwrite(text.data(), 1, text.size(), f.get()) == text.size();
  for (const auto& t : tensors)
    ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), f.get()) == t.bytes.size();
  if (!ok || std::fflush(f.get()) != 0) fail("cannot write ", path);
}

}  // namespace mamba::safetensors
