// The parts of sentencepiece's ModelProto (a tokenizer.model file) that this engine reads,
// and a writer for a complete model built from GGUF token lists.
//
// Debian's libsentencepiece-dev ships no generated protobuf headers, so the wire format is
// handled here: varints and length-delimited fields, as in sentencepiece_model.proto:
//   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec, 3 normalizer_spec,
//                   5 denormalizer_spec
//   SentencePiece   1 piece, 2 score (float), 3 type
//   TrainerSpec     3 model_type, 4 vocab_size, 24 treat_whitespace_as_suffix,
//                   35 byte_fallback, 40..43 unk/bos/eos/pad id, 44 unk_surface,
//                   45..48 unk/bos/eos/pad piece
//   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix,
//                   4 remove_extra_whitespaces, 5 escape_whitespaces
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace mamba::spm {

enum class ModelType { Unigram = 1, Bpe = 2, Word = 3, Char = 4 };

struct Piece {
  std::string text;
  float score = 0.0f;
  TokenType type = TokenType::Normal;
};

struct Model {
  std::vector<Piece> pieces;
  ModelType model_type = ModelType::Unigram;  // proto defaults throughout
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface = " \xE2\x81\x87 ";  // " ⁇ "
  std::string unk_piece = "<unk>";
  std::string bos_piece = "<s>";
  std::string eos_piece = "</s>";
  std::string pad_piece = "<pad>";
  std::string normalizer_name;
  bool has_charsmap = false;  // a precompiled normalisation map (e.g. nmt_nfkc)
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool has_denormalizer = false;
};

// Reads a serialized ModelProto. Throws mamba::Error when it is not one.
Model parse_model(std::string_view bytes);

// Serializes `model` as a ModelProto with an identity normalizer (no charsmap) and the given
// flags, ready for SentencePieceProcessor::LoadFromSerializedProto.
std::string serialize_model(const Model& model);

}  // namespace mamba::spm
