// GGUF writer: metadata is kept in memory, tensor bytes are produced one tensor at a time
// while writing, so peak memory is one tensor rather than the whole model.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>

#include "common/error.h"
#include "gguf/gguf.h"

namespace mamba::gguf {

namespace {

// strerror returns a mutable char*, which fail() would not treat as text.
const char* errstr(int e) { return std::strerror(e); }

// llama.cpp keeps tensor names in a 64-byte buffer with a terminating NUL, so a longer name
// would make the file unloadable there. The reader here is more lenient.
constexpr size_t kMaxTensorName = 63;

bool is_pow2(uint64_t a) { return a != 0 && (a & (a - 1)) == 0; }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

// Checks that a Value can be written and read back as it is: integer members within the
// range of their type, arrays holding items of their element type, bytes only for UINT8/INT8.
void check_value(const std::string& key, const Value& v, int depth) {
  auto bad = [&](const auto&... why) { fail("metadata key '", key, "': ", why...); };
  switch (v.type) {
    case Type::UINT8: if (v.u > 0xff) bad("UINT8 value ", v.u, " out of range"); break;
    case Type::UINT16: if (v.u > 0xffff) bad("UINT16 value ", v.u, " out of range"); break;
    case Type::UINT32: if (v.u > 0xffffffffu) bad("UINT32 value ", v.u, " out of range"); break;
    case Type::INT8: if (v.i < -128 || v.i > 127) bad("INT8 value ", v.i, " out of range"); break;
    case Type::INT16:
      if (v.i < -32768 || v.i > 32767) bad("INT16 value ", v.i, " out of range");
      break;
    case Type::INT32:
      if (v.i < std::numeric_limits<int32_t>::min() || v.i > std::numeric_limits<int32_t>::max())
        bad("INT32 value ", v.i, " out of range");
      break;
    case Type::BOOL: if (v.u > 1) bad("BOOL value ", v.u, " is not 0 or 1"); break;
    case Type::UINT64: case Type::INT64: case Type::FLOAT32: case Type::FLOAT64:
    case Type::STRING:
      break;
    case Type::ARRAY: {
      if (depth + 1 > kMaxArrayDepth) bad("arrays nested more than ", kMaxArrayDepth, " deep");
      if (uint32_t(v.elem) > uint32_t(Type::FLOAT64)) bad("unknown array element type ", uint32_t(v.elem));
      const bool byte_array = v.elem == Type::UINT8 || v.elem == Type::INT8;
      if (byte_array && !v.arr.empty()) bad("UINT8/INT8 arrays keep their items in Value::bytes");
      if (!byte_array && !v.bytes.empty()) bad("Value::bytes is only for UINT8/INT8 arrays");
      for (const Value& item : v.arr) {
        if (item.type != v.elem)
          bad("array of ", type_name(v.elem), " holds an item of type ", type_name(item.type));
        check_value(key, item, depth + 1);
      }
      break;
    }
    default:
      bad("unknown type ", uint32_t(v.type));
  }
}

// Little-endian serialisation into the in-memory header.
struct Out {
  std::string b;
  template <typename T>
  void put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
  }
  void value(const Value& v) {
    switch (v.type) {
      case Type::UINT8: put<uint8_t>(uint8_t(v.u)); break;
      case Type::INT8: put<int8_t>(int8_t(v.i)); break;
      case Type::UINT16: put<uint16_t>(uint16_t(v.u)); break;
      case Type::INT16: put<int16_t>(int16_t(v.i)); break;
      case Type::UINT32: put<uint32_t>(uint32_t(v.u)); break;
      case Type::INT32: put<int32_t>(int32_t(v.i)); break;
      case Type::UINT64: put<uint64_t>(v.u); break;
      case Type::INT64: put<int64_t>(v.i); break;
      case Type::FLOAT32: put<float>(float(v.f)); break;
      case Type::FLOAT64: put<double>(v.f); break;
      case Type::BOOL: put<uint8_t>(v.u ? 1 : 0); break;
      case Type::STRING: str(v.s); break;
      case Type::ARRAY:
        put<uint32_t>(uint32_t(v.elem));
        if (v.elem == Type::UINT8 || v.elem == Type::INT8) {
          put<uint64_t>(v.bytes.size());
          b += v.bytes;
        } else {
          put<uint64_t>(v.arr.size());
          for (const Value& item : v.arr) value(item);
        }
        break;
    }
  }
};

// The temporary output file: removed unless commit() renamed it into place.
class TempFile {
 public:
  TempFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail(path_, ": cannot create ", tmp_, ": ", errstr(errno));
  }
  ~TempFile() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(tmp_.c_str());
  }

  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) fail(path_, ": write failed: ", errstr(errno));
  }

  void commit() {
    // Buffered data reaches the disk at fflush/fclose, so "disk full" often shows up here.
    const bool flush_ok = std::fflush(f_) == 0;
    const int e = errno;
    FILE* f = f_;
    f_ = nullptr;
    const bool close_ok = std::fclose(f) == 0;
    if (!flush_ok || !close_ok)
      fail(path_, ": write failed: ", errstr(flush_ok ? errno : e));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(path_, ": cannot rename ", tmp_, " into place: ", errstr(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  FILE* f_ = nullptr;
  bool committed_ = false;
};

}  // namespace

Writer::Writer(uint64_t alignment) : alignment_(alignment) {
  if (!is_pow2(alignment) || alignment > 0xffffffffu)
    fail("GGUF alignment ", alignment, " is not a power of two that fits in 32 bits");
}

void Writer::set_value(const std::string& key, const Value& v) {
  if (!is_valid_name(key)) fail("metadata key '", key, "' is empty or not valid UTF-8 text");
  check_value(key, v, 0);
  if (key == "general.alignment") {
    // The writer owns this key: it decides where tensor data goes, so setting it (e.g. while
    // copying another file's metadata) changes the alignment instead of adding a stale entry.
    if (v.type != Type::UINT32 || !is_pow2(v.u))
      fail("general.alignment must be a UINT32 power of two, got ", describe_type(v));
    alignment_ = v.u;
    return;
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = v;
      return;
    }
  }
  kv_.emplace_back(key, v);
}

namespace {
Value scalar_u(Type t, uint64_t u) { Value v; v.type = t; v.u = u; return v; }
Value scalar_i(Type t, int64_t i) { Value v; v.type = t; v.i = i; return v; }
Value scalar_f(Type t, double f) { Value v; v.type = t; v.f = f; return v; }
Value array_of(Type elem) { Value v; v.type = Type::ARRAY; v.elem = elem; return v; }
}  // namespace

void Writer::set_u8(const std::string& key, uint8_t v) { set_value(key, scalar_u(Type::UINT8, v)); }
void Writer::set_u32(const std::string& key, uint32_t v) { set_value(key, scalar_u(Type::UINT32, v)); }
void Writer::set_i32(const std::string& key, int32_t v) { set_value(key, scalar_i(Type::INT32, v)); }
void Writer::set_u64(const std::string& key, uint64_t v) { set_value(key, scalar_u(Type::UINT64, v)); }
void Writer::set_f32(const std::string& key, float v) { set_value(key, scalar_f(Type::FLOAT32, v)); }
void Writer::set_f64(const std::string& key, double v) { set_value(key, scalar_f(Type::FLOAT64, v)); }
void Writer::set_bool(const std::string& key, bool v) { set_value(key, scalar_u(Type::BOOL, v ? 1 : 0)); }

void Writer::set_str(const std::string& key, const std::string& s) {
  Value v;
  v.type = Type::STRING;
  v.s = s;
  set_value(key, v);
}

void Writer::set_str_array(const std::string& key, const std::vector<std::string>& items) {
  Value v = array_of(Type::STRING);
  v.arr.resize(items.size());
  for (size_t k = 0; k < items.size(); k++) {
    v.arr[k].type = Type::STRING;
    v.arr[k].s = items[k];
  }
  set_value(key, v);
}

void Writer::set_i32_array(const std::string& key, const std::vector<int32_t>& items) {
  Value v = array_of(Type::INT32);
  v.arr.reserve(items.size());
  for (int32_t x : items) v.arr.push_back(scalar_i(Type::INT32, x));
  set_value(key, v);
}

void Writer::set_f32_array(const std::string& key, const std::vector<float>& items) {
  Value v = array_of(Type::FLOAT32);
  v.arr.reserve(items.size());
  for (float x : items) v.arr.push_back(scalar_f(Type::FLOAT32, x));
  set_value(key, v);
}

void Writer::set_bytes(const std::string& key, const std::string& bytes) {
  Value v = array_of(Type::UINT8);
  v.bytes = bytes;
  set_value(key, v);
}

void Writer::add_tensor(const std::string& name, DType dtype, std::vector<uint64_t> ne,
                        Producer produce) {
  if (!is_valid_name(name)) fail("tensor name '", name, "' is empty or not valid UTF-8 text");
  if (name.size() > kMaxTensorName)
    fail("tensor name '", name, "' is ", name.size(), " bytes long; GGUF readers allow at most ",
         kMaxTensorName);
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    fail("tensor '", name, "' has unsupported type ", uint32_t(dtype));
  if (ne.empty() || ne.size() > kMaxDims)
    fail("tensor '", name, "' has ", ne.size(), " dimensions (must be 1 to ", kMaxDims, ")");
  uint64_t n = 1;
  for (size_t d = 0; d < ne.size(); d++) {
    if (ne[d] == 0) fail("tensor '", name, "' has a zero-sized dimension (ne[", d, "] = 0)");
    if (mul_overflows(n, ne[d], &n)) fail("tensor '", name, "' has too many elements");
  }
  uint64_t n_bytes;
  if (mul_overflows(n, dtype_size(dtype), &n_bytes) || n_bytes > (uint64_t(1) << 62))
    fail("tensor '", name, "' is too large");
  for (const PendingTensor& t : tensors_)
    if (t.name == name) fail("duplicate tensor name '", name, "'");
  if (!produce) fail("tensor '", name, "' has no data producer");
  tensors_.push_back({name, dtype, std::move(ne), std::move(produce), n_bytes});
}

void Writer::write(const std::string& path,
                   const std::function<void(uint64_t, uint64_t)>& progress) const {
  // ---- header, metadata and tensor infos, built in memory
  Out h;
  h.b.append("GGUF", 4);
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  const bool write_alignment = alignment_ != kDefaultAlignment;
  h.put<uint64_t>(kv_.size() + (write_alignment ? 1 : 0));
  if (write_alignment) {
    h.str("general.alignment");
    h.put<uint32_t>(uint32_t(Type::UINT32));
    h.put<uint32_t>(uint32_t(alignment_));
  }
  for (const auto& [key, v] : kv_) {
    h.str(key);
    h.put<uint32_t>(uint32_t(v.type));
    h.value(v);
  }
  uint64_t offset = 0, total = 0;
  for (const PendingTensor& t : tensors_) {
    h.str(t.name);
    h.put<uint32_t>(uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) h.put<uint64_t>(d);
    h.put<uint32_t>(uint32_t(t.dtype));
    h.put<uint64_t>(offset);
    offset = align_up(offset + t.n_bytes, alignment_);
    total += t.n_bytes;
  }
  h.b.resize(align_up(h.b.size(), alignment_), '\0');

  // ---- the file: header, then each tensor padded to the alignment
  TempFile out(path);
  out.write(h.b.data(), h.b.size());
  std::vector<uint8_t> buf;
  static const uint8_t zeros[256] = {};
  uint64_t done = 0;
  for (const PendingTensor& t : tensors_) {
    buf.assign(size_t(t.n_bytes), 0);  // zeroed, so a short producer cannot leak old bytes
    t.produce(buf.data(), buf.size());
    out.write(buf.data(), buf.size());
    for (uint64_t pad = align_up(t.n_bytes, alignment_) - t.n_bytes; pad > 0;) {
      const size_t n = size_t(std::min<uint64_t>(pad, sizeof(zeros)));
      out.write(zeros, n);
      pad -= n;
    }
    done += t.n_bytes;
    if (progress) progress(done, total);
  }
  out.commit();
}

}  // namespace mamba::gguf
