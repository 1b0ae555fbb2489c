// StopMatcher: stop strings over streamed text pieces.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "engine/stop.h"

using mamba::StopMatcher;

namespace {

// Feeds the pieces in order; returns what each feed released (finish() appended as a last
// entry when the stream did not stop).
std::vector<std::string> stream(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const std::string& p : pieces) out.push_back(m.feed(p));
  if (!m.stopped()) out.push_back(m.finish());
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += x;
  return s;
}

}  // namespace

TEST_CASE("no stop strings: every piece passes through at once") {
  StopMatcher m;
  CHECK(m.empty());
  CHECK(stream(m, {"ab", "c", ""}) == std::vector<std::string>{"ab", "c", "", ""});
  CHECK_FALSE(m.stopped());
}

TEST_CASE("a stop string spanning pieces") {
  StopMatcher m({"STOP"});
  CHECK(m.feed("hello ST") == "hello ");  // "ST" may begin STOP: held
  CHECK_FALSE(m.stopped());
  CHECK(m.feed("O") == "");
  CHECK(m.feed("P and more") == "");
  CHECK(m.stopped());
  CHECK(m.matched() == "STOP");
  CHECK(m.feed("after") == "");  // nothing once stopped
  CHECK(m.finish() == "");
}

TEST_CASE("held-back text is released when it turns out not to be a stop") {
  StopMatcher m({"STOP"});
  CHECK(m.feed("a S") == "a ");
  CHECK(m.feed("TO") == "");
  CHECK(m.feed("NE") == "STONE");  // STO + N: not STOP after all
  CHECK(m.feed("ST") == "");
  CHECK(m.feed("S") == "ST");      // "STS": the last S may still begin STOP, "ST" goes
  CHECK(m.feed("x") == "Sx");
  CHECK_FALSE(m.stopped());
  // finish() releases a held prefix at the end of the stream.
  CHECK(m.feed("end ST") == "end ");
  CHECK(m.finish() == "ST");
  CHECK_FALSE(m.stopped());
}

TEST_CASE("the earliest of several stops wins") {
  StopMatcher m({"world", "lo w", "xyz"});
  CHECK(joined(stream(m, {"hel", "lo world"})) == "hel");
  CHECK(m.matched() == "lo w");

  // Both complete in one piece: the earlier position, not the earlier entry in the list.
  StopMatcher m2({"cd", "b"});
  CHECK(m2.feed("abcd") == "a");
  CHECK(m2.matched() == "b");

  // At the same position the longer one is reported.
  StopMatcher m3({"\n", "\n\n"});
  CHECK(m3.feed("x\n\ny") == "x");
  CHECK(m3.matched() == "\n\n");

  // Held back for one stop while another completes later in the same text.
  StopMatcher m4({"abc", "bx"});
  CHECK(m4.feed("ab") == "");
  CHECK(m4.feed("x") == "a");
  CHECK(m4.matched() == "bx");
}

TEST_CASE("a stop at the very start") {
  StopMatcher m({"<|end|>"});
  CHECK(m.feed("<|end|>tail") == "");
  CHECK(m.stopped());
  StopMatcher m2({"<|end|>"});
  CHECK(m2.feed("<|") == "");
  CHECK(m2.feed("end|>") == "");
  CHECK(m2.stopped());
}

TEST_CASE("multi-byte UTF-8 stop strings") {
  // "→" is E2 86 92, "é" is C3 A9: pieces are whole characters, comparison is by bytes.
  StopMatcher m({"é→"});
  CHECK(m.feed("café") == "caf");  // "é" begins the stop: held
  CHECK(m.feed("!") == "é!");
  CHECK(m.feed("é") == "");
  CHECK(m.feed("→ done") == "");
  CHECK(m.stopped());
  CHECK(m.matched() == "é→");

  // A stop sharing a lead byte with the text (é = C3 A9, à = C3 A0): no false hold of a
  // partial character, and the released text is valid UTF-8 ending before the held part.
  StopMatcher m2({"àb"});
  CHECK(m2.feed("éà") == "é");
  CHECK(m2.feed("c") == "àc");
  CHECK(joined(stream(m2, {"xà", "b"})) == "x");
  CHECK(m2.stopped());
}

TEST_CASE("finish() releases held text; the whole output equals the input when no stop matches") {
  StopMatcher m({"abcdef"});
  const std::vector<std::string> pieces = {"xx a", "bc", "de", "g ab", "cde"};
  const auto out = stream(m, pieces);
  CHECK(out.back() == "abcde");  // held at the end, released by finish()
  CHECK(joined(out) == joined(pieces));
  CHECK(m.finish() == "");       // nothing held twice
}

TEST_CASE("an empty stop string is rejected") {
  CHECK_THROWS_AS(StopMatcher({""}), mamba::Error);
  CHECK_THROWS_AS(StopMatcher({"ok", ""}), mamba::Error);
  CHECK_NOTHROW(StopMatcher({"ok"}));
}
