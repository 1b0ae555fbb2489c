// The tokenizer metadata mamba-convert embeds: byte-level BPE from tokenizer.json and
// SentencePiece from tokenizer.model, special ids, padding to n_vocab, and the real GPT-NeoX
// and Mistral tokenizers when ../shared has them.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "convert/converter.h"
#include "gguf/gguf.h"
#include "test_util.h"

using namespace mamba;
using namespace mamba::test;
namespace cv = mamba::convert;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string tmp_dir(const std::string& name) {
  const std::string dir = std::string(MAMBA_TEST_TMP) + "/convert_tokenizer/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A config.json for a model that only needs to exist for --vocab-only: no weights, so n_vocab
// is vocab_size rounded up to pad_vocab_size_multiple (8 for Mamba-1, 16 for Mamba-2).
std::string model_dir(const std::string& name, bool mamba2, int64_t vocab_size,
                      json extra = json::object()) {
  const std::string dir = tmp_dir(name);
  json c = mamba2 ? json{{"model_type", "mamba2"}, {"hidden_size", 32}, {"num_hidden_layers", 1},
                         {"num_heads", 4},         {"head_dim", 16},    {"n_groups", 1}}
                  : json{{"model_type", "mamba"}, {"hidden_size", 32}, {"num_hidden_layers", 1}};
  c["vocab_size"] = vocab_size;
  c.update(extra);
  write_text(dir + "/config.json", c.dump());
  return dir;
}

struct Result {
  std::unique_ptr<gguf::File> file;
  cv::ConvertResult info;
  std::vector<std::string> warnings;
};

Result convert_vocab(const std::string& dir) {
  Result r;
  cv::ConvertOptions opt;
  opt.hf_dir = dir;
  opt.out_path = dir + "/vocab.gguf";
  opt.vocab_only = true;
  opt.warn = [&](const std::string& w) { r.warnings.push_back(w); };
  r.info = cv::convert(opt);
  r.file = gguf::File::open(opt.out_path);
  return r;
}

// A small byte-level BPE tokenizer.json with a gap in its ids (7) and added tokens.
json small_bpe() {
  return json{{"version", "1.0"},
              {"added_tokens",
               {{{"id", 5}, {"content", "<|endoftext|>"}, {"special", true}},
                {{"id", 6}, {"content", "  "}, {"special", false}},
                {{"id", 8}, {"content", "<|sep|>"}, {"special", true}}}},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
              {"model",
               {{"type", "BPE"},
                {"unk_token", "<unk>"},
                {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"\xc4\xa0", 3}, {"<unk>", 4}}},
                {"merges", {"a b", "\xc4\xa0 ab"}}}}};
}

// ---- a SentencePiece model written field by field (the protobuf wire format) ------------------

std::string varint(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(char(v ? b | 0x80 : b));
  } while (v);
  return out;
}
std::string field_bytes(int field, const std::string& s) {
  return varint(uint64_t(field) << 3 | 2) + varint(s.size()) + s;
}
std::string field_varint(int field, int64_t v) {
  return varint(uint64_t(field) << 3) + varint(uint64_t(v));
}
std::string field_float(int field, float f) {
  std::string out = varint(uint64_t(field) << 3 | 5);
  out.append(reinterpret_cast<const char*>(&f), 4);
  return out;
}

// ModelProto { pieces = 1 {piece = 1, score = 2, type = 3}, trainer_spec = 2, normalizer_spec = 3 }
// Piece types: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused.
struct Piece {
  std::string text;
  float score;
  int type;
};
const std::vector<Piece> kPieces = {{"<unk>", 0, 2},
                                    {"<s>", 0, 3},
                                    {"</s>", 0, 3},
                                    {"c", -3, 1},
                                    {"\xe2\x96\x81"
                                     "a",
                                     -1, 1},
                                    {"b", -2, 1},
                                    {"ab", -1.5, 1},
                                    {"zz", 0, 5},
                                    {"<mask>", 0, 4}};
std::string small_sentencepiece() {
  std::string model;
  for (const auto& p : kPieces)
    model +=
        field_bytes(1, field_bytes(1, p.text) + field_float(2, p.score) + field_varint(3, p.type));
  // trainer_spec: model_type 1 (unigram), unk_id 0, bos_id 1, eos_id 2; pad_id keeps its
  // default -1 (none). Byte pieces would need all 256 of them: the Mistral test covers those.
  model += field_bytes(
      2, field_varint(3, 1) + field_varint(40, 0) + field_varint(41, 1) + field_varint(42, 2));
  // normalizer_spec: name "identity", add_dummy_prefix true
  model += field_bytes(3, field_bytes(1, "identity") + field_varint(3, 1));
  return model;
}

const std::string kNeox =
    std::string(MAMBA_SOURCE_DIR) + "/../shared/data/tokenizers/gpt-neox-20b.tokenizer.json";
const std::string kMistral =
    std::string(MAMBA_SOURCE_DIR) + "/../shared/data/tokenizers/mistral-v3.tokenizer.model";

}  // namespace

TEST_CASE("tokenizer: BPE tokenizer.json -> gpt2 tokens, types, merges, special ids") {
  const std::string dir = model_dir("bpe", false, 10, {{"pad_token_id", 3}});  // n_vocab 16
  const std::string text = small_bpe().dump(2);
  write_text(dir + "/tokenizer.json", text);
  write_text(dir + "/tokenizer_config.json",
             json{{"bos_token", "<|endoftext|>"},
                  {"eos_token", {{"content", "<|sep|>"}, {"lstrip", false}}},
                  {"pad_token", "<|padding|>"},  // not in the vocab: config.json's id is used
                  {"add_bos_token", true},
                  {"chat_template", "{{ messages }}"}}
                 .dump());
  const Result r = convert_vocab(dir);
  const gguf::File& f = *r.file;
  CHECK(r.info.tokenizer.model == "gpt2");
  CHECK(r.info.tokenizer.n_tokens == 9);
  CHECK(f.get_int("mamba.vocab_size") == 16);
  CHECK(f.get_str("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_str("tokenizer.ggml.pre") == "olmo");
  const std::vector<std::string> tokens = {
      "a",       "b",      "ab",      "\xc4\xa0", "<unk>",   "<|endoftext|>", "  ",      "[PAD7]",
      "<|sep|>", "[PAD9]", "[PAD10]", "[PAD11]",  "[PAD12]", "[PAD13]",       "[PAD14]", "[PAD15]"};
  CHECK(f.get_str_array("tokenizer.ggml.tokens") == tokens);
  const std::vector<int64_t> types = {1, 1, 1, 1, 2, 3, 4, 5, 3, 5, 5, 5, 5, 5, 5, 5};
  CHECK(f.get_int_array("tokenizer.ggml.token_type") == types);
  CHECK(f.get_str_array("tokenizer.ggml.merges") == std::vector<std::string>{"a b", "\xc4\xa0 ab"});
  CHECK(f.get_str("tokenizer.huggingface.json") == text);
  CHECK(f.get_int("tokenizer.ggml.bos_token_id") == 5);
  CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 8);
  CHECK(f.get_int("tokenizer.ggml.unknown_token_id") == 4);
  CHECK(f.get_int("tokenizer.ggml.padding_token_id") == 3);
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token") == true);
  CHECK(f.get_bool("tokenizer.ggml.add_eos_token") == false);
  CHECK(f.get_str("tokenizer.chat_template") == "{{ messages }}");
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0].find("pad_token '<|padding|>' is not in the vocabulary") !=
        std::string::npos);
  CHECK_FALSE(f.has("tokenizer.ggml.scores"));
  CHECK(f.tensors().empty());
}

TEST_CASE("tokenizer: merges as pairs, other pre-tokenizers, ids from config.json") {
  const std::string dir =
      model_dir("bpe_pairs", true, 9, {{"bos_token_id", 5}, {"eos_token_id", {8, 5}}});
  json tok = small_bpe();
  tok["model"]["merges"] = json::parse("[[\"a\", \"b\"], [\"\xc4\xa0\", \"ab\"]]");
  tok["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array()}};
  write_text(dir + "/tokenizer.json", tok.dump());
  const Result r = convert_vocab(dir);
  CHECK(r.file->get_str_array("tokenizer.ggml.merges") ==
        std::vector<std::string>{"a b", "\xc4\xa0 ab"});
  CHECK(r.file->get_str("tokenizer.ggml.pre") == "default");
  CHECK(r.file->get_int("mamba2.vocab_size") == 16);
  CHECK(r.file->get_int("tokenizer.ggml.bos_token_id") == 5);
  CHECK(r.file->get_int("tokenizer.ggml.eos_token_id") == 8);  // the first of a list
  CHECK_FALSE(r.file->has("tokenizer.ggml.padding_token_id"));
  CHECK(r.file->get_bool("tokenizer.ggml.add_bos_token") == false);  // BPE default

  // A ByteLevel pre-tokenizer that adds a prefix space is not GPT-NeoX's.
  tok["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  write_text(dir + "/tokenizer.json", tok.dump());
  CHECK(convert_vocab(dir).file->get_str("tokenizer.ggml.pre") == "default");
}

TEST_CASE("tokenizer: malformed or oversized tokenizers are refused") {
  auto err = [](const std::string& dir, const std::string& needle) {
    cv::ConvertOptions opt;
    opt.hf_dir = dir;
    opt.out_path = dir + "/vocab.gguf";
    opt.vocab_only = true;
    opt.warn = [](const std::string&) {};
    CHECK_THROWS_WITH_AS(cv::convert(opt), doctest::Contains(needle.c_str()), Error);
    CHECK_FALSE(fs::exists(opt.out_path));
  };
  const std::string dir = model_dir("bpe_bad", false, 8);   // n_vocab 8
  write_text(dir + "/tokenizer.json", small_bpe().dump());  // uses id 8
  err(dir, "token id 8 does not fit the model's vocabulary of 8 embedding rows");

  json tok = small_bpe();
  tok["model"]["type"] = "WordPiece";
  write_text(dir + "/tokenizer.json", tok.dump());
  err(dir, "tokenizer model type 'WordPiece' is not supported");

  tok = small_bpe();
  tok["added_tokens"] = json::array();
  tok["model"]["vocab"]["dup"] = 1;
  write_text(dir + "/tokenizer.json", tok.dump());
  err(dir, "id 1 is used by both");

  tok = small_bpe();
  tok["added_tokens"] = json::array();
  tok["model"]["merges"] = json::parse(R"([["a"]])");
  write_text(dir + "/tokenizer.json", tok.dump());
  err(dir, "malformed merge");

  write_text(dir + "/tokenizer.json", "{\"model\": ");
  err(dir, "tokenizer.json: not valid JSON");

  fs::remove(dir + "/tokenizer.json");
  write_text(dir + "/tokenizer.model", "definitely not a protobuf");
  err(dir, "not a valid SentencePiece model");
}

TEST_CASE("tokenizer: SentencePiece tokenizer.model -> llama tokens, scores, types, raw bytes") {
  const std::string dir = model_dir("sp", true, 13);  // n_vocab 16
  const std::string model = small_sentencepiece();
  write_text(dir + "/tokenizer.model", model);
  write_text(dir + "/tokenizer_config.json",
             json{{"added_tokens_decoder",
                   {{"12", {{"content", "<extra>"}, {"special", true}}},
                    {"5", {{"content", "b"}, {"special", true}}}}}}
                 .dump());
  const Result r = convert_vocab(dir);
  const gguf::File& f = *r.file;
  CHECK(r.info.tokenizer.model == "llama");
  CHECK(r.info.tokenizer.n_tokens == 13);
  CHECK(f.get_str("tokenizer.ggml.model") == "llama");
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int64_t> types;
  for (const auto& p : kPieces) {
    tokens.push_back(p.text);
    scores.push_back(p.score);
    types.push_back(p.type == 4 ? 1 : p.type);  // user-defined pieces read back as normal
  }
  types[5] = 3;  // marked special by tokenizer_config.json
  for (int id = 9; id < 16; id++) {
    tokens.push_back(id == 12 ? "<extra>" : "[PAD" + std::to_string(id) + "]");
    scores.push_back(id == 12 ? 0.0f : -1000.0f);
    types.push_back(id == 12 ? 3 : 5);
  }
  CHECK(f.get_str_array("tokenizer.ggml.tokens") == tokens);
  CHECK(f.get_float_array("tokenizer.ggml.scores") == scores);
  CHECK(f.get_int_array("tokenizer.ggml.token_type") == types);
  const gguf::Value* raw = f.find("tokenizer.sentencepiece.model");
  REQUIRE(raw != nullptr);
  CHECK(raw->type == gguf::Type::ARRAY);
  CHECK(raw->elem == gguf::Type::UINT8);
  CHECK(raw->bytes == model);
  CHECK(f.get_int("tokenizer.ggml.bos_token_id") == 1);
  CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 2);
  CHECK(f.get_int("tokenizer.ggml.unknown_token_id") == 0);
  CHECK_FALSE(f.has("tokenizer.ggml.padding_token_id"));
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token") == true);  // SentencePiece default
  CHECK_FALSE(f.has("tokenizer.huggingface.json"));
}

TEST_CASE("tokenizer: Mamba-2 prefers tokenizer.model, Mamba-1 prefers tokenizer.json") {
  for (bool mamba2 : {false, true}) {
    const std::string dir = model_dir(mamba2 ? "both_m2" : "both_m1", mamba2, 16);
    write_text(dir + "/tokenizer.json", small_bpe().dump());
    write_text(dir + "/tokenizer.model", small_sentencepiece());
    CHECK(convert_vocab(dir).file->get_str("tokenizer.ggml.model") == (mamba2 ? "llama" : "gpt2"));
  }
}

TEST_CASE("tokenizer: no tokenizer files: a warning and no tokenizer keys") {
  const std::string dir = model_dir("none", false, 16);
  const Result r = convert_vocab(dir);
  REQUIRE(r.warnings.size() == 1);
  CHECK(r.warnings[0] == "no tokenizer.json or tokenizer.model in " + dir +
                             ": the GGUF will have no vocabulary; use --prompt-ids");
  for (const auto& [key, value] : r.file->metadata()) CHECK(key.rfind("tokenizer.", 0) != 0);
  CHECK(r.info.tokenizer.model.empty());
}

TEST_CASE("tokenizer: the GPT-NeoX-20B tokenizer, padded for Mamba-1 and Mamba-2") {
  if (!fs::exists(kNeox)) {
    MESSAGE("skipped: no " << kNeox);
    return;
  }
  for (bool mamba2 : {false, true}) {
    const std::string dir = model_dir(mamba2 ? "neox_m2" : "neox_m1", mamba2, 50277);
    fs::copy_file(kNeox, dir + "/tokenizer.json");
    write_text(dir + "/tokenizer_config.json",
               R"({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "unk_token": "<|endoftext|>", "add_bos_token": false})");
    const Result r = convert_vocab(dir);
    const gguf::File& f = *r.file;
    const size_t n_vocab = mamba2 ? 50288 : 50280;
    const auto tokens = f.get_str_array("tokenizer.ggml.tokens");
    const auto types = f.get_int_array("tokenizer.ggml.token_type");
    REQUIRE(tokens.size() == n_vocab);
    REQUIRE(types.size() == n_vocab);
    CHECK(r.info.tokenizer.n_tokens == 50277);
    CHECK(f.get_str("tokenizer.ggml.pre") == "olmo");
    CHECK(tokens[0] == "<|endoftext|>");
    CHECK(types[0] == 3);
    CHECK(tokens[253] == "\xc4\xa0the");
    CHECK(types[253] == 1);
    CHECK(tokens[25521] == "hello");
    CHECK(tokens[50276] == "  ");
    CHECK(types[50276] == 4);  // a non-special added token
    CHECK(tokens[50277] == "[PAD50277]");
    CHECK(types[50277] == 5);
    CHECK(tokens[n_vocab - 1] == "[PAD" + std::to_string(n_vocab - 1) + "]");
    const auto merges = f.get_str_array("tokenizer.ggml.merges");
    CHECK(merges.size() == 50009);
    CHECK(merges[0] == "\xc4\xa0 \xc4\xa0");
    CHECK(merges.back() == "\xc4\xa0Out comes");
    CHECK(f.get_int("tokenizer.ggml.bos_token_id") == 0);
    CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 0);
    CHECK(f.get_int("tokenizer.ggml.unknown_token_id") == 0);
    CHECK(f.get_str("tokenizer.huggingface.json") == slurp(kNeox));
  }
}

TEST_CASE("tokenizer: the Mistral v3 SentencePiece model (Mamba-Codestral's)") {
  if (!fs::exists(kMistral)) {
    MESSAGE("skipped: no " << kMistral);
    return;
  }
  const std::string dir = model_dir("mistral", true, 32768);
  fs::copy_file(kMistral, dir + "/tokenizer.model");
  const Result r = convert_vocab(dir);
  const gguf::File& f = *r.file;
  const auto tokens = f.get_str_array("tokenizer.ggml.tokens");
  const auto types = f.get_int_array("tokenizer.ggml.token_type");
  const auto scores = f.get_float_array("tokenizer.ggml.scores");
  REQUIRE(tokens.size() == 32768);
  REQUIRE(types.size() == 32768);
  REQUIRE(scores.size() == 32768);
  CHECK(tokens[0] == "<unk>");
  CHECK(types[0] == 2);
  CHECK(tokens[1] == "<s>");
  CHECK(types[1] == 3);
  CHECK(tokens[3] == "[INST]");
  CHECK(types[3] == 3);
  CHECK(tokens[771] == "<0x00>");
  CHECK(types[771] == 6);
  CHECK(tokens[1500] == "\xe2\x96\x81/");
  CHECK(scores[1500] == -473.0f);
  CHECK(types[1500] == 1);
  CHECK(std::count(types.begin(), types.end(), 6) == 256);
  CHECK(f.get_int("tokenizer.ggml.bos_token_id") == 1);
  CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 2);
  CHECK(f.get_int("tokenizer.ggml.unknown_token_id") == 0);
  CHECK(f.get_bool("tokenizer.ggml.add_bos_token") == true);
  CHECK(f.find("tokenizer.sentencepiece.model")->bytes == slurp(kMistral));
}
