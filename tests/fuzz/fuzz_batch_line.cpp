// Fuzz target: one line of a mamba-batch JSONL file through parse_batch_line, then the output
// records written for it.
//
// Checked, beyond "no memory error, only mamba::Error escapes": a line the parser accepts
// gives a request the rest of the engine accepts too (SamplerParams::validate passes, exactly
// one prompt form, ids inside the vocabulary, no empty stop string, n_predict >= 0, the id a
// string or a number); an error carries a null, string or number id and a one-line message;
// the result and error records are single lines of JSON that give the id back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/error.h"
#include "engine/batch_request.h"

using namespace mamba;
using nlohmann::json;

namespace {

constexpr int32_t kVocab = 1000;

void check(bool ok) {
  if (!ok) std::abort();
}

// A record is one line of JSON whose "id" is `id` (absent when id is null).
void check_record(const std::string& line, const json& id) {
  check(line.find('\n') == std::string::npos);
  const json j = json::parse(line);  // throws (and so aborts the run) if it is not JSON
  check(j.is_object());
  if (id.is_null())
    check(!j.contains("id"));
  else
    check(j.at("id") == id);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  Request defaults;
  defaults.n_predict = 16;
  defaults.stop = {"\n\n"};
  try {
    const BatchLine b = parse_batch_line(line, 7, defaults, kVocab);
    const Request& q = b.request;
    check(b.id.is_string() || b.id.is_number());
    check(q.n_predict >= 0);
    if (q.has_prompt_ids) {
      check(!q.prompt_ids.empty() && q.prompt.empty());
      for (int32_t id : q.prompt_ids) check(id >= 0 && id < kVocab);
    } else {
      check(!q.prompt.empty() && q.prompt_ids.empty());
    }
    for (const std::string& s : q.stop) check(!s.empty());
    q.sampling.validate(kVocab);  // must not throw: the parser's ranges are the sampler's
    Result r;
    r.key = 1;
    r.ids = q.has_prompt_ids ? q.prompt_ids : std::vector<int32_t>{1, 2};
    r.text = q.has_prompt_ids ? std::string("x") : q.prompt;
    r.finish_reason = "length";
    check_record(batch_result_line(b.id, r), b.id);
  } catch (const BatchLineError& e) {
    check(e.id.is_null() || e.id.is_string() || e.id.is_number());
    const std::string msg = e.what();
    check(!msg.empty() && msg.find('\n') == std::string::npos);
    check_record(batch_error_line(e.id, 7, msg), e.id);
  }
  return 0;
}
