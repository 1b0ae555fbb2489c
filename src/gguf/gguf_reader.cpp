// GGUF reader: maps the file and validates every byte of the header before anything
// trusts it. The file is untrusted input, so each length is compared with the bytes that
// remain BEFORE anything is allocated, and every size computation is overflow-checked.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "common/error.h"
#include "gguf/gguf.h"

namespace mamba::gguf {

static_assert(std::endian::native == std::endian::little, "GGUF is read in place: little-endian hosts only");

namespace {

// strerror returns a mutable char*, which fail() would not treat as text.
const char* errstr(int e) { return std::strerror(e); }

// Metadata arrays become one Value (~130 bytes) per item, so a file of N bytes could ask for
// ~65N bytes of memory through arrays of UINT16. Real files hold a few vocabularies of at
// most a few hundred thousand items; this cap keeps a hostile file from exhausting memory.
constexpr uint64_t kMaxMetadataItems = uint64_t(1) << 24;

// Smallest encodings, used to reject impossible counts before reserving memory.
// Empty names are counted as possible here so that they get their own, clearer error later.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;               // key length, type, one-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name length, n_dims, ne[0], dtype, offset

// ggml type ids that are valid in GGUF files but not supported here, named so the error
// tells the user which quantisation they have.
const char* ggml_type_name(uint32_t t) {
  switch (t) {
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case 8: return "Q8_0";
    case 9: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case 12: return "Q4_K";
    case 13: return "Q5_K";
    case 14: return "Q6_K";
    case 15: return "Q8_K";
    case 16: return "IQ2_XXS";
    case 17: return "IQ2_XS";
    case 18: return "IQ3_XXS";
    case 19: return "IQ1_S";
    case 20: return "IQ4_NL";
    case 21: return "IQ3_S";
    case 22: return "IQ2_S";
    case 23: return "IQ4_XS";
    case 24: return "I8";
    case 25: return "I16";
    case 26: return "I32";
    case 27: return "I64";
    case 28: return "F64";
    case 29: return "IQ1_M";
    case 34: return "TQ1_0";
    case 35: return "TQ2_0";
    default: return nullptr;
  }
}

bool known_type(uint32_t t) { return t <= uint32_t(Type::FLOAT64); }

// Printable form of an untrusted name for error messages: control bytes become '?' and
// long names are cut, so a corrupt file cannot produce a multi-line or huge message.
std::string printable(std::string_view s) {
  std::string out;
  const size_t n = std::min<size_t>(s.size(), 80);
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = s[i];
    out.push_back(c < 0x20 || c == 0x7f ? '?' : char(c));
  }
  if (s.size() > n) out += "...";
  return out;
}

// A bounds-checked read position in the file.
struct Cursor {
  const uint8_t* base;
  size_t size;
  size_t pos = 0;

  size_t remaining() const { return size - pos; }

  void need(uint64_t n, const char* what) const {
    if (n > remaining())
      fail("file truncated: ", what, " at offset ", pos, " needs ", n, " bytes, only ",
           remaining(), " left");
  }

  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }

  std::string_view str(const char* what) {
    const size_t at = pos;
    const uint64_t n = get<uint64_t>(what);
    if (n > remaining())
      fail(what, " at offset ", at, " has length ", n, ", which exceeds the remaining ",
           remaining(), " bytes of the file");
    std::string_view s(reinterpret_cast<const char*>(base + pos), size_t(n));
    pos += size_t(n);
    return s;
  }
};

// Parses metadata values. Messages name the key the value belongs to.
struct ValueParser {
  Cursor& c;
  uint64_t items = 0;  // array items created so far, against kMaxMetadataItems

  void parse(Value& v, Type type, const std::string& key, int depth) {
    v.type = type;
    switch (type) {
      case Type::UINT8: v.u = c.get<uint8_t>("value"); break;
      case Type::INT8: v.i = c.get<int8_t>("value"); break;
      case Type::UINT16: v.u = c.get<uint16_t>("value"); break;
      case Type::INT16: v.i = c.get<int16_t>("value"); break;
      case Type::UINT32: v.u = c.get<uint32_t>("value"); break;
      case Type::INT32: v.i = c.get<int32_t>("value"); break;
      case Type::UINT64: v.u = c.get<uint64_t>("value"); break;
      case Type::INT64: v.i = c.get<int64_t>("value"); break;
      case Type::FLOAT32: v.f = c.get<float>("value"); break;
      case Type::FLOAT64: v.f = c.get<double>("value"); break;
      case Type::BOOL: {
        const uint8_t b = c.get<uint8_t>("value");
        if (b > 1) fail("metadata key '", key, "' has invalid BOOL value ", unsigned(b));
        v.u = b;
        break;
      }
      case Type::STRING: v.s = c.str("string value"); break;
      case Type::ARRAY: parse_array(v, key, depth + 1); break;
    }
  }

  void parse_array(Value& v, const std::string& key, int depth) {
    if (depth > kMaxArrayDepth)
      fail("metadata key '", key, "' nests arrays more than ", kMaxArrayDepth, " deep");
    const uint32_t elem = c.get<uint32_t>("array element type");
    if (!known_type(elem))
      fail("metadata key '", key, "' is an array of unknown type ", elem);
    v.elem = Type(elem);
    const size_t at = c.pos;
    const uint64_t n = c.get<uint64_t>("array length");
    // Each item takes at least this many bytes, so n is bounded by what is left.
    const uint64_t min_item = v.elem == Type::STRING ? 8 : v.elem == Type::ARRAY ? 12 : type_size(v.elem);
    if (n > c.remaining() / min_item)
      fail("metadata key '", key, "' array at offset ", at, " has length ", n,
           ", which exceeds the remaining ", c.remaining(), " bytes of the file");
    if (v.elem == Type::UINT8 || v.elem == Type::INT8) {
      // Raw bytes (e.g. an embedded tokenizer model) stay raw: one copy, no Value per byte.
      v.bytes.assign(reinterpret_cast<const char*>(c.base + c.pos), size_t(n));
      c.pos += size_t(n);
      return;
    }
    items += n;
    if (items > kMaxMetadataItems)
      fail("metadata arrays hold more than ", kMaxMetadataItems, " items in total (at key '",
           key, "')");
    v.arr.reserve(size_t(n));
    for (uint64_t k = 0; k < n; k++) {
      // Parsing into a stack temporary and moving it in measured faster than parsing in place.
      Value item;
      parse(item, v.elem, key, depth);
      v.arr.push_back(std::move(item));
    }
  }
};

}  // namespace

// ---- loading ---------------------------------------------------------------------------

std::unique_ptr<File> File::open(const std::string& path) {
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", errstr(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(path, ": cannot stat: ", errstr(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file", S_ISDIR(st.st_mode) ? " (it is a directory)" : "");
  }
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    // mmap of an empty file fails; an empty file is reported by parse() as truncated.
    void* p = mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      fail(path, ": cannot map ", f->size_, " bytes: ", errstr(e));
    }
    f->base_ = static_cast<const uint8_t*>(p);
    f->mapped_ = true;
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  try {
    f->parse();
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  return f;
}

std::unique_ptr<File> File::from_memory(const uint8_t* data, size_t size) {
  std::unique_ptr<File> f(new File());
  f->base_ = data;
  f->size_ = size;
  f->parse();
  return f;
}

File::~File() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
}

void File::parse() {
  Cursor c{base_, size_};

  // ---- header
  if (size_ < 4 || std::memcmp(base_, "GGUF", 4) != 0) fail("not a GGUF file (bad magic)");
  c.pos = 4;
  version_ = c.get<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    if (__builtin_bswap32(version_) == 2 || __builtin_bswap32(version_) == 3)
      fail("unsupported GGUF version ", version_, " (a big-endian file)");
    fail("unsupported GGUF version ", version_, " (only 2 and 3 are supported)");
  }
  const uint64_t n_tensors = c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("metadata count");
  if (n_tensors > c.remaining() / kMinTensorInfoBytes)
    fail("n_tensors ", n_tensors, " cannot fit in a file of ", size_, " bytes (corrupt or truncated)");
  if (n_kv > c.remaining() / kMinKvBytes)
    fail("n_kv ", n_kv, " cannot fit in a file of ", size_, " bytes (corrupt or truncated)");

  // ---- metadata
  ValueParser vp{c};
  kv_.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; k++) {
    std::string skey(c.str("metadata key"));
    if (!is_valid_name(skey))
      fail("metadata key #", k, " '", printable(skey), "' is empty or not valid UTF-8 text");
    if (kv_index_.count(skey)) fail("duplicate metadata key '", skey, "'");
    const uint32_t type = c.get<uint32_t>("metadata type");
    if (!known_type(type)) fail("metadata key '", skey, "' has unknown type ", type);
    Value v;
    vp.parse(v, Type(type), skey, 0);
    if (skey == "general.alignment") {
      if (v.type != Type::UINT32)
        fail("general.alignment has type ", describe_type(v), ", expected UINT32");
      if (v.u == 0 || (v.u & (v.u - 1)) != 0)
        fail("general.alignment ", v.u, " is not a power of two");
      alignment_ = v.u;
    }
    kv_index_.emplace(skey, kv_.size());
    kv_.emplace_back(std::move(skey), std::move(v));
  }

  // ---- tensor infos
  tensors_.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; k++) {
    TensorInfo t;
    t.name = std::string(c.str("tensor name"));
    if (!is_valid_name(t.name))
      fail("tensor #", k, " name '", printable(t.name), "' is empty or not valid UTF-8 text");
    if (tensor_index_.count(t.name)) fail("duplicate tensor name '", t.name, "'");
    const uint32_t n_dims = c.get<uint32_t>("tensor dimension count");
    if (n_dims < 1 || n_dims > kMaxDims)
      fail("tensor '", t.name, "' has ", n_dims, " dimensions (must be 1 to ", kMaxDims, ")");
    t.ne.resize(n_dims);
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      t.ne[d] = c.get<uint64_t>("tensor dimension");
      if (t.ne[d] == 0)
        fail("tensor '", t.name, "' has a zero-sized dimension (ne[", d, "] = 0)");
      if (mul_overflows(n_el, t.ne[d], &n_el))
        fail("tensor '", t.name, "' has too many elements (the product of its dimensions overflows)");
    }
    const uint32_t dtype = c.get<uint32_t>("tensor type");
    if (dtype != uint32_t(DType::F32) && dtype != uint32_t(DType::F16) &&
        dtype != uint32_t(DType::BF16)) {
      const char* gname = ggml_type_name(dtype);
      fail("tensor '", t.name, "' has unsupported type ", dtype, " (", gname ? gname : "unknown",
           "); only F32, F16 and BF16 are supported");
    }
    t.dtype = DType(dtype);
    t.offset = c.get<uint64_t>("tensor data offset");
    t.n_elements = n_el;
    if (mul_overflows(n_el, dtype_size(t.dtype), &t.n_bytes))
      fail("tensor '", t.name, "' size in bytes overflows");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // ---- data section: starts at the next multiple of the alignment
  uint64_t data_start;
  if (add_overflows(c.pos, alignment_ - 1, &data_start))
    fail("data section offset overflows");
  data_start &= ~(alignment_ - 1);
  for (TensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0)
      fail("tensor '", t.name, "' data offset ", t.offset, " is not a multiple of the alignment ",
           alignment_);
    uint64_t begin, end;
    if (add_overflows(data_start, t.offset, &begin) || add_overflows(begin, t.n_bytes, &end) ||
        end > size_)
      fail("tensor '", t.name, "' data (offset ", t.offset, ", ", t.n_bytes,
           " bytes) runs past the end of the file (data starts at ", data_start, ", size ", size_, ")");
    t.data = base_ + begin;
  }
  // Overlapping tensors would alias each other's weights: always a broken file.
  std::vector<const TensorInfo*> order;
  order.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); k++) {
    const TensorInfo* a = order[k - 1];
    const TensorInfo* b = order[k];
    if (a->offset + a->n_bytes > b->offset)  // cannot overflow: both lie inside the file
      fail("tensors '", a->name, "' and '", b->name, "' overlap (offsets ", a->offset, " + ",
           a->n_bytes, " bytes and ", b->offset, ")");
  }
}

// ---- lookups and typed getters ---------------------------------------------------------

namespace {

[[noreturn]] void type_error(const std::string& where, const std::string& key, const Value& v,
                             const char* expected) {
  fail(where, "metadata key '", key, "' has type ", describe_type(v), ", expected ", expected);
}

int64_t to_int(const std::string& where, const std::string& key, const Value& v) {
  switch (v.type) {
    case Type::UINT8: case Type::UINT16: case Type::UINT32: case Type::UINT64:
      if (v.u > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(where, "metadata key '", key, "' value ", v.u, " does not fit in a signed 64-bit integer");
      return int64_t(v.u);
    case Type::INT8: case Type::INT16: case Type::INT32: case Type::INT64:
      return v.i;
    default:
      type_error(where, key, v, "an integer");
  }
}

}  // namespace

const Value* File::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const TensorInfo* File::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

// Getter errors name the file like the parse errors do.
std::string prefix(const File& f) { return f.path().empty() ? std::string() : f.path() + ": "; }

const Value& require(const File& f, const std::string& key) {
  const Value* v = f.find(key);
  if (!v) fail(prefix(f), "missing metadata key '", key, "'");
  return *v;
}

}  // namespace

std::string File::get_str(const std::string& key) const {
  const Value* v = &require(*this, key);
  if (v->type != Type::STRING) type_error(prefix(*this), key, *v, "STRING");
  return v->s;
}

std::string File::get_str(const std::string& key, const std::string& def) const {
  return has(key) ? get_str(key) : def;
}

int64_t File::get_int(const std::string& key) const {
  const Value* v = &require(*this, key);
  return to_int(prefix(*this), key, *v);
}

int64_t File::get_int(const std::string& key, int64_t def) const {
  return has(key) ? get_int(key) : def;
}

double File::get_float(const std::string& key) const {
  const Value* v = &require(*this, key);
  if (v->is_float()) return v->f;
  if (v->is_int()) return v->type == Type::UINT8 || v->type == Type::UINT16 ||
                                  v->type == Type::UINT32 || v->type == Type::UINT64
                              ? double(v->u)
                              : double(v->i);
  type_error(prefix(*this), key, *v, "FLOAT32 or FLOAT64");
}

double File::get_float(const std::string& key, double def) const {
  return has(key) ? get_float(key) : def;
}

bool File::get_bool(const std::string& key) const {
  const Value* v = &require(*this, key);
  if (v->type != Type::BOOL) type_error(prefix(*this), key, *v, "BOOL");
  return v->u != 0;
}

bool File::get_bool(const std::string& key, bool def) const {
  return has(key) ? get_bool(key) : def;
}

std::vector<std::string> File::get_str_array(const std::string& key) const {
  const Value* v = &require(*this, key);
  if (v->type != Type::ARRAY || v->elem != Type::STRING) type_error(prefix(*this), key, *v, "ARRAY of STRING");
  std::vector<std::string> out;
  out.reserve(v->arr.size());
  for (const Value& item : v->arr) out.push_back(item.s);
  return out;
}

std::vector<int64_t> File::get_int_array(const std::string& key) const {
  const Value* v = &require(*this, key);
  Value probe;
  probe.type = v->type == Type::ARRAY ? v->elem : Type::STRING;
  if (v->type != Type::ARRAY || !probe.is_int()) type_error(prefix(*this), key, *v, "ARRAY of an integer type");
  std::vector<int64_t> out;
  out.reserve(v->array_size());
  if (v->elem == Type::UINT8) {
    for (char b : v->bytes) out.push_back(int64_t(uint8_t(b)));
  } else if (v->elem == Type::INT8) {
    for (char b : v->bytes) out.push_back(int64_t(int8_t(b)));
  } else {
    for (const Value& item : v->arr) out.push_back(to_int(prefix(*this), key, item));
  }
  return out;
}

std::vector<float> File::get_float_array(const std::string& key) const {
  const Value* v = &require(*this, key);
  if (v->type != Type::ARRAY || (v->elem != Type::FLOAT32 && v->elem != Type::FLOAT64))
    type_error(prefix(*this), key, *v, "ARRAY of FLOAT32 or FLOAT64");
  std::vector<float> out;
  out.reserve(v->arr.size());
  for (const Value& item : v->arr) out.push_back(float(item.f));
  return out;
}

}  // namespace mamba::gguf
