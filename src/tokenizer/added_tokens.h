// Added tokens (special tokens like <|endoftext|> and extra vocabulary like NeoX's runs of
// spaces) are cut out of the text before pre-tokenization, as HF tokenizers does: scanning
// left to right, the leftmost position where any token matches wins, and among the tokens
// matching there the longest. lstrip / rstrip widen a match over adjacent White_Space.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mamba {

class AddedTokenMatcher {
 public:
  void add(std::string_view content, int32_t id, bool lstrip = false, bool rstrip = false);
  bool empty() const { return patterns_ == 0; }

  struct Piece {
    std::string_view text;
    int32_t id;  // -1: plain text that no token matched
  };
  // Splits `text` into plain pieces and matched tokens, in order; empty plain pieces are
  // dropped. A matched piece's text includes any whitespace that lstrip/rstrip absorbed.
  void split(std::string_view text, std::vector<Piece>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // byte -> child node
    int32_t token = -1;                                   // index into tokens_, or -1
  };
  struct Token {
    int32_t id;
    bool lstrip, rstrip;
  };
  // Length of the longest token matching at text[pos] (0 if none); sets *token.
  size_t longest_match(std::string_view text, size_t pos, int32_t* token) const;

  std::vector<Node> nodes_{Node{}};
  std::vector<Token> tokens_;
  bool first_byte_[256] = {};
  size_t patterns_ = 0;
};

}  // namespace mamba
