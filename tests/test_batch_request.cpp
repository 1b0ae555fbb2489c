// The batch file line parser (engine/batch_request.h), the output records, and the recovery of
// an output file cut short by a kill.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/batch_request.h"
#include "test_util.h"

using namespace mamba;
using namespace mamba::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int32_t kVocab = 300;

BatchLine parse(const std::string& line, int64_t line_no = 1, const Request& d = Request{}) {
  return parse_batch_line(line, line_no, d, kVocab);
}

// The error a line gives: its message and the id it carries (null when unreadable).
struct Failure {
  std::string msg;
  json id;
};
Failure failure(const std::string& line, int64_t line_no = 5) {
  try {
    parse(line, line_no);
  } catch (const BatchLineError& e) {
    return {e.what(), e.id};
  }
  FAIL("no error for: " << line);
  return {};
}

}  // namespace

TEST_CASE("batch line: every key") {
  const BatchLine b = parse(
      R"({"id": "req-1", "prompt": "héllo ✓", "n_predict": 7, "temperature": 0.5, "seed": 18446744073709551615,
          "top_k": -1, "top_p": 0.9, "min_p": 0, "typical_p": 1, "repeat_penalty": 1.1,
          "repeat_last_n": -1, "presence_penalty": -0.5, "frequency_penalty": 2,
          "logit_bias": [[3, -1.5], [299, false]], "stop": ["\n\n", "END"], "ignore_eos": true})");
  CHECK(b.id == "req-1");
  const Request& q = b.request;
  CHECK(q.key == 0);
  CHECK_FALSE(q.has_prompt_ids);
  CHECK(q.prompt == "héllo ✓");
  CHECK(q.prompt_ids.empty());
  CHECK(q.n_predict == 7);
  const SamplerParams& p = q.sampling;
  CHECK(p.temp == 0.5f);
  CHECK(p.seed == 18446744073709551615ull);
  CHECK(p.top_k == -1);
  CHECK(p.top_p == 0.9f);
  CHECK(p.min_p == 0.0f);
  CHECK(p.typical_p == 1.0f);
  CHECK(p.repeat_penalty == 1.1f);
  CHECK(p.repeat_last_n == -1);
  CHECK(p.presence_penalty == -0.5f);
  CHECK(p.frequency_penalty == 2.0f);
  REQUIRE(p.logit_bias.size() == 2);
  CHECK(p.logit_bias[0] == std::pair<int32_t, float>{3, -1.5f});
  CHECK(p.logit_bias[1].first == 299);
  CHECK(p.logit_bias[1].second == -std::numeric_limits<float>::infinity());
  CHECK(q.stop == std::vector<std::string>{"\n\n", "END"});
  CHECK(q.ignore_eos);
  p.validate(kVocab);  // what the parser accepts the sampler accepts
}

TEST_CASE("batch line: ids, defaults and prompt_ids") {
  Request d;
  d.n_predict = 33;
  d.sampling.temp = 0.7f;
  d.sampling.seed = 99;
  d.stop = {"x", "y"};
  d.sampling.logit_bias = {{1, 2.0f}};
  d.ignore_eos = true;

  // No id: the line number. The defaults fill every key left out.
  BatchLine b = parse(R"({"prompt_ids": [0, 5, 299]})", 42, d);
  CHECK(b.id == 42);
  CHECK(b.request.has_prompt_ids);
  CHECK(b.request.prompt_ids == std::vector<int32_t>{0, 5, 299});
  CHECK(b.request.prompt.empty());
  CHECK(b.request.n_predict == 33);
  CHECK(b.request.sampling.temp == 0.7f);
  CHECK(b.request.sampling.seed == 99);
  CHECK(b.request.stop == d.stop);
  CHECK(b.request.ignore_eos);

  // Given stop / logit_bias replace the defaults; the object form of logit_bias.
  b = parse(R"({"id": 7, "prompt": "p", "stop": ["z"], "logit_bias": {"4": 1, "10": false}})", 3,
            d);
  CHECK(b.id == 7);
  CHECK(b.id.is_number_integer());
  CHECK(b.request.stop == std::vector<std::string>{"z"});
  REQUIRE(b.request.sampling.logit_bias.size() == 2);
  // Keys of a JSON object come back sorted as strings.
  CHECK(b.request.sampling.logit_bias[0] == std::pair<int32_t, float>{10, -INFINITY});
  CHECK(b.request.sampling.logit_bias[1] == std::pair<int32_t, float>{4, 1.0f});
  CHECK(parse(R"({"prompt": "p", "stop": []})", 1, d).request.stop.empty());

  // Ids are kept as given: a string that looks like a number stays a string, a float a float.
  CHECK(parse(R"({"id": "12", "prompt": "p"})").id == "12");
  CHECK(parse(R"({"id": 2.5, "prompt": "p"})").id == 2.5);
  CHECK(parse(R"({"id": -3, "prompt": "p"})").id == -3);
  CHECK(parse(R"({"id": "日本", "prompt": "p"})").id == "日本");
  // Whitespace around the object and a CRLF line end are fine.
  CHECK(parse("  {\"prompt\": \"p\"}\r", 9).id == 9);
  // n_vocab = 0 skips the vocabulary check.
  CHECK(parse_batch_line(R"({"prompt_ids": [100000]})", 1, Request{}, 0).request.prompt_ids[0] ==
        100000);
}

TEST_CASE("batch line: errors name the key and carry the id") {
  struct Case {
    std::string line;
    std::string expect;  // part of the message
    json id;             // the id the error carries (null: unreadable)
  };
  const json L = 5;  // the default id: the line number
  const std::vector<Case> cases = {
      {"not json", "not valid JSON", nullptr},
      {"{\"prompt\": \"a\"", "not valid JSON", nullptr},
      {"{\"prompt\": \"a\"} {}", "not valid JSON", nullptr},
      {"[1, 2]", "must be a JSON object", nullptr},
      {"\"text\"", "must be a JSON object", nullptr},
      {"   ", "the line is empty", nullptr},
      {"{\"prompt\": \"\xff\xfe\"}", "not valid UTF-8", nullptr},
      {"{\"prompt\": \"\xed\xa0\x80\"}", "not valid UTF-8", nullptr},  // an encoded surrogate
      {R"({"prompt": "\ud800"})", "not valid JSON", nullptr},          // a lone escaped one
      {R"({"id": true, "prompt": "p"})", "\"id\" must be a string or a number", nullptr},
      {R"({"id": null, "prompt": "p"})", "\"id\"", nullptr},
      {R"({"id": [1], "prompt": "p"})", "\"id\"", nullptr},
      {R"({"id": "x", "prompt": "p", "tempreature": 1})", "unknown key \"tempreature\"", "x"},
      {R"({"id": "x", "prompt": "p", "temp": 1})", "unknown key \"temp\"", "x"},
      {R"({"prompt": ""})", "\"prompt\" must be a non-empty string", L},
      {R"({"prompt": 5})", "\"prompt\" must be a non-empty string", L},
      {R"({"prompt": ["a"]})", "\"prompt\"", L},
      {R"({})", "no prompt", L},
      {R"({"id": 1})", "no prompt", 1},
      {R"({"prompt": "a", "prompt_ids": [1]})", "not both", L},
      {R"({"prompt_ids": []})", "\"prompt_ids\" must be a non-empty array", L},
      {R"({"prompt_ids": "1,2"})", "\"prompt_ids\"", L},
      {R"({"prompt_ids": [1, 300]})", "\"prompt_ids\" ids must be integers in [0, 300), got 300",
       L},
      {R"({"prompt_ids": [-1]})", "\"prompt_ids\"", L},
      {R"({"prompt_ids": [1.5]})", "\"prompt_ids\"", L},
      {R"({"prompt_ids": [1e3]})", "\"prompt_ids\"", L},
      {R"({"prompt_ids": [99999999999999999999]})", "\"prompt_ids\"", L},
      {R"({"prompt_ids": [[1]]})", "\"prompt_ids\"", L},
      {R"({"prompt": "p", "n_predict": -1})", "\"n_predict\" must be an integer >= 0", L},
      {R"({"prompt": "p", "n_predict": 2.0})", "\"n_predict\"", L},
      {R"({"prompt": "p", "n_predict": 2147483648})", "\"n_predict\"", L},
      {R"({"prompt": "p", "n_predict": "8"})", "\"n_predict\"", L},
      {R"({"prompt": "p", "temperature": -0.1})", "\"temperature\" must be a number >= 0", L},
      {R"({"prompt": "p", "temperature": "hot"})", "\"temperature\"", L},
      {R"({"prompt": "p", "temperature": null})", "\"temperature\"", L},
      {R"({"prompt": "p", "temperature": 1e39})", "\"temperature\"", L},
      {R"({"prompt": "p", "temperature": 1e999})", "not valid JSON", nullptr},  // overflow
      {R"({"prompt": "p", "seed": -1})", "\"seed\" must be an integer in [0, 2^64)", L},
      {R"({"prompt": "p", "seed": 1.5})", "\"seed\"", L},
      {R"({"prompt": "p", "seed": 18446744073709551616})", "\"seed\"", L},
      {R"({"prompt": "p", "top_k": 0.5})", "\"top_k\" must be an integer", L},
      {R"({"prompt": "p", "top_k": 3000000000})", "\"top_k\"", L},
      {R"({"prompt": "p", "top_p": 0})", "\"top_p\" must be a number in (0, 1]", L},
      {R"({"prompt": "p", "top_p": 1.5})", "\"top_p\"", L},
      {R"({"prompt": "p", "min_p": -0.1})", "\"min_p\" must be a number in [0, 1]", L},
      {R"({"prompt": "p", "typical_p": 0})", "\"typical_p\"", L},
      {R"({"prompt": "p", "repeat_penalty": 0})", "\"repeat_penalty\" must be a number > 0", L},
      {R"({"prompt": "p", "repeat_last_n": -2})", "\"repeat_last_n\"", L},
      {R"({"prompt": "p", "presence_penalty": true})", "\"presence_penalty\"", L},
      {R"({"prompt": "p", "frequency_penalty": "1"})", "\"frequency_penalty\"", L},
      {R"({"prompt": "p", "logit_bias": 5})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": [[1]]})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": [1, 2]})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": [[300, 1]]})", "\"logit_bias\" ids", L},
      {R"({"prompt": "p", "logit_bias": [[1, true]]})", "\"logit_bias\" biases", L},
      {R"({"prompt": "p", "logit_bias": [["hello", 1]]})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": {"abc": 1}})", "\"logit_bias\" object keys", L},
      {R"({"prompt": "p", "logit_bias": {"-1": 1}})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": {"300": 1}})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": {"99999999999": 1}})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "logit_bias": {"1": "x"}})", "\"logit_bias\"", L},
      {R"({"prompt": "p", "stop": "\n"})", "\"stop\" must be an array of non-empty strings", L},
      {R"({"prompt": "p", "stop": [""]})", "\"stop\"", L},
      {R"({"prompt": "p", "stop": [1]})", "\"stop\"", L},
      {R"({"prompt": "p", "ignore_eos": 1})", "\"ignore_eos\" must be true or false", L},
  };
  for (const Case& c : cases) {
    INFO("line: ", c.line);
    const Failure f = failure(c.line);
    CHECK(f.msg.find(c.expect) != std::string::npos);
    CHECK(f.id == c.id);
    CHECK(f.msg.find('\n') == std::string::npos);  // one line
  }
  // A shown value is cut short: the message stays one readable line.
  const Failure f = failure(R"({"prompt": "p", "stop": ")" + std::string(5000, 'a') + "\"}");
  CHECK(f.msg.size() < 200);
}

TEST_CASE("batch line: deep nesting is refused before parsing") {
  std::string deep = R"({"prompt": "p", "stop": )";
  for (int i = 0; i < 200000; i++) deep += '[';
  Failure f = failure(deep);
  CHECK(f.msg.find("nested more than 16 levels") != std::string::npos);
  CHECK(f.id.is_null());
  // Brackets inside strings do not count, escaped quotes included.
  const BatchLine b = parse(R"({"prompt": "[[[[[[[[[[[[[[[[[[[[\"[[[[[[[[[[[[[[[[[[[[["})");
  CHECK(b.request.prompt.size() == 42);
  // 16 levels is the limit itself: accepted up to the point where the type is wrong.
  std::string at_limit = R"({"prompt": "p", "stop": )";
  for (int i = 0; i < 15; i++) at_limit += '[';
  for (int i = 0; i < 15; i++) at_limit += ']';
  at_limit += '}';
  f = failure(at_limit);
  CHECK(f.msg.find("\"stop\" must be an array of non-empty strings") != std::string::npos);
}

TEST_CASE("batch records: result and error lines") {
  Result r;
  r.ids = {3, 1, 2};
  r.text = "a\n\"b\" ✓";
  r.finish_reason = "stop";
  r.n_prompt = 4;
  r.queue_ms = 1.23456789;
  r.prefill_ms = 2;
  r.decode_ms = 3.5;
  const std::string line = batch_result_line(json("x"), r);
  CHECK(line.find('\n') == std::string::npos);
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(line);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"id", "text", "ids", "finish_reason", "n_prompt",
                                         "n_predict", "timings"});
  CHECK(j["id"] == "x");
  CHECK(j["text"] == r.text);
  CHECK(j["ids"] == json({3, 1, 2}));
  CHECK(j["finish_reason"] == "stop");
  CHECK(j["n_prompt"] == 4);
  CHECK(j["n_predict"] == 3);
  CHECK(j["timings"]["queue_ms"] == 1.235);
  CHECK(j["timings"]["decode_ms"] == 3.5);

  json e = json::parse(batch_error_line(json(12), 3, "bad \"key\""));
  CHECK(e == json({{"id", 12}, {"line", 3}, {"error", "bad \"key\""}}));
  e = json::parse(batch_error_line(nullptr, 4, "not JSON"));
  CHECK(e == json({{"line", 4}, {"error", "not JSON"}}));
}

TEST_CASE("batch output recovery: the unfinished last line is cut off") {
  const fs::path dir = fs::path(MAMBA_TEST_TMP) / "batch_request";
  fs::create_directories(dir);
  const fs::path p = dir / "out.jsonl";

  // Missing file: nothing done.
  fs::remove(p);
  BatchDone d = recover_batch_output(p.string());
  CHECK(d.n_records == 0);
  CHECK_FALSE(d.has_id(json(1)));

  const std::string whole = R"({"id":"a","text":"x","ids":[1]})"
                            "\n"
                            R"({"id":2,"line":2,"error":"bad"})"
                            "\n"
                            R"({"line":7,"error":"not JSON"})"
                            "\n";
  { std::ofstream(p, std::ios::binary) << whole << R"({"id":"c","text":"trunc)"; }
  d = recover_batch_output(p.string());
  CHECK(d.n_records == 3);
  CHECK(d.cut_bytes == std::string(R"({"id":"c","text":"trunc)").size());
  CHECK(slurp(p) == whole);
  CHECK(d.has_id(json("a")));
  CHECK(d.has_id(json(2)));
  CHECK_FALSE(d.has_id(json("2")));  // a string id is not the number
  CHECK_FALSE(d.has_id(json("c")));
  CHECK(d.has_line(7));
  CHECK_FALSE(d.has_line(2));  // that record has an id: it is matched by id

  // A whole file is left as it is.
  d = recover_batch_output(p.string());
  CHECK(d.cut_bytes == 0);
  CHECK(slurp(p) == whole);

  // Only a partial line (killed while writing the first record): the file becomes empty.
  { std::ofstream(p, std::ios::binary) << R"({"id":1,"te)"; }
  d = recover_batch_output(p.string());
  CHECK(d.n_records == 0);
  CHECK(d.cut_bytes == 11);
  CHECK(fs::file_size(p) == 0);

  // A complete line that is not a record: an error, and the file is not touched.
  const std::string bad = whole + "garbage\n" + R"({"id":"z)";
  { std::ofstream(p, std::ios::binary) << bad; }
  CHECK_THROWS_WITH_AS(recover_batch_output(p.string()),
                       doctest::Contains("line 4 is not a JSON record"), Error);
  CHECK(slurp(p) == bad);
}
