#include "engine/batch_request.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "tokenizer/utf8.h"

namespace mamba {

using nlohmann::json;

namespace {

constexpr const char* kKeys =
    "id, prompt, prompt_ids, n_predict, temperature, seed, top_k, top_p, min_p, typical_p, "
    "repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, logit_bias, stop, "
    "ignore_eos";

// A value as it appears in the line, shortened for an error message.
std::string show(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Collects the line's id so that every error raised while reading its keys carries it.
struct Reader {
  json id;  // null until known

  [[noreturn]] void bad(const std::string& key, const std::string& what, const json& v) const {
    throw BatchLineError("\"" + key + "\" " + what + ", got " + show(v), id);
  }
  [[noreturn]] void bad(const std::string& msg) const { throw BatchLineError(msg, id); }

  int64_t integer(const std::string& key, const json& v, int64_t lo, int64_t hi,
                  const char* what) const {
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(hi)) bad(key, what, v);
      return int64_t(u);
    }
    if (!v.is_number_integer()) bad(key, what, v);
    const int64_t i = v.get<int64_t>();
    if (i < lo || i > hi) bad(key, what, v);
    return i;
  }

  // A number that fits a float. ok(x) says whether the value is in range.
  template <class Ok>
  float number(const std::string& key, const json& v, Ok ok, const char* what) const {
    if (!v.is_number()) bad(key, what, v);
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > double(FLT_MAX)) bad(key, what, v);
    const float f = float(d);
    if (!ok(f)) bad(key, what, v);
    return f;
  }

  int32_t token_id(const std::string& key, const json& v, int32_t n_vocab) const {
    const int64_t hi = n_vocab > 0 ? int64_t(n_vocab) - 1 : int64_t(INT32_MAX);
    const std::string what = n_vocab > 0
                                 ? "ids must be integers in [0, " + std::to_string(n_vocab) + ")"
                                 : "ids must be integers >= 0";
    return int32_t(integer(key, v, 0, hi, what.c_str()));
  }
};

// The deepest nesting of arrays and objects in `s`, stopping early past `limit`. Checked
// before parsing, so that a line of a million '[' costs nothing.
int nesting_depth(std::string_view s, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char ch : s) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
      continue;
    }
    if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (ch == ']' || ch == '}') {
      depth--;
    }
  }
  return deepest;
}

void parse_logit_bias(Reader& rd, const json& v, int32_t n_vocab,
                      std::vector<std::pair<int32_t, float>>& out) {
  const std::string key = "logit_bias";
  out.clear();
  // A bias is a number, or false for "never pick this token".
  const auto bias = [&](const json& b) -> float {
    if (b.is_boolean() && !b.get<bool>()) return -std::numeric_limits<float>::infinity();
    return rd.number(
        key, b, [](float) { return true; }, "biases must be numbers or false");
  };
  if (v.is_array()) {
    for (const json& pair : v) {
      if (!pair.is_array() || pair.size() != 2)
        rd.bad(key, "must be [[id, bias], ...] or {\"id\": bias, ...}", pair);
      out.emplace_back(rd.token_id(key, pair[0], n_vocab), bias(pair[1]));
    }
  } else if (v.is_object()) {
    for (const auto& [k, b] : v.items()) {
      // The id is a JSON string here: decimal digits only.
      if (k.empty() || k.size() > 10 || k.find_first_not_of("0123456789") != std::string::npos)
        rd.bad(key, "object keys must be token ids", json(k));
      const int64_t id = std::stoll(k);
      if (id > INT32_MAX || (n_vocab > 0 && id >= n_vocab))
        rd.bad(key, "ids must be in [0, " + std::to_string(n_vocab) + ")", json(k));
      out.emplace_back(int32_t(id), bias(b));
    }
  } else {
    rd.bad(key, "must be [[id, bias], ...] or {\"id\": bias, ...}", v);
  }
}

}  // namespace

bool is_blank_line(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

BatchLine parse_batch_line(std::string_view line, int64_t line_no, const Request& defaults,
                           int32_t n_vocab) {
  Reader rd;
  if (is_blank_line(line)) rd.bad("the line is empty");
  if (!utf8::is_valid(line)) rd.bad("the line is not valid UTF-8 (JSON text must be UTF-8)");
  if (nesting_depth(line, kMaxBatchLineDepth) > kMaxBatchLineDepth)
    rd.bad("the line is nested more than " + std::to_string(kMaxBatchLineDepth) + " levels deep");
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    // "[json.exception.parse_error.101] parse error at ..." without the bracketed tag.
    std::string msg = e.what();
    if (const size_t at = msg.find("] "); msg.rfind("[json.", 0) == 0 && at != std::string::npos)
      msg = msg.substr(at + 2);
    rd.bad("not valid JSON: " + msg);
  }
  if (!j.is_object()) rd.bad("a line must be a JSON object, got " + show(j));

  BatchLine out;
  if (const auto it = j.find("id"); it != j.end()) {
    if (!it->is_string() && !it->is_number()) rd.bad("id", "must be a string or a number", *it);
    rd.id = *it;
  } else {
    rd.id = line_no;
  }
  out.id = rd.id;

  Request& q = out.request;
  q = defaults;
  q.key = 0;
  SamplerParams& sp = q.sampling;
  bool have_prompt = false, have_ids = false;
  for (const auto& [key, v] : j.items()) {
    if (key == "id") {
      continue;
    } else if (key == "prompt") {
      if (!v.is_string() || v.get_ref<const std::string&>().empty())
        rd.bad(key, "must be a non-empty string", v);
      q.prompt = v.get<std::string>();
      have_prompt = true;
    } else if (key == "prompt_ids") {
      if (!v.is_array() || v.empty()) rd.bad(key, "must be a non-empty array of token ids", v);
      q.prompt_ids.clear();
      for (const json& e : v) q.prompt_ids.push_back(rd.token_id(key, e, n_vocab));
      have_ids = true;
    } else if (key == "n_predict") {
      q.n_predict = int(rd.integer(key, v, 0, INT32_MAX, "must be an integer >= 0"));
    } else if (key == "temperature") {
      sp.temp = rd.number(
          key, v, [](float f) { return f >= 0; }, "must be a number >= 0");
    } else if (key == "seed") {
      if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
        rd.bad(key, "must be an integer in [0, 2^64)", v);
      sp.seed = v.get<uint64_t>();
    } else if (key == "top_k") {
      sp.top_k = int32_t(rd.integer(key, v, INT32_MIN, INT32_MAX, "must be an integer"));
    } else if (key == "top_p") {
      sp.top_p = rd.number(
          key, v, [](float f) { return f > 0 && f <= 1; }, "must be a number in (0, 1]");
    } else if (key == "min_p") {
      sp.min_p = rd.number(
          key, v, [](float f) { return f >= 0 && f <= 1; }, "must be a number in [0, 1]");
    } else if (key == "typical_p") {
      sp.typical_p = rd.number(
          key, v, [](float f) { return f > 0 && f <= 1; }, "must be a number in (0, 1]");
    } else if (key == "repeat_penalty") {
      sp.repeat_penalty = rd.number(
          key, v, [](float f) { return f > 0; }, "must be a number > 0");
    } else if (key == "repeat_last_n") {
      sp.repeat_last_n = int32_t(
          rd.integer(key, v, -1, INT32_MAX, "must be an integer >= -1 (-1 = all, 0 = off)"));
    } else if (key == "presence_penalty") {
      sp.presence_penalty = rd.number(
          key, v, [](float) { return true; }, "must be a number");
    } else if (key == "frequency_penalty") {
      sp.frequency_penalty = rd.number(
          key, v, [](float) { return true; }, "must be a number");
    } else if (key == "logit_bias") {
      parse_logit_bias(rd, v, n_vocab, sp.logit_bias);
    } else if (key == "stop") {
      if (!v.is_array()) rd.bad(key, "must be an array of non-empty strings", v);
      q.stop.clear();
      for (const json& s : v) {
        if (!s.is_string() || s.get_ref<const std::string&>().empty())
          rd.bad(key, "must be an array of non-empty strings", s);
        q.stop.push_back(s.get<std::string>());
      }
    } else if (key == "ignore_eos") {
      if (!v.is_boolean()) rd.bad(key, "must be true or false", v);
      q.ignore_eos = v.get<bool>();
    } else {
      rd.bad("unknown key " + show(json(key)) + " (known keys: " + kKeys + ")");
    }
  }
  if (have_prompt == have_ids) {
    rd.bad(have_prompt ? "give either \"prompt\" or \"prompt_ids\", not both"
                       : "the line has no prompt: give \"prompt\" (text) or \"prompt_ids\"");
  }
  q.has_prompt_ids = have_ids;
  if (have_ids)
    q.prompt.clear();
  else
    q.prompt_ids.clear();
  return out;
}

// ---- output records ---------------------------------------------------------------------

namespace {
// Generated text is always valid UTF-8 (StreamDecoder), ids are as given; `replace` only
// guards the output against ever throwing.
std::string dump_line(const nlohmann::ordered_json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}
}  // namespace

std::string batch_result_line(const json& id, const Result& r) {
  nlohmann::ordered_json j;
  j["id"] = id;
  j["text"] = r.text;
  j["ids"] = r.ids;
  j["finish_reason"] = r.finish_reason;
  j["n_prompt"] = r.n_prompt;
  j["n_predict"] = r.ids.size();
  const auto ms = [](double v) { return std::round(v * 1000.0) / 1000.0; };  // to the microsecond
  j["timings"] = {{"queue_ms", ms(r.queue_ms)},
                  {"prefill_ms", ms(r.prefill_ms)},
                  {"decode_ms", ms(r.decode_ms)}};
  return dump_line(j);
}

std::string batch_error_line(const json& id, int64_t line_no, const std::string& error) {
  nlohmann::ordered_json j;
  if (!id.is_null()) j["id"] = id;
  j["line"] = line_no;
  j["error"] = error;
  return dump_line(j);
}

bool BatchDone::has_id(const json& id) const {
  return std::binary_search(ids.begin(), ids.end(), id.dump());
}

bool BatchDone::has_line(int64_t line_no) const {
  return std::binary_search(lines.begin(), lines.end(), line_no);
}

BatchDone recover_batch_output(const std::string& path) {
  BatchDone done;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    if (access(path.c_str(), F_OK) != 0) return done;  // nothing written yet
    fail("cannot read ", path, " to resume it");
  }
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string data = ss.str();
  const size_t end = data.rfind('\n') == std::string::npos ? 0 : data.rfind('\n') + 1;
  // Every complete line is checked before the file is changed.
  size_t line_no = 0;
  for (size_t a = 0; a < end;) {
    const size_t b = data.find('\n', a);
    const std::string_view line(data.data() + a, b - a);
    a = b + 1;
    line_no++;
    if (is_blank_line(line)) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
    }
    if (!j.is_object())
      fail(path, " line ", line_no,
           " is not a JSON record; this is not an output file of "
           "mamba-batch, or it was edited: fix or remove that line to resume");
    done.n_records++;
    if (const auto id = j.find("id"); id != j.end())
      done.ids.push_back(id->dump());
    else if (const auto l = j.find("line"); l != j.end() && l->is_number_integer())
      done.lines.push_back(l->get<int64_t>());
  }
  std::sort(done.ids.begin(), done.ids.end());
  std::sort(done.lines.begin(), done.lines.end());
  if (end < data.size()) {
    if (truncate(path.c_str(), off_t(end)) != 0)
      fail("cannot cut the unfinished last line off ", path, ": ", std::strerror(errno));
    done.cut_bytes = data.size() - end;
  }
  return done;
}

}  // namespace mamba
