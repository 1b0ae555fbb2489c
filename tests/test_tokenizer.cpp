// Tokenizers against reference outputs.
//
// tests/fixtures/tokenizer/ holds a corpus of hard texts and the ids and decoded text that HF
// tokenizers (GPT-NeoX) and the sentencepiece package (Mistral v3, v1) produce for them
// (scripts/make_tokenizer_refs.py). Every text must give exactly those ids through every
// loading path: the original tokenizer file, a GGUF as our converter writes it (original file
// embedded), and a GGUF as llama.cpp's converter writes it (token lists only).
//
// The real tokenizer files are read from ../shared/data/tokenizers beside the checkout (or
// $MAMBA_TOKENIZER_DIR); tests that need them are skipped with a message when absent.
#include <doctest/doctest.h>
#include <sentencepiece_processor.h>
#include <unicode/uchar.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "gguf/gguf.h"
#include "test_util.h"
#include "tokenizer/spm_proto.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

using namespace mamba;
using namespace mamba::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const fs::path kFixtures = fs::path(MAMBA_SOURCE_DIR) / "tests/fixtures/tokenizer";
const fs::path kTmp = MAMBA_TEST_TMP;

fs::path tokenizer_dir() {
  if (const char* env = std::getenv("MAMBA_TOKENIZER_DIR")) return env;
  return fs::path(MAMBA_SOURCE_DIR) / "../shared/data/tokenizers";
}
fs::path neox_json() { return tokenizer_dir() / "gpt-neox-20b.tokenizer.json"; }
fs::path spm_model(const std::string& name) {
  return tokenizer_dir() /
         (name == "mistral_v3" ? "mistral-v3.tokenizer.model" : "mistral-v1.tokenizer.model");
}
bool have_tokenizer_files() {
  return fs::exists(neox_json()) && fs::exists(spm_model("mistral_v3")) &&
         fs::exists(spm_model("mistral_v1"));
}
#define REQUIRE_TOKENIZER_FILES()                                                  \
  if (!have_tokenizer_files()) {                                                   \
    MESSAGE("skipped: tokenizer files not found in " << tokenizer_dir().string()); \
    return;                                                                        \
  }

std::vector<json> read_jsonl(const fs::path& p) {
  std::vector<json> out;
  std::istringstream in(read_file(p));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

// One reference case: a text with, per tokenizer, its expected ids and decoded text.
struct Case {
  std::string text;
  json expected;
};

const std::vector<Case>& corpus() {
  static const auto cases = [] {
    std::vector<Case> out;
    const auto texts = read_jsonl(kFixtures / "corpus.jsonl");
    const auto expected = read_jsonl(kFixtures / "expected.jsonl");
    REQUIRE(texts.size() == expected.size());
    for (size_t i = 0; i < texts.size(); ++i)
      out.push_back({texts[i].get<std::string>(), expected[i]});
    return out;
  }();
  return cases;
}

// Random texts with their references (fuzz*.jsonl: records holding "text" too).
const std::vector<Case>& fuzz() {
  static const auto cases = [] {
    std::vector<Case> out;
    for (const auto& entry : fs::directory_iterator(kFixtures)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("fuzz", 0) != 0 || entry.path().extension() != ".jsonl") continue;
      for (auto& rec : read_jsonl(entry.path()))
        out.push_back({rec.at("text").get<std::string>(), rec});
    }
    return out;
  }();
  return cases;
}

std::string readable(std::string_view s) {
  return json(utf8::repair(s, utf8::Repair::MaximalSubpart)).dump();
}

// ---- GGUF files as the two converters write them -------------------------------------------

struct HfVocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<std::string> merges;
};

// The NeoX vocabulary as token lists, the way llama.cpp's converter lays it out: ids in
// order, added tokens stored as their plain content (special ones CONTROL, others
// USER_DEFINED), padding "[PAD{id}]" (UNUSED) up to the model's vocabulary size.
HfVocab neox_lists(size_t n_vocab) {
  const json j = json::parse(read_file(neox_json()));
  HfVocab v;
  v.tokens.resize(n_vocab);
  v.types.assign(n_vocab, 5);
  for (size_t i = 0; i < n_vocab; ++i) v.tokens[i] = "[PAD" + std::to_string(i) + "]";
  for (const auto& [text, id] : j["model"]["vocab"].items()) {
    v.tokens[id.get<size_t>()] = text;
    v.types[id.get<size_t>()] = 1;
  }
  for (const auto& t : j["added_tokens"]) {
    const size_t id = t["id"].get<size_t>();
    v.tokens[id] = t["content"].get<std::string>();
    v.types[id] = t["special"].get<bool>() ? 3 : 4;
  }
  for (const auto& m : j["model"]["merges"]) v.merges.push_back(m.get<std::string>());
  return v;
}

fs::path write_neox_gguf(bool ours) {
  const fs::path path = kTmp / (ours ? "tok_neox_ours.gguf" : "tok_neox_llamacpp.gguf");
  const HfVocab v = neox_lists(50280);  // state-spaces/mamba pads 50277 to 50280
  gguf::Writer w;
  w.set_str("general.architecture", "mamba");
  w.set_str("tokenizer.ggml.model", "gpt2");
  w.set_str("tokenizer.ggml.pre", "olmo");
  w.set_str_array("tokenizer.ggml.tokens", v.tokens);
  w.set_i32_array("tokenizer.ggml.token_type", v.types);
  w.set_str_array("tokenizer.ggml.merges", v.merges);
  w.set_u32("tokenizer.ggml.bos_token_id", 0);
  w.set_u32("tokenizer.ggml.eos_token_id", 0);
  if (ours) w.set_str("tokenizer.huggingface.json", read_file(neox_json()));
  w.write(path.string());
  return path;
}

// A SentencePiece vocabulary as llama.cpp's converter writes it: pieces, scores and types
// from sentencepiece's IsUnknown / IsControl / IsUnused / IsByte (user-defined pieces become
// NORMAL), padded with "[PAD{id}]" up to `n_vocab`.
fs::path write_spm_gguf(const std::string& name, bool ours, size_t n_vocab) {
  const fs::path path = kTmp / ("tok_" + name + (ours ? "_ours.gguf" : "_llamacpp.gguf"));
  const std::string model_bytes = read_file(spm_model(name));
  const spm::Model m = spm::parse_model(model_bytes);
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (const auto& p : m.pieces) {
    tokens.push_back(p.text);
    scores.push_back(p.score);
    types.push_back(p.type == TokenType::UserDefined ? 1 : static_cast<int32_t>(p.type));
  }
  for (size_t i = tokens.size(); i < n_vocab; ++i) {
    tokens.push_back("[PAD" + std::to_string(i) + "]");
    scores.push_back(-1000.0f);
    types.push_back(5);
  }
  gguf::Writer w;
  w.set_str("general.architecture", "mamba2");
  w.set_str("tokenizer.ggml.model", "llama");
  w.set_str("tokenizer.ggml.pre", "default");
  w.set_str_array("tokenizer.ggml.tokens", tokens);
  w.set_f32_array("tokenizer.ggml.scores", scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);
  if (ours) w.set_bytes("tokenizer.sentencepiece.model", model_bytes);
  w.write(path.string());
  return path;
}

std::unique_ptr<Tokenizer> from_gguf_file(const fs::path& path) {
  const auto file = gguf::File::open(path.string());
  auto tok = tokenizer_from_gguf(*file);
  REQUIRE(tok != nullptr);
  return tok;
}

// Tokenizers under test, keyed "<reference>/<loading path>", loaded once.
const Tokenizer& get(const std::string& key) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  const std::string ref = key.substr(0, key.find('/'));
  const std::string path = key.substr(key.find('/') + 1);
  std::unique_ptr<Tokenizer> tok;
  if (ref == "neox") {
    if (path == "file")
      tok = load_tokenizer(neox_json().string());
    else
      tok = from_gguf_file(write_neox_gguf(path == "gguf-ours"));
  } else {
    if (path == "file")
      tok = load_tokenizer(spm_model(ref).string());
    else
      tok =
          from_gguf_file(write_spm_gguf(ref, path == "gguf-ours", ref == "mistral_v1" ? 32064 : 0));
  }
  return *cache.emplace(key, std::move(tok)).first->second;
}

const char* kPaths[] = {"file", "gguf-ours", "gguf-llamacpp"};
const char* kRefs[] = {"neox", "mistral_v3", "mistral_v1"};

std::string stream_decode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                          bool show_special) {
  StreamDecoder d(tok, show_special);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = d.feed(id);
    if (!utf8::is_valid(piece)) return "<stream produced ill-formed UTF-8>";
    out += piece;
  }
  return out + d.finish();
}

// Checks every case against the reference for one tokenizer; returns the number that match
// in every respect (ids, decode, streaming decode).
size_t check_cases(const std::vector<Case>& cases, const std::string& ref,
                   const std::string& path) {
  const Tokenizer& tok = get(ref + "/" + path);
  size_t exact = 0, compared = 0, reported = 0;
  for (const Case& c : cases) {
    const json& e = c.expected;
    if (!e.contains(ref) || e[ref].is_null()) continue;  // the reference rejected this text
    ++compared;
    const auto want = e[ref].get<std::vector<int32_t>>();
    const auto ids = tok.encode(c.text, false);
    // HF decode with skip_special_tokens=False shows specials; sentencepiece hides them.
    const bool show = ref == "neox";
    const std::string want_text = e.value(ref + "_decode", c.text);
    const std::string got_text = tok.decode(want, show);
    const std::string streamed = stream_decode(tok, want, show);
    bool ok = ids == want && got_text == want_text && streamed == want_text;
    if (ref == "neox") {
      const std::string want_skip = e.value("neox_decode_skip", want_text);
      ok = ok && tok.decode(want, false) == want_skip;
    }
    if (ok) {
      ++exact;
    } else if (reported++ < 8) {
      MESSAGE(ref << "/" << path << " text " << readable(c.text) << "\n  ids  " << json(ids).dump()
                  << "\n  want " << json(want).dump() << "\n  decode " << readable(got_text)
                  << "\n  want   " << readable(want_text) << "\n  stream " << readable(streamed));
    }
  }
  MESSAGE(ref << " via " << path << ": " << exact << "/" << compared << " exact");
  CHECK(compared > 0);
  return compared - exact;
}

}  // namespace

// ---- reference corpus ------------------------------------------------------------------------

TEST_CASE("tokenizer: corpus matches the references through every loading path") {
  REQUIRE_TOKENIZER_FILES();
  REQUIRE(corpus().size() >= 250);
  for (const std::string ref : kRefs) {
    for (const std::string path : kPaths) {
      CAPTURE(ref);
      CAPTURE(path);
      CHECK(check_cases(corpus(), ref, path) == 0);
    }
  }
}

TEST_CASE("tokenizer: random texts match the references") {
  REQUIRE_TOKENIZER_FILES();
  REQUIRE(fuzz().size() > 0);
  for (const std::string ref : kRefs) {
    for (const std::string path : kPaths) {
      CAPTURE(ref);
      CAPTURE(path);
      CHECK(check_cases(fuzz(), ref, path) == 0);
    }
  }
}

TEST_CASE("tokenizer: decode(encode(x)) == x for lossless texts") {
  REQUIRE_TOKENIZER_FILES();
  for (const std::string ref : kRefs) {
    const Tokenizer& tok = get(ref + "/file");
    size_t lossless = 0, failures = 0;
    for (const Case& c : corpus()) {
      // The reference round-trips this text exactly (NeoX: the text is already NFC).
      if (c.expected.value(ref + "_decode", c.text) != c.text) continue;
      ++lossless;
      // NeoX: "<|endoftext|>" in the text is the special token, shown to get the text back.
      // Mistral: BOS added, and hidden again by decode.
      const auto ids = tok.encode(c.text, true);
      if (tok.decode(ids, ref == "neox") != c.text && failures++ < 5)
        MESSAGE(ref << ": " << readable(c.text));
    }
    MESSAGE(ref << ": " << lossless << " lossless texts");
    CHECK(lossless > 200);
    CHECK(failures == 0);
  }
}

TEST_CASE("tokenizer: reference decodes of split characters, bytes and special tokens") {
  REQUIRE_TOKENIZER_FILES();
  const json cases = json::parse(read_file(kFixtures / "decode_cases.json"));
  REQUIRE(cases.size() > 20);
  for (const auto& c : cases) {
    const std::string ref = c["tokenizer"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    for (const std::string path : kPaths) {
      const Tokenizer& tok = get(ref + "/" + path);
      CAPTURE(path);
      CAPTURE(c["note"].get<std::string>());
      if (ref == "neox") {
        CHECK(readable(tok.decode(ids, true)) == readable(c["text"].get<std::string>()));
        CHECK(readable(tok.decode(ids, false)) ==
              readable(c["text_skip_special"].get<std::string>()));
        CHECK(stream_decode(tok, ids, true) == c["text"].get<std::string>());
      } else {
        CHECK(readable(tok.decode(ids)) == readable(c["text"].get<std::string>()));
        CHECK(stream_decode(tok, ids, false) == c["text"].get<std::string>());
      }
    }
  }
}

TEST_CASE("tokenizer: long texts, encoded in chunks, match one sentencepiece call") {
  REQUIRE_TOKENIZER_FILES();
  for (const std::string ref : {"mistral_v3", "mistral_v1"}) {
    sentencepiece::SentencePieceProcessor sp;
    REQUIRE(sp.Load(spm_model(ref).string()).ok());
    // Joined corpus texts give long inputs with every kind of boundary inside them.
    for (const std::string sep : {" ", "\n", "", "  ", " \xE2\x96\x81 ", "\xE2\x96\x81"}) {
      std::string text;
      while (text.size() < 40000) {
        for (const Case& c : corpus()) text += c.text + sep;
      }
      std::vector<int> want;
      REQUIRE(sp.Encode(text, &want).ok());
      for (const std::string path : kPaths) {
        CAPTURE(path);
        CAPTURE(readable(sep));
        const auto ids = get(ref + "/" + path).encode(text, false);
        CHECK(std::vector<int>(ids.begin(), ids.end()) == want);
      }
    }
  }
}

// ---- special tokens, BOS/EOS -------------------------------------------------------------------

TEST_CASE("tokenizer: BOS/EOS follow each tokenizer's configuration") {
  REQUIRE_TOKENIZER_FILES();
  for (const std::string path : kPaths) {
    CAPTURE(path);
    // NeoX adds nothing (its post-processor is ByteLevel); <|endoftext|> is id 0.
    const Tokenizer& neox = get("neox/" + path);
    CHECK(neox.encode("Hello world", true) == std::vector<int32_t>{12092, 1533});
    CHECK(neox.eos_id() == 0);
    CHECK(neox.is_special(0));
    CHECK(neox.token_type(50276) == TokenType::UserDefined);
    CHECK(neox.token_to_piece(50276) == "  ");
    // Mistral: BOS <s> = 1 prepended, no EOS.
    const Tokenizer& v3 = get("mistral_v3/" + path);
    const auto plain = v3.encode("Hello world", false);
    auto with = plain;
    with.insert(with.begin(), 1);
    CHECK(v3.encode("Hello world", true) == with);
    CHECK(v3.bos_id() == 1);
    CHECK(v3.eos_id() == 2);
    CHECK(v3.decode(with, true) == "<s> Hello world");  // shown text ends the dummy-prefix rule
    CHECK(v3.decode(with, false) == "Hello world");
  }
  CHECK(get("neox/gguf-ours").vocab_size() == 50280);
  CHECK(get("neox/gguf-llamacpp").token_type(50279) == TokenType::Unused);
  CHECK(get("mistral_v1/gguf-llamacpp").vocab_size() == 32064);
  CHECK(get("mistral_v1/gguf-llamacpp").decode(std::vector<int32_t>{32063, 1}).empty());
}

TEST_CASE("tokenizer: overrides of add_bos / add_eos") {
  REQUIRE_TOKENIZER_FILES();
  auto tok = load_tokenizer(spm_model("mistral_v3").string());
  tok->set_add_bos(false);
  tok->set_add_eos(true);
  const auto ids = tok->encode("hi", true);
  CHECK(ids.front() != 1);
  CHECK(ids.back() == 2);
}

TEST_CASE("tokenizer: HF directory with tokenizer_config.json") {
  REQUIRE_TOKENIZER_FILES();
  const fs::path dir = kTmp / "tok_hf_dir";
  fs::create_directories(dir);
  fs::copy_file(neox_json(), dir / "tokenizer.json", fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"add_bos_token": true, "add_eos_token": true, "bos_token": "<|endoftext|>",
            "eos_token": {"content": "<|endoftext|>"}})";
  const auto tok = load_tokenizer(dir.string());
  CHECK(tok->kind() == "bpe");
  CHECK(tok->encode("Hello world", true) == std::vector<int32_t>{0, 12092, 1533, 0});
}

// ---- invalid input, streaming ------------------------------------------------------------------

TEST_CASE("tokenizer: ill-formed UTF-8 input is read as U+FFFD") {
  REQUIRE_TOKENIZER_FILES();
  for (const std::string ref : kRefs) {
    const Tokenizer& tok = get(ref + "/file");
    CHECK(tok.encode("a\xff"
                     "b",
                     false) == tok.encode("a\xEF\xBF\xBD"
                                          "b",
                                          false));
    CHECK(tok.encode("\xE2\x82", false) == tok.encode("\xEF\xBF\xBD", false));
  }
}

TEST_CASE("tokenizer: streaming holds back a split character and never emits invalid bytes") {
  REQUIRE_TOKENIZER_FILES();
  const Tokenizer& neox = get("neox/file");
  // "€" (E2 82 AC) as three byte-level tokens: nothing until the last one.
  const int32_t e2 = neox.token_to_id("\xC3\xA2");   // 'â' stands for byte E2
  const int32_t b82 = neox.token_to_id("\xC4\xA4");  // 'Ĥ' stands for byte 82
  const int32_t bac = neox.token_to_id("\xC2\xAC");  // '¬' stands for byte AC
  REQUIRE(e2 >= 0);
  REQUIRE(b82 >= 0);
  REQUIRE(bac >= 0);
  StreamDecoder d(neox);
  CHECK(d.feed(e2).empty());
  CHECK(d.feed(b82).empty());
  CHECK(d.has_pending());
  CHECK(d.feed(bac) == "\xE2\x82\xAC");
  // Unfinished at the end: one U+FFFD for the maximal prefix (HF's from_utf8_lossy).
  CHECK(d.feed(e2).empty());
  CHECK(d.feed(b82).empty());
  CHECK(d.finish() == "\xEF\xBF\xBD");
  // A byte that cannot continue the character: U+FFFD at once, then the new text.
  CHECK(d.feed(e2).empty());
  CHECK(d.feed(neox.token_to_id("A")) ==
        "\xEF\xBF\xBD"
        "A");

  // SentencePiece: each byte that cannot form a character is one U+FFFD.
  const Tokenizer& v3 = get("mistral_v3/file");
  StreamDecoder s(v3);
  CHECK(s.feed(v3.token_to_id("<0xE2>")).empty());
  CHECK(s.feed(v3.token_to_id("<0x82>")).empty());
  CHECK(s.feed(v3.token_to_id("\xE2\x96\x81the")) == "\xEF\xBF\xBD\xEF\xBF\xBD the");

  // The dummy-prefix space is dropped at the start of a text, kept when continuing one.
  const std::vector<int32_t> ids = v3.encode("Paris", false);  // "▁Paris"
  StreamDecoder fresh(v3);
  StreamDecoder continued(v3, false, /*text_start=*/false);
  std::string a, b;
  for (int32_t id : ids) a += fresh.feed(id), b += continued.feed(id);
  CHECK(a == "Paris");
  CHECK(b == " Paris");
}

TEST_CASE("utf8: repair modes") {
  using utf8::Repair;
  const std::string r = "\xEF\xBF\xBD";
  CHECK(utf8::repair("a\xE2\x82"
                     "b",
                     Repair::MaximalSubpart) == "a" + r + "b");
  CHECK(utf8::repair("a\xE2\x82"
                     "b",
                     Repair::PerByte) == "a" + r + r + "b");
  CHECK(utf8::repair("\xF0\x9F\x98", Repair::MaximalSubpart) == r);
  CHECK(utf8::repair("\xC0\xAF", Repair::MaximalSubpart) == r + r);          // overlong
  CHECK(utf8::repair("\xED\xA0\x80", Repair::MaximalSubpart) == r + r + r);  // surrogate
  CHECK(utf8::repair("\xF4\x90\x80\x80", Repair::MaximalSubpart) == r + r + r + r);
  CHECK(utf8::repair("ok \xF0\x9F\x98\x80", Repair::PerByte) == "ok \xF0\x9F\x98\x80");
  CHECK(utf8::is_valid("caf\xC3\xA9"));
  CHECK_FALSE(utf8::is_valid("caf\xC3"));
}

// ---- Unicode tables against the reference's -------------------------------------------------

// unicode_probe.json records, for every code point, the class HF's byte-level regex gives it,
// and the NFC output of three probes (alone, after U+0301, before U+0316) wherever NFC changes
// them (scripts/make_tokenizer_refs.py probe).
TEST_CASE("unicode: regex classes and NFC match the reference for every code point") {
  const json probe = json::parse(read_file(kFixtures / "unicode_probe.json"));
  std::vector<char> want_class(0x110000, '?');
  for (const auto& run : probe["classes"]) {
    for (int cp = run[0].get<int>(); cp <= run[1].get<int>(); ++cp) {
      want_class[cp] = run[2].get<std::string>()[0];
    }
  }
  size_t newer = 0, class_mismatches = 0;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const char mine = "LNSO"[static_cast<int>(unicode::char_class(cp))];
    if (mine == want_class[cp]) continue;
    // Letters and digits of Unicode versions newer than ICU's are unknown here.
    if (u_charType(static_cast<UChar32>(cp)) == U_UNASSIGNED && mine == 'O') {
      ++newer;
    } else if (class_mismatches++ < 5) {
      MESSAGE("class of U+" << std::hex << static_cast<uint32_t>(cp) << ": " << mine << " want "
                            << want_class[cp]);
    }
  }
  MESSAGE(newer << " code points are letters/digits only in the reference's newer Unicode (ICU "
                << U_UNICODE_VERSION << ")");
  CHECK(class_mismatches == 0);
  CHECK(newer < 6000);  // Unicode 15.1 and 16.0 additions

  std::map<std::string, std::map<int, std::string>> changed;
  for (const auto& [name, list] : probe["nfc_changed"].items()) {
    for (const auto& e : list) changed[name][e[0].get<int>()] = e[1].get<std::string>();
  }
  REQUIRE(changed.size() == 3);
  size_t nfc_mismatches = 0;
  std::string scratch;
  for (char32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string c;
    utf8::append(c, cp);
    const std::pair<const char*, std::string> probes[] = {
        {"alone", c}, {"after_acute", "x\xCC\x81" + c}, {"before_dot", "x" + c + "\xCC\x96"}};
    for (const auto& [name, text] : probes) {
      const auto it = changed[name].find(static_cast<int>(cp));
      const std::string want = it == changed[name].end() ? text : it->second;
      const std::string got(unicode::normalize(text, unicode::Normalization::NFC, scratch));
      if (got != want && nfc_mismatches++ < 5) {
        MESSAGE("NFC " << name << " U+" << std::hex << static_cast<uint32_t>(cp));
      }
    }
  }
  CHECK(nfc_mismatches == 0);
}

// ---- GGUF metadata handling --------------------------------------------------------------------

TEST_CASE("tokenizer: GGUF without a vocabulary, or with one we cannot reproduce") {
  auto open = [](const std::function<void(gguf::Writer&)>& fill, const std::string& name) {
    gguf::Writer w;
    w.set_str("general.architecture", "mamba");
    fill(w);
    const fs::path path = kTmp / name;
    w.write(path.string());
    return gguf::File::open(path.string());
  };
  CHECK(tokenizer_from_gguf(*open([](gguf::Writer&) {}, "tok_none.gguf")) == nullptr);
  CHECK(
      tokenizer_from_gguf(*open([](gguf::Writer& w) { w.set_str("tokenizer.ggml.model", "none"); },
                                "tok_none2.gguf")) == nullptr);
  CHECK_THROWS_AS(tokenizer_from_gguf(*open(
                      [](gguf::Writer& w) {
                        w.set_str("tokenizer.ggml.model", "bert");
                        w.set_str_array("tokenizer.ggml.tokens", {"a"});
                      },
                      "tok_bert.gguf")),
                  Error);
  CHECK_THROWS_WITH_AS(tokenizer_from_gguf(*open(
                           [](gguf::Writer& w) {
                             w.set_str("tokenizer.ggml.model", "gpt2");
                             w.set_str("tokenizer.ggml.pre", "llama-bpe");
                             w.set_str_array("tokenizer.ggml.tokens", {"a"});
                           },
                           "tok_pre.gguf")),
                       doctest::Contains("llama-bpe"), Error);
  CHECK_THROWS_AS(
      tokenizer_from_gguf(*open([](gguf::Writer& w) { w.set_str("tokenizer.ggml.model", "gpt2"); },
                                "tok_notokens.gguf")),
      Error);
}

TEST_CASE("tokenizer: a small hand-made BPE vocabulary in GGUF") {
  // Byte-level symbols for 'a', 'b', ' ' ('Ġ'); merges "a b" then "Ġ ab"; a special token; a
  // user-defined token stored decomposed (e + U+0301), matched after NFC ("olmo").
  std::vector<std::string> tokens = {"<eot>",
                                     "a",
                                     "b",
                                     "\xC4\xA0",
                                     "ab",
                                     "\xC4\xA0"
                                     "ab",
                                     "e\xCC\x81"};
  gguf::Writer w;
  w.set_str("tokenizer.ggml.model", "gpt2");
  w.set_str("tokenizer.ggml.pre", "olmo");
  w.set_str_array("tokenizer.ggml.tokens", tokens);
  w.set_i32_array("tokenizer.ggml.token_type", {3, 1, 1, 1, 1, 1, 4});
  w.set_str_array("tokenizer.ggml.merges", {"a b", "\xC4\xA0 ab"});
  w.set_u32("tokenizer.ggml.eos_token_id", 0);
  const fs::path path = kTmp / "tok_tiny.gguf";
  w.write(path.string());
  const auto tok = from_gguf_file(path);
  CHECK(tok->encode("ab ab<eot>ba", true) == std::vector<int32_t>{4, 5, 0, 2, 1});
  CHECK(tok->decode(std::vector<int32_t>{4, 5, 0, 2, 1}) == "ab abba");
  CHECK(tok->decode(std::vector<int32_t>{4, 5, 0, 2, 1}, true) == "ab ab<eot>ba");
  // 'c' is not in the alphabet and there is no unknown token: dropped, as HF does.
  CHECK(tok->encode("cab", false) == std::vector<int32_t>{4});
  // A whitespace-only token typed CONTROL (older converters did that) is not hidden.
  {
    gguf::Writer w2;
    w2.set_str("tokenizer.ggml.model", "gpt2");
    w2.set_str_array("tokenizer.ggml.tokens", {"<eot>", "a", "  "});
    w2.set_i32_array("tokenizer.ggml.token_type", {3, 1, 3});
    w2.set_str_array("tokenizer.ggml.merges", {});
    const fs::path p2 = kTmp / "tok_tiny_spaces.gguf";
    w2.write(p2.string());
    const auto t2 = from_gguf_file(p2);
    CHECK(t2->encode("a  a<eot>", false) == std::vector<int32_t>{1, 2, 1, 0});
    CHECK(t2->decode(std::vector<int32_t>{1, 2, 1, 0}) == "a  a");
  }
  // Both spellings of "é" normalise to U+00E9, and so does the token's content.
  CHECK(tok->encode("a\xC3\xA9"
                    "b",
                    false) == std::vector<int32_t>{1, 6, 2});
  CHECK(tok->encode("ae\xCC\x81"
                    "b",
                    false) == std::vector<int32_t>{1, 6, 2});
}

// ---- the command-line tool
// -----------------------------------------------------------------------

namespace {
std::string run_tool(const std::string& args) {
  std::string out;
  CHECK(run(std::string(MAMBA_BIN_DIR) + "/mamba-tokenize " + args, &out) == 0);
  return out;
}
}  // namespace

TEST_CASE("mamba-tokenize: --json ids and --decode round trip") {
  REQUIRE_TOKENIZER_FILES();
  const fs::path text_file = kTmp / "tok_cli_text.txt";
  const std::string text = "  Hello,\tw\xC3\xB6rld!\n\xF0\x9F\x98\x80 <|endoftext|>\n";
  std::ofstream(text_file, std::ios::binary) << text;
  const std::string neox = "--tokenizer " + neox_json().string();
  const std::string ids = run_tool(neox + " -f " + text_file.string() + " --json");
  CHECK(json::parse(ids).get<std::vector<int32_t>>() == get("neox/file").encode(text, true));
  CHECK(run_tool(neox + " --decode '" + ids.substr(0, ids.size() - 1) + "' --show-special") ==
        text);
  CHECK(run_tool(neox + " --decode 12092,1533") == "Hello world");
  CHECK(run_tool(neox + " --decode 12092,1533 --json") == "\"Hello world\"\n");

  const std::string v3 = "--tokenizer " + spm_model("mistral_v3").string();
  CHECK(run_tool(v3 + " -p 'Hello world' --json") == "[1,23325,2294]\n");
  CHECK(run_tool(v3 + " -p 'Hello world' --json --no-special") == "[23325,2294]\n");
  CHECK(run_tool(v3 + " -p 'Hello world' --json --no-bos --add-eos") == "[23325,2294,2]\n");
  CHECK(run_tool(v3 + " -p 'Hello world'") == "1\t<s>\n23325\t Hello\n2294\t world\n");
}
