#include "tokenizer/spm_proto.h"

#include <cstdint>
#include <cstring>

#include "common/error.h"

namespace mamba::spm {

namespace {

enum WireType { Varint = 0, Fixed64 = 1, Bytes = 2, Fixed32 = 5 };

// A bounds-checked reader over one protobuf message.
class Reader {
 public:
  explicit Reader(std::string_view data)
      : p_(reinterpret_cast<const uint8_t*>(data.data())), end_(p_ + data.size()) {}

  // Reads the next field's tag; false at the end of the message.
  bool next(uint32_t* field, int* wire) {
    if (p_ == end_) return false;
    const uint64_t tag = varint();
    *field = static_cast<uint32_t>(tag >> 3);
    *wire = static_cast<int>(tag & 7);
    if (*field == 0) bad("field number 0");
    return true;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) bad("truncated varint");
      const uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (b < 0x80) return v;
    }
    bad("varint too long");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) bad("length past the end");
    std::string_view s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  float fixed32_float() {
    if (end_ - p_ < 4) bad("truncated float");
    float f;
    std::memcpy(&f, p_, 4);  // little-endian on the platforms we build for
    p_ += 4;
    return f;
  }
  void skip(int wire) {
    switch (wire) {
      case Varint:
        varint();
        break;
      case Fixed64:
        advance(8);
        break;
      case Bytes:
        bytes();
        break;
      case Fixed32:
        advance(4);
        break;
      default:
        bad("unsupported wire type");
    }
  }

 private:
  void advance(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) bad("truncated field");
    p_ += n;
  }
  [[noreturn]] static void bad(const char* what) {
    fail("not a sentencepiece model (protobuf: ", what, ")");
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

void expect(int wire, int wanted) {
  if (wire != wanted) fail("not a sentencepiece model (protobuf: unexpected wire type)");
}

Piece parse_piece(std::string_view data) {
  Piece piece;
  Reader r(data);
  uint32_t field;
  int wire;
  while (r.next(&field, &wire)) {
    if (field == 1) {
      expect(wire, Bytes);
      piece.text = r.bytes();
    } else if (field == 2) {
      expect(wire, Fixed32);
      piece.score = r.fixed32_float();
    } else if (field == 3) {
      expect(wire, Varint);
      const uint64_t t = r.varint();
      if (t < 1 || t > 6)
        fail("sentencepiece model: piece '", piece.text, "' has unknown type ", t);
      piece.type = static_cast<TokenType>(t);
    } else {
      r.skip(wire);
    }
  }
  return piece;
}

void parse_trainer_spec(std::string_view data, Model& m) {
  Reader r(data);
  uint32_t field;
  int wire;
  while (r.next(&field, &wire)) {
    if (wire == Varint && field == 3) {
      m.model_type = static_cast<ModelType>(r.varint());
    } else if (wire == Varint && field == 24) {
      m.treat_whitespace_as_suffix = r.varint() != 0;
    } else if (wire == Varint && field == 35) {
      m.byte_fallback = r.varint() != 0;
    } else if (wire == Bytes && field >= 44 && field <= 48) {
      std::string s(r.bytes());
      if (field == 44)
        m.unk_surface = s;
      else if (field == 45)
        m.unk_piece = s;
      else if (field == 46)
        m.bos_piece = s;
      else if (field == 47)
        m.eos_piece = s;
      else
        m.pad_piece = s;
    } else {
      r.skip(wire);
    }
  }
}

void parse_normalizer_spec(std::string_view data, Model& m) {
  Reader r(data);
  uint32_t field;
  int wire;
  while (r.next(&field, &wire)) {
    if (wire == Bytes && field == 1) {
      m.normalizer_name = r.bytes();
    } else if (wire == Bytes && field == 2) {
      m.has_charsmap = !r.bytes().empty();
    } else if (wire == Varint && field == 3) {
      m.add_dummy_prefix = r.varint() != 0;
    } else if (wire == Varint && field == 4) {
      m.remove_extra_whitespaces = r.varint() != 0;
    } else if (wire == Varint && field == 5) {
      m.escape_whitespaces = r.varint() != 0;
    } else {
      r.skip(wire);
    }
  }
}

bool denormalizer_does_something(std::string_view data) {
  Reader r(data);
  uint32_t field;
  int wire;
  while (r.next(&field, &wire)) {
    if (wire == Bytes && (field == 2 || field == 6)) {
      if (!r.bytes().empty()) return true;  // a charsmap or normalization rules
    } else {
      r.skip(wire);
    }
  }
  return false;
}

// ---- writing -------------------------------------------------------------------------------

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void put_tag(std::string& out, uint32_t field, int wire) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire));
}
void put_varint_field(std::string& out, uint32_t field, uint64_t v) {
  put_tag(out, field, Varint);
  put_varint(out, v);
}
void put_int32_field(std::string& out, uint32_t field, int32_t v) {
  // int32 fields carry negative values sign-extended to 64 bits.
  put_varint_field(out, field, static_cast<uint64_t>(static_cast<int64_t>(v)));
}
void put_bytes_field(std::string& out, uint32_t field, std::string_view s) {
  put_tag(out, field, Bytes);
  put_varint(out, s.size());
  out.append(s);
}
void put_float_field(std::string& out, uint32_t field, float f) {
  put_tag(out, field, Fixed32);
  char b[4];
  std::memcpy(b, &f, 4);
  out.append(b, 4);
}

int32_t find_piece(const Model& m, const std::string& text, TokenType type) {
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    if (m.pieces[i].type == type && m.pieces[i].text == text) return static_cast<int32_t>(i);
  }
  return -1;
}

}  // namespace

Model parse_model(std::string_view bytes) {
  Model m;
  Reader r(bytes);
  uint32_t field;
  int wire;
  while (r.next(&field, &wire)) {
    if (field >= 1 && field <= 5 && field != 4) expect(wire, Bytes);
    if (field == 1) {
      m.pieces.push_back(parse_piece(r.bytes()));
    } else if (field == 2) {
      parse_trainer_spec(r.bytes(), m);
    } else if (field == 3) {
      parse_normalizer_spec(r.bytes(), m);
    } else if (field == 5) {
      m.has_denormalizer = denormalizer_does_something(r.bytes());
    } else {
      r.skip(wire);
    }
  }
  if (m.pieces.empty()) fail("not a sentencepiece model (no pieces)");
  return m;
}

std::string serialize_model(const Model& m) {
  std::string out;
  out.reserve(m.pieces.size() * 16 + 256);
  std::string msg;
  for (const Piece& p : m.pieces) {
    msg.clear();
    put_bytes_field(msg, 1, p.text);
    put_float_field(msg, 2, p.score);
    put_varint_field(msg, 3, static_cast<uint64_t>(p.type));
    put_bytes_field(out, 1, msg);
  }

  msg.clear();
  put_varint_field(msg, 3, static_cast<uint64_t>(m.model_type));
  put_int32_field(msg, 4, static_cast<int32_t>(m.pieces.size()));
  put_varint_field(msg, 24, m.treat_whitespace_as_suffix);
  put_varint_field(msg, 35, m.byte_fallback);
  put_int32_field(msg, 40, find_piece(m, m.unk_piece, TokenType::Unknown));
  put_int32_field(msg, 41, find_piece(m, m.bos_piece, TokenType::Control));
  put_int32_field(msg, 42, find_piece(m, m.eos_piece, TokenType::Control));
  put_int32_field(msg, 43, find_piece(m, m.pad_piece, TokenType::Control));
  put_bytes_field(msg, 44, m.unk_surface);
  put_bytes_field(msg, 45, m.unk_piece);
  put_bytes_field(msg, 46, m.bos_piece);
  put_bytes_field(msg, 47, m.eos_piece);
  put_bytes_field(msg, 48, m.pad_piece);
  put_bytes_field(out, 2, msg);

  msg.clear();
  put_bytes_field(msg, 1, "identity");
  put_varint_field(msg, 3, m.add_dummy_prefix);
  put_varint_field(msg, 4, m.remove_extra_whitespaces);
  put_varint_field(msg, 5, m.escape_whitespaces);
  put_bytes_field(out, 3, msg);
  return out;
}

}  // namespace mamba::spm
