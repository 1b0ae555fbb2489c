// One line of a batch file (JSONL) -> one generation Request.
//
// A line is a JSON object. Every key is optional except the prompt (exactly one of "prompt"
// and "prompt_ids"); a key left out takes the value in `defaults` (mamba-batch's command
// line). Keys, with the command-line flag that sets their default:
//
//   id                 string or number, kept as given; absent: the line number (1-based)
//   prompt             non-empty string (needs the model's tokenizer)
//   prompt_ids         non-empty array of token ids in [0, n_vocab)
//   n_predict          integer >= 0                                  -n
//   temperature        number >= 0 (0 = greedy)                      --temp
//   seed               integer in [0, 2^64)                          -s / --seed
//   top_k              integer (<= 0 = off)                          --top-k
//   top_p              number in (0, 1]                              --top-p
//   min_p              number in [0, 1]                              --min-p
//   typical_p          number in (0, 1]                              --typical
//   repeat_penalty     number > 0                                    --repeat-penalty
//   repeat_last_n      integer >= -1 (-1 = all, 0 = off)             --repeat-last-n
//   presence_penalty   number                                        --presence-penalty
//   frequency_penalty  number                                        --frequency-penalty
//   logit_bias         [[id, bias], ...] or {"id": bias, ...}; bias a number, or false for
//                      "never" (-inf), as llama.cpp's server       --logit-bias
//   stop               array of non-empty strings                    --stop
//   ignore_eos         bool                                          --ignore-eos
//
// "stop" and "logit_bias" given in a line replace the defaults, they do not add to them.
// Anything else is an error that names the key: an unknown key, a wrong type, a value out of
// range, a line that is not a JSON object, not valid UTF-8 (JSON text is UTF-8; a line is
// rejected rather than repaired, so the prompt the model sees is always the one written), or
// nested deeper than kMaxBatchLineDepth.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/error.h"
#include "engine/scheduler.h"

namespace mamba {

inline constexpr int kMaxBatchLineDepth = 16;  // arrays/objects inside arrays/objects

struct BatchLine {
  nlohmann::json id;  // as given (string or number), or the line number
  Request request;    // Request::key is left at 0 for the caller to set
};

// The error for a line that cannot be used. `id` is the line's id when it could be read (the
// one given, or the line number when none is given), null when it could not (not JSON, not
// an object, an id of the wrong type).
class BatchLineError : public Error {
 public:
  BatchLineError(const std::string& msg, nlohmann::json id_) : Error(msg), id(std::move(id_)) {}
  nlohmann::json id;
};

// Parses line number `line_no` (1-based, used as the default id). n_vocab > 0 checks
// prompt_ids and logit_bias ids against the vocabulary; 0 skips that check. Throws
// BatchLineError.
BatchLine parse_batch_line(std::string_view line, int64_t line_no, const Request& defaults,
                           int32_t n_vocab);

// True for a line holding only spaces, tabs and a trailing '\r' (skipped in batch files).
bool is_blank_line(std::string_view line);

// ---- output records ---------------------------------------------------------------------

// One output line (no '\n'): {"id", "text", "ids", "finish_reason", "n_prompt", "n_predict",
// "timings": {"queue_ms", "prefill_ms", "decode_ms"}} for a completed request.
std::string batch_result_line(const nlohmann::json& id, const Result& r);
// {"id", "line", "error"} for a line or request that could not run; `id` null leaves "id" out
// (a line whose id could not be read, or whose id belongs to an earlier line).
std::string batch_error_line(const nlohmann::json& id, int64_t line_no, const std::string& error);

// What an existing output file already holds, for --resume.
struct BatchDone {
  std::vector<std::string> ids;  // id.dump() of every record with an "id", sorted
  std::vector<int64_t> lines;    // "line" of every record without an "id", sorted
  size_t n_records = 0;          // complete lines read
  uint64_t cut_bytes = 0;        // bytes of an unfinished last line that were cut off
  bool has_id(const nlohmann::json& id) const;
  bool has_line(int64_t line_no) const;
};
// Reads `path` (a missing file holds nothing). A last line without its '\n' (the process was
// killed while writing it) is cut off the file itself, so that appending continues with
// whole lines. Throws mamba::Error when a complete line is not a JSON object: the file is
// then not one this tool wrote, and nothing is changed.
BatchDone recover_batch_output(const std::string& path);

}  // namespace mamba
