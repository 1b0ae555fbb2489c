// The CPU block loop: embedding, n_layer residual blocks, final norm and LM head.
//
//   h = token_embd[ids]                        (T, d_model), float32 residual stream
//   for each layer:
//     h = h + Mixer(RMSNorm(h) * attn_norm)    Mamba-1 or Mamba-2 mixer
//   logits = output(RMSNorm(h) * output_norm)  only for the rows that need logits
//
// A forward pass takes any set of sequences at once: a prompt is one sequence of many rows,
// a batched decode step is many sequences of one row each. The matmuls see all rows
// together; the conv and scan walk each sequence's rows in order from its slot's state.
#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "backend/cpu/ops.h"
#include "common/error.h"
#include "common/half.h"

namespace mamba::cpu {

CpuBackend::CpuBackend(const Model& model, int n_threads, int n_slots, bool chunked_scan)
    : model_(model), c_(model.config()), pool_(n_threads), chunked_scan_(chunked_scan) {
  if (n_slots < 1 || n_slots > 4096) fail("n_slots = ", n_slots, " is out of range (1..4096)");
  const int64_t CD = c_.conv_dim();
  try {
    slots_.resize(size_t(n_slots));
    for (SlotState& s : slots_) {
      s.conv.assign(size_t(c_.n_layer * (c_.d_conv - 1) * CD), 0.0f);
      s.ssm.assign(size_t(c_.n_layer * c_.d_inner * c_.d_state), 0.0f);
    }
  } catch (const std::bad_alloc&) {
    fail("not enough memory for ", n_slots, " state slots of ", c_.state_bytes(), " bytes");
  }
  // conv1d weights transposed to (d_conv, conv_dim): one tap for W neighbouring channels is
  // then one vector load.
  conv_w_t_.resize(size_t(c_.n_layer));
  for (int64_t il = 0; il < c_.n_layer; il++) {
    const std::vector<float>& w = model.layers[size_t(il)].conv_w;  // (conv_dim, d_conv)
    std::vector<float>& wt = conv_w_t_[size_t(il)];
    wt.resize(w.size());
    for (int64_t ch = 0; ch < CD; ch++)
      for (int64_t k = 0; k < c_.d_conv; k++)
        wt[size_t(k * CD + ch)] = w[size_t(ch * c_.d_conv + k)];
  }
}

// ---- slots ----------------------------------------------------------------------------------

void CpuBackend::reset_slot(int slot) {
  check_slot(slot);
  std::fill(slots_[size_t(slot)].conv.begin(), slots_[size_t(slot)].conv.end(), 0.0f);
  std::fill(slots_[size_t(slot)].ssm.begin(), slots_[size_t(slot)].ssm.end(), 0.0f);
}

void CpuBackend::copy_slot(int src, int dst) {
  check_slot(src);
  check_slot(dst);
  if (src != dst) slots_[size_t(dst)] = slots_[size_t(src)];
}

void CpuBackend::save_slot(int slot, std::vector<uint8_t>& out) {
  check_slot(slot);
  const SlotState& s = slots_[size_t(slot)];
  out.resize(state_bytes());
  std::memcpy(out.data(), s.conv.data(), s.conv.size() * 4);
  std::memcpy(out.data() + s.conv.size() * 4, s.ssm.data(), s.ssm.size() * 4);
}

void CpuBackend::load_slot(int slot, std::span<const uint8_t> in) {
  check_slot(slot);
  if (in.size() != state_bytes())
    fail("saved state has ", in.size(), " bytes, expected ", state_bytes(), " for this model");
  SlotState& s = slots_[size_t(slot)];
  std::memcpy(s.conv.data(), in.data(), s.conv.size() * 4);
  std::memcpy(s.ssm.data(), in.data() + s.conv.size() * 4, s.ssm.size() * 4);
}

// ---- compute --------------------------------------------------------------------------------

void CpuBackend::ensure_scratch(int64_t T) {
  if (T <= scratch_rows_) return;
  const auto n = [T](int64_t cols) { return size_t(T * cols); };
  s_.xn.resize(n(c_.d_model));
  s_.proj.resize(n(c_.in_proj_rows()));
  s_.xc.resize(n(c_.conv_dim()));
  if (c_.arch == Arch::Mamba1) {
    s_.dbl.resize(n(c_.dt_rank + 2 * c_.d_state));
    s_.dt.resize(n(c_.d_inner));
  }
  s_.y.resize(n(c_.d_inner));
  h_.resize(n(c_.d_model));
  scratch_rows_ = T;
}

// Row r of an embedding-like matrix as float32.
static void matrix_row(const Matrix& m, int64_t r, float* out) {
  const uint8_t* p = static_cast<const uint8_t*>(m.data);
  switch (m.dtype) {
    case gguf::DType::F32:
      std::memcpy(out, p + r * m.cols * 4, size_t(m.cols) * 4);
      break;
    case gguf::DType::F16:
    case gguf::DType::BF16: {
      const uint16_t* q = reinterpret_cast<const uint16_t*>(p) + r * m.cols;
      for (int64_t i = 0; i < m.cols; i++)
        out[i] = m.dtype == gguf::DType::F16 ? f16_to_f32(q[i]) : bf16_to_f32(q[i]);
      break;
    }
  }
}

void CpuBackend::forward(std::span<const int32_t> tokens, std::span<const Seq> seqs,
                         std::span<const int64_t> out_rows, float* logits_out) {
  const int64_t T = int64_t(tokens.size()), DM = c_.d_model;
  ensure_scratch(T);
  float* h = h_.data();      // (T, d_model)
  float* xn = s_.xn.data();  // (T, d_model)

  // hidden_states = self.embeddings(input_ids)
  for (int64_t t = 0; t < T; t++) matrix_row(model_.token_embd, tokens[size_t(t)], h + t * DM);

  for (int il = 0; il < int(c_.n_layer); il++) {
    const LayerWeights& w = model_.layers[size_t(il)];
    // residual = hidden_states; hidden_states = self.norm(hidden_states)
    pool_.parallel_for(T, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++)
        rmsnorm(h + t * DM, DM, w.attn_norm.data(), c_.norm_eps, xn + t * DM);
    });
    // hidden_states = residual + self.mixer(hidden_states)
    const LayerArgs args{.pool = pool_,
                         .c = c_,
                         .w = w,
                         .conv_w_t = conv_w_t_[size_t(il)].data(),
                         .il = il,
                         .T = T,
                         .seqs = seqs,
                         .s = s_,
                         .chunked_scan = chunked_scan_};
    if (c_.arch == Arch::Mamba1)
      mamba1_layer(args, h);
    else
      mamba2_layer(args, h);
  }

  // hidden_states = self.norm_f(hidden_states); logits = self.lm_head(hidden_states)
  const int64_t n_out = int64_t(out_rows.size());
  if (n_out == 0) return;
  for (int64_t i = 0; i < n_out; i++)
    rmsnorm(h + out_rows[size_t(i)] * DM, DM, model_.output_norm.data(), c_.norm_eps, xn + i * DM);
  matmul(pool_, model_.output, xn, DM, n_out, logits_out, c_.n_vocab);
}

void CpuBackend::prefill(int slot, std::span<const int32_t> tokens, bool all_logits,
                         std::vector<float>& logits) {
  check_prefill(slot, tokens);
  const int64_t n = int64_t(tokens.size());
  const int64_t V = c_.n_vocab;
  logits.resize(size_t((all_logits ? n : 1) * V));
  SlotState& st = slots_[size_t(slot)];
  std::vector<int64_t> rows;
  // Long prompts go through in pieces; the state carries over between them exactly as it
  // would between the tokens of one piece.
  for (int64_t t0 = 0; t0 < n; t0 += kMaxBatchTokens) {
    const int64_t len = std::min(kMaxBatchTokens, n - t0);
    const Seq seq{.t0 = 0, .len = len, .conv_state = st.conv.data(), .ssm_state = st.ssm.data()};
    rows.clear();
    if (all_logits)
      for (int64_t t = 0; t < len; t++) rows.push_back(t);
    else if (t0 + len == n)
      rows.push_back(len - 1);
    forward(tokens.subspan(size_t(t0), size_t(len)), std::span<const Seq>(&seq, 1), rows,
            logits.data() + (all_logits ? t0 * V : 0));
  }
}

void CpuBackend::prefill_batch(std::span<const int> slots,
                               std::span<const std::span<const int32_t>> prompts,
                               std::vector<float>& last_logits) {
  check_prefill_batch(slots, prompts);
  const size_t V = size_t(c_.n_vocab);
  last_logits.resize(prompts.size() * V);
  // The pass being gathered: its rows, one Seq per prompt, and each prompt's last row.
  std::vector<int32_t> tokens;
  std::vector<Seq> seqs;
  std::vector<int64_t> rows;
  std::vector<size_t> which;  // rows[j] is the last row of prompts[which[j]]
  std::vector<float> out;
  const auto place = [&](size_t i, const float* row) {
    std::copy(row, row + V, last_logits.begin() + std::ptrdiff_t(i * V));
  };
  const auto run = [&] {
    if (seqs.empty()) return;
    out.resize(rows.size() * V);
    forward(tokens, seqs, rows, out.data());
    for (size_t j = 0; j < which.size(); j++) place(which[j], out.data() + j * V);
    tokens.clear(), seqs.clear(), rows.clear(), which.clear();
  };
  for (size_t i = 0; i < prompts.size(); i++) {
    const auto p = prompts[i];
    const int64_t len = int64_t(p.size());
    if (len > kMaxBatchTokens) {  // in pieces, exactly as prefill() cuts it
      prefill(slots[i], p, /*all_logits=*/false, out);
      place(i, out.data());
      continue;
    }
    if (int64_t(tokens.size()) + len > kMaxBatchTokens) run();
    SlotState& st = slots_[size_t(slots[i])];
    seqs.push_back(Seq{.t0 = int64_t(tokens.size()),
                       .len = len,
                       .conv_state = st.conv.data(),
                       .ssm_state = st.ssm.data()});
    tokens.insert(tokens.end(), p.begin(), p.end());
    rows.push_back(int64_t(tokens.size()) - 1);
    which.push_back(i);
  }
  run();
}

void CpuBackend::decode(std::span<const int> slots, std::span<const int32_t> tokens,
                        std::vector<float>& logits) {
  check_decode(slots, tokens);
  const int64_t n = int64_t(tokens.size()), V = c_.n_vocab;
  logits.resize(size_t(n * V));
  std::vector<Seq> seqs;
  std::vector<int64_t> rows;
  for (int64_t b0 = 0; b0 < n; b0 += kMaxBatchTokens) {
    const int64_t len = std::min(kMaxBatchTokens, n - b0);
    seqs.clear();
    rows.clear();
    for (int64_t i = 0; i < len; i++) {
      SlotState& st = slots_[size_t(slots[size_t(b0 + i)])];
      seqs.push_back(
          Seq{.t0 = i, .len = 1, .conv_state = st.conv.data(), .ssm_state = st.ssm.data()});
      rows.push_back(i);
    }
    forward(tokens.subspan(size_t(b0), size_t(len)), seqs, rows, logits.data() + b0 * V);
  }
}

}  // namespace mamba::cpu
