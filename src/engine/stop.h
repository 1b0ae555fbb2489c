// Stop strings for streamed generation output.
//
// Generated text arrives in pieces (one token's worth at a time). A stop string may span
// pieces, so text that could still turn out to be the start of a stop string is held back
// until it is certain either way. Nothing from the first occurrence of a stop string on is
// ever returned, the stop string itself included.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mamba {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops = {});  // empty strings are rejected

  // Takes the next piece of text; returns the text that is now safe to show. After a stop
  // string completes, stopped() is true and further feeds return "".
  std::string feed(std::string_view piece);
  // The end of the stream: returns whatever was held back (when not stopped).
  std::string finish();

  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string that matched
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;     // text that may be the beginning of a stop string
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace mamba
