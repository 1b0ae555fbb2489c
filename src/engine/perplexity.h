// Perplexity of a text under a model, in fixed-length chunks scored from a fresh state.
//
// The protocol (what mamba-perplexity prints and scripts/train_demo.py computes with
// transformers, so the two numbers can be compared):
//   * the text's ids, without BOS/EOS, are cut into consecutive chunks of `ctx` ids (the last
//     chunk may be shorter);
//   * each chunk runs from a zero state, with BOS in front when the model's tokenizer adds
//     one, so that every id of the chunk is predicted; without BOS the chunk's first id is
//     only context;
//   * NLL = -log softmax(logits)[next id] over the full vocabulary, in double precision;
//     ppl = exp(mean NLL over every predicted id of every chunk).
// Unlike llama-perplexity, which scores only the second half of each window, every token
// counts: a recurrent model has no window to warm up, and the result is one well-defined
// number to compare against a reference.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "backend/backend.h"

namespace mamba {

struct PerplexityOptions {
  int ctx = 512;        // ids per chunk (BOS not counted)
  int32_t bos_id = -1;  // put in front of each chunk; -1: none
  int max_chunks = 0;   // score at most this many chunks; 0: all
  int slot = 0;         // the backend state slot to use
  // Called after each chunk with its index, its mean NLL and the running perplexity.
  std::function<void(int chunk, double chunk_nll, double running_ppl)> on_chunk;
};

struct PerplexityResult {
  size_t n_chunks = 0;
  size_t n_scored = 0;            // predicted ids over all chunks
  double nll = 0;                 // mean NLL per predicted id (nats)
  double nll_stderr = 0;          // standard error of that mean, over ids
  double ppl = 0;                 // exp(nll)
  std::vector<double> chunk_nll;  // mean NLL of each chunk
  double seconds = 0;             // wall time of the prefills and the scoring
};

// Scores `ids` (the text's ids, no specials) as described above. Throws mamba::Error when
// there is nothing to score (no ids; one id and no BOS) or an option is out of range.
PerplexityResult perplexity(Backend& be, std::span<const int32_t> ids, const PerplexityOptions& o);

// -log softmax(logits)[target], in double precision.
double token_nll(std::span<const float> logits, int32_t target);

}  // namespace mamba
