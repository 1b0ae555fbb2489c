// The CUDA backend's prefill and decode entry points: prompts alone, in pieces or packed,
// and decode steps through captured graphs (the forward pass itself is in cuda_backend.cpp).
#include "cuda_backend_impl.h"

namespace mamba::cuda_detail {

void CudaBackend::prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
                          std::vector<float>& logits) {
  check_prefill(slot, tokens);
  const int64_t n = int64_t(tokens.size());
  const int64_t V = c_.n_vocab;
  logits.resize(size_t((all_logits ? n : 1) * V));
  // Long prompts go through in pieces; the state carries over between them exactly as it
  // would between the tokens of one piece.
  for (int64_t t0 = 0; t0 < n; t0 += max_rows_) {
    const int len = int(std::min<int64_t>(max_rows_, n - t0));
    const std::array<int32_t, 3> seq = {0, len, slot};
    CUDA_CHECK(cudaMemcpyAsync(seq_.data(), seq.data(), sizeof seq, cudaMemcpyHostToDevice,
                               stream_));
    CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), tokens.data() + t0, size_t(len) * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream_));
    prefill_batch_.n_tok = prefill_batch_.max_len = len;
    ShortPrefill short_pass(short_prefill_, len <= kShortPrefill);
    forward(len, /*decode=*/false);
    if (all_logits) {
      for (int r0 = 0; r0 < len; r0 += logit_rows_) {
        const int cnt = std::min(logit_rows_, len - r0);
        lm_head(r0, cnt, false);
        CUDA_CHECK(cudaMemcpyAsync(logits.data() + (t0 + r0) * V, logits_.data(),
                                   size_t(cnt) * size_t(V) * sizeof(float),
                                   cudaMemcpyDeviceToHost, stream_));
      }
    } else if (t0 + len == n) {
      lm_head(len - 1, 1, false);
      CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits_.data(), size_t(V) * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream_));
    }
    // The host arrays above must stay alive until their copies have run.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
}

void CudaBackend::prefill_batch(std::span<const int> slots,
                                std::span<const std::span<const int32_t>> prompts,
                                std::vector<float>& last_logits) {
  check_prefill_batch(slots, prompts);
  const size_t V = size_t(c_.n_vocab);
  last_logits.resize(prompts.size() * V);
  // Long prompts alone, as prefill() runs them (and short ones when a pass is too small to
  // hold one with its extra row); short ones in groups that fit one pass.
  const int max_seq = std::min(kMaxPacked, logit_rows_);
  const int max_rows = std::min(max_rows_, kMaxPackedRows);
  std::vector<size_t> group;
  int rows = 0;
  std::vector<float> one;
  for (size_t i = 0; i <= prompts.size(); i++) {
    const bool end = i == prompts.size();
    const int len = end ? 0 : int(prompts[i].size());
    if (!end && (len > kShortPrefill || len + 1 > max_rows)) {
      prefill(slots[i], prompts[i], /*all_logits=*/false, one);
      std::copy(one.begin(), one.begin() + std::ptrdiff_t(V),
                last_logits.begin() + std::ptrdiff_t(i * V));
      continue;
    }
    // Each packed prompt takes one more row: its last position, gathered for the LM head.
    if (!group.empty() && (end || int(group.size()) == max_seq || rows + len + 1 > max_rows)) {
      prefill_packed(slots, prompts, group, last_logits);
      group.clear();
      rows = 0;
    }
    if (end) break;
    group.push_back(i);
    rows += len + 1;
  }
}

void CudaBackend::prefill_packed(std::span<const int> slots,
                                 std::span<const std::span<const int32_t>> prompts,
                                 std::span<const size_t> idx, std::vector<float>& last_logits) {
  const int m = int(idx.size());
  const int64_t V = c_.n_vocab, DM = c_.d_model;
  // seq_: starts (m + 1), slots (m), each prompt's last row (m); tokens_: the prompts in order.
  std::vector<int32_t> table(3 * size_t(m) + 1);
  std::vector<int32_t> ids;
  int max_len = 0;
  for (int i = 0; i < m; i++) {
    const auto& p = prompts[idx[size_t(i)]];
    table[size_t(i)] = int32_t(ids.size());
    ids.insert(ids.end(), p.begin(), p.end());
    table[size_t(m + 1 + i)] = slots[idx[size_t(i)]];
    table[size_t(2 * m + 1 + i)] = int32_t(ids.size()) - 1;
    max_len = std::max(max_len, int(p.size()));
  }
  table[size_t(m)] = int32_t(ids.size());
  const int n = int(ids.size());
  CUDA_CHECK(cudaMemcpyAsync(seq_.data(), table.data(), table.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), ids.data(), ids.size() * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  prefill_batch_.n_seq = m;
  prefill_batch_.slots = seq_.as<int32_t>() + m + 1;
  prefill_batch_.n_tok = n;
  prefill_batch_.max_len = max_len;
  {
    ShortPrefill short_pass(short_prefill_, true);
    try {
      forward(n, /*decode=*/false);
      // Rows n .. n + m - 1 of xn_ = each prompt's last normed row, so that one LM head pass
      // (linear_decode, the same bits per row as one row alone) gives every prompt's logits.
      cuda::embedding(xn_.data(), gguf::DType::F32, n, DM, seq_.as<int32_t>() + 2 * m + 1, m,
                      xn_.as<float>() + int64_t(n) * DM, stream_);
      lm_head(n, m, false);
    } catch (...) {
      prefill_batch_.n_seq = 1;
      prefill_batch_.slots = seq_.as<int32_t>() + 2;
      throw;
    }
  }
  prefill_batch_.n_seq = 1;
  prefill_batch_.slots = seq_.as<int32_t>() + 2;
  float* host = host_logits_.as<float>();  // page-locked, (logit_rows_, n_vocab)
  CUDA_CHECK(cudaMemcpyAsync(host, logits_.data(), size_t(m) * size_t(V) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  // The host table and ids above must stay alive until their copies have run.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (int i = 0; i < m; i++)
    std::copy(host + int64_t(i) * V, host + int64_t(i + 1) * V,
              last_logits.begin() + std::ptrdiff_t(idx[size_t(i)] * size_t(V)));
}

// One decode step for the first n entries of tokens_/slots_, leaving logits in logits_.
void CudaBackend::decode_batch(int n) {
  const auto step = [&] {
    forward(n, /*decode=*/true);
    lm_head(0, n, true, rounded_input(output_, true, n).data != nullptr);
  };
  if (!copts_.graphs) {
    step();
    return;
  }
  auto it = graphs_.find(n);
  if (it == graphs_.end()) {
    // A batch size's first step runs as plain launches; its graph is captured on the second.
    // Under continuous batching the size changes whenever a sequence joins or leaves, and many
    // sizes occur for a single step: capturing and instantiating a graph costs several plain
    // steps' worth of host time. Graph and plain steps compute the same bits.
    if (plain_steps_[n]++ < 1) {
      step();
      return;
    }
    // Everything the step touches is a fixed buffer, so the graph stays valid for every later
    // step of this batch size: only the contents of tokens_ and slots_ change.
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      step();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    CUDA_CHECK(err);
    it = graphs_.emplace(n, exec).first;
  }
  CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void CudaBackend::step_rows(std::span<const int> slots, std::span<const int32_t> tokens,
                            int64_t b0, int nb) {
  // host_ids_: [tokens | slots | banned | picks], kMaxDecodeBatch each.
  int32_t* ids = host_ids_.as<int32_t>();
  for (int i = 0; i < nb; i++) {
    ids[i] = tokens[size_t(b0 + i)];
    ids[kMaxDecodeBatch + i] = slots[size_t(b0 + i)];
  }
  CUDA_CHECK(cudaMemcpyAsync(tokens_.data(), ids, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(slots_.data(), ids + kMaxDecodeBatch, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  decode_batch(nb);
}

void CudaBackend::decode_rows(std::span<const int> slots, std::span<const int32_t> tokens,
                              int64_t b0, int nb) {
  step_rows(slots, tokens, b0, nb);
  CUDA_CHECK(cudaMemcpyAsync(host_logits_.as<float>(), logits_.data(),
                             size_t(nb) * size_t(c_.n_vocab) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::decode(std::span<const int> slots, std::span<const int32_t> tokens,
                         std::vector<float>& logits) {
  check_decode(slots, tokens);
  const int64_t n = int64_t(tokens.size()), V = c_.n_vocab;
  logits.resize(size_t(n * V));
  const int max_batch = max_decode_batch();
  for (int64_t b0 = 0; b0 < n; b0 += max_batch) {
    const int nb = int(std::min<int64_t>(max_batch, n - b0));
    decode_rows(slots, tokens, b0, nb);
    std::memcpy(logits.data() + b0 * V, host_logits_.as<float>(),
                size_t(nb) * size_t(V) * sizeof(float));
  }
}

std::span<const float> CudaBackend::decode_view(std::span<const int> slots,
                                                std::span<const int32_t> tokens) {
  if (int64_t(tokens.size()) > max_decode_batch()) return Backend::decode_view(slots, tokens);
  check_decode(slots, tokens);
  if (tokens.empty()) return {};
  decode_rows(slots, tokens, 0, int(tokens.size()));
  return {host_logits_.as<float>(), tokens.size() * size_t(c_.n_vocab)};
}

// The same step as decode_view (step_rows: the persistent kernel or the per-kernel layers, from
// a graph or plain launches), then each row's pick from logits_ on the device, after the step
// in stream order; only the nb ids come back, through the page-locked host_ids_.
std::span<const int32_t> CudaBackend::decode_greedy(std::span<const int> slots,
                                                    std::span<const int32_t> tokens,
                                                    std::span<const int32_t> banned) {
  if (int64_t(tokens.size()) > max_decode_batch())
    return Backend::decode_greedy(slots, tokens, banned);
  check_decode(slots, tokens);
  check_banned(tokens, banned);
  if (tokens.empty()) return {};
  const int nb = int(tokens.size());
  int32_t* bans = host_ids_.as<int32_t>() + 2 * kMaxDecodeBatch;
  int32_t* picks = host_ids_.as<int32_t>() + 3 * kMaxDecodeBatch;
  std::copy(banned.begin(), banned.end(), bans);
  CUDA_CHECK(cudaMemcpyAsync(banned_.data(), bans, size_t(nb) * sizeof(int32_t),
                             cudaMemcpyHostToDevice, stream_));
  step_rows(slots, tokens, 0, nb);
  cuda::argmax_rows(logits_.as<float>(), c_.n_vocab, nb, int(c_.n_vocab), banned_.as<int32_t>(),
                    picks_.as<int32_t>(), stream_);
  CUDA_CHECK(cudaMemcpyAsync(picks, picks_.data(), size_t(nb) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, stream_));
  // The host copies above read and write host_ids_, which the next call rewrites.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return {picks, size_t(nb)};
}

}  // namespace mamba::cuda_detail
