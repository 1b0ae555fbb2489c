// The CUDA block loop: the same computation as the CPU backend (backend/cpu/cpu_backend.cpp),
// one kernel-library call per step.
//
//   h = token_embd[ids]                               (n, d_model) float32 residual stream
//   for each layer:
//     xn = RMSNorm(h += previous mixer output)        the add is fused into the norm
//     out = Mixer(xn)                                 Mamba-1 or Mamba-2 mixer
//   xn = RMSNorm(h += out) * output_norm;  logits = output(xn)
//
// Prefill runs the *_prefill kernels over one sequence of up to max_prefill_tokens rows; decode
// runs the *_step kernels over one row per sequence and is replayed from a CUDA graph.
//
// This file: setup, slots, and the forward pass kernel by kernel. cuda_backend_run.cpp has
// prefill and the decode entry points.
#include "cuda_backend_impl.h"

namespace mamba {
namespace cuda_detail {

CudaBackend::CudaBackend(const Model& model, const BackendOptions& opts,
                         const CudaOptions& copts)
    : c_(model.config()), copts_(copts) {
  if (!cuda::device_available()) fail("no CUDA device is available");
  if (opts.device.rfind("cuda:", 0) == 0) {
    const std::string idx = opts.device.substr(5);
    if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos)
      fail("bad device '", opts.device, "' (expected cuda or cuda:N)");
    device_ = std::stoi(idx);
  }
  int n_dev = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n_dev));
  if (device_ >= n_dev) fail("device ", opts.device, " does not exist (", n_dev, " CUDA devices)");
  CUDA_CHECK(cudaSetDevice(device_));
  if (opts.n_slots < 1 || opts.n_slots > 4096)
    fail("n_slots = ", opts.n_slots, " is out of range (1..4096)");
  if (copts.max_prefill_tokens < 1 || copts.max_prefill_tokens > 65535)
    fail("max_prefill_tokens = ", copts.max_prefill_tokens, " is out of range (1..65535)");
  n_slots_ = opts.n_slots;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&cublas_));
  // An explicit workspace keeps cuBLAS from allocating while a graph is captured, so the
  // captured and the plain step pick the same kernels.
  cublas_ws_ = DeviceBuffer(kCublasWorkspace, "cuBLAS workspace");
  CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_ws_.data(), cublas_ws_.bytes()));
  CUBLAS_CHECK(cublasSetStream(cublas_, stream_));

  // ---- weights, uploaded once ----
  token_embd_ = upload(model.token_embd, "token_embd.weight", token_embd_w_);
  output_ = model.tied ? token_embd_ : upload(model.output, "output.weight", output_w_);
  output_norm_ = upload(model.output_norm, "weights output_norm.weight");
  layers_.resize(size_t(c_.n_layer));
  for (int il = 0; il < int(c_.n_layer); il++) {
    const LayerWeights& w = model.layers[size_t(il)];
    DeviceLayer& d = layers_[size_t(il)];
    const std::string blk = "blk." + std::to_string(il) + ".";
    d.attn_norm = upload(w.attn_norm, "weights " + blk + "attn_norm.weight");
    d.in_proj = upload(w.in_proj, blk + "ssm_in.weight", d.in_proj_w);
    if (!w.in_proj_bias.empty()) d.in_proj_b = upload(w.in_proj_bias, "weights " + blk + "ssm_in.bias");
    d.conv_w = upload(w.conv_w, "weights " + blk + "ssm_conv1d.weight");
    d.conv_b = upload(w.conv_b, "weights " + blk + "ssm_conv1d.bias");
    d.dt_bias = upload(w.dt_bias, "weights " + blk + "ssm_dt.bias");
    d.A = upload(w.A, "weights " + blk + "ssm_a");
    d.D = upload(w.D, "weights " + blk + "ssm_d");
    d.out_proj = upload(w.out_proj, blk + "ssm_out.weight", d.out_proj_w);
    if (!w.out_proj_bias.empty())
      d.out_proj_b = upload(w.out_proj_bias, "weights " + blk + "ssm_out.bias");
    if (c_.arch == Arch::Mamba1) {
      d.x_proj = upload(w.x_proj, blk + "ssm_x.weight", d.x_proj_w);
      d.dt_proj = upload(w.dt_proj, blk + "ssm_dt.weight", d.dt_proj_w);
    } else {
      d.norm = upload(w.norm, "weights " + blk + "ssm_norm.weight");
    }
  }

  // ---- state slots ----
  slot_floats_ = int64_t(c_.state_bytes() / sizeof(float));
  state_ = DeviceBuffer(size_t(n_slots_) * size_t(slot_floats_) * sizeof(float),
                        "recurrent state for " + std::to_string(n_slots_) + " slots");
  CUDA_CHECK(cudaMemsetAsync(state_.data(), 0, state_.bytes(), stream_));

  // ---- activations ----
  const int max_batch = std::min(n_slots_, kMaxDecodeBatch);
  max_rows_ = std::max(copts.max_prefill_tokens, max_batch);
  logit_rows_ = std::max(max_batch, std::min(kMinLogitRows, max_rows_));
  const size_t R = size_t(max_rows_);
  const auto act = [&](int64_t cols, const char* what) {
    return DeviceBuffer(R * size_t(cols) * sizeof(float), std::string("activations ") + what);
  };
  tokens_ = DeviceBuffer(R * sizeof(int32_t), "activations token ids");
  slots_ = DeviceBuffer(R * sizeof(int32_t), "activations slot ids");
  seq_ = DeviceBuffer((3 * size_t(kMaxPacked) + 1) * sizeof(int32_t),
                     "activations sequence table");
  h_ = act(c_.d_model, "residual");
  xn_ = act(c_.d_model, "norm output");
  out_ = act(c_.d_model, "mixer output");
  sumsq_ = DeviceBuffer(8 * size_t((c_.d_model + 15) / 16) * sizeof(float),
                        "activations residual sums of squares");
  proj_ = act(c_.in_proj_rows(), "in_proj output");
  xc_ = act(c_.conv_dim(), "conv output");
  y_ = act(c_.d_inner, "scan output");
  int64_t widest = std::max(c_.d_model, c_.d_inner);
  if (c_.arch == Arch::Mamba1) {
    dbl_ = act(c_.dt_rank + 2 * c_.d_state, "x_proj output");
    dt_ = act(c_.d_inner, "dt_proj output");
    widest = std::max(widest, c_.dt_rank);
  }
  lin16_ = DeviceBuffer(R * size_t(widest) * 2, "activations 16-bit matmul input");
  cuda::SsdParams sp;
  if (c_.arch == Arch::Mamba2) {
    sp.n_heads = int(c_.n_heads);
    sp.head_dim = int(c_.head_dim);
    sp.d_state = int(c_.d_state);
    sp.n_groups = int(c_.n_groups);
    cuda::SeqBatch one, packed;  // a prompt piece alone, and packed short prompts
    one.n_seq = 1;
    one.n_tok = one.max_len = max_rows_;
    packed.n_seq = kMaxPacked;
    packed.n_tok = max_rows_;
    packed.max_len = std::min(kShortPrefill, max_rows_);
    ssd_ws_ = DeviceBuffer(std::max(cuda::ssd_workspace_bytes(sp, one),
                                    cuda::ssd_workspace_bytes(sp, packed)),
                           "activations SSD workspace");
  }
  logits_ = DeviceBuffer(size_t(logit_rows_) * size_t(c_.n_vocab) * sizeof(float),
                         "logits for " + std::to_string(logit_rows_) + " rows");
  {
    // Region sizes are multiples of 512 values, so every region stays 16-byte aligned.
    size_t elems[3] = {};  // dec_ws_, dec_xp_ws_, dec_dt_ws_
    // Decode batches, and the packed rows of short prompts (short_prefill_).
    const int rows = std::max(max_batch, std::min(max_rows_, kMaxPackedRows));
    const auto grow = [&](size_t& e, const DeviceMatrix& W) {
      if (W.data) e = std::max(e, cuda::linear_decode_needs(W, rows).x16_elems);
    };
    grow(elems[0], output_);
    for (const DeviceLayer& d : layers_) {
      grow(elems[0], d.in_proj);
      grow(elems[0], d.out_proj);
      grow(elems[1], d.x_proj);
      grow(elems[2], d.dt_proj);
    }
    dec_x16_ = DeviceBuffer((elems[0] + elems[1] + elems[2]) * 2, "decode activations in 16 bits");
    uint16_t* base = static_cast<uint16_t*>(dec_x16_.data());
    const auto region = [&](size_t offset, size_t e) {
      return cuda::LinearDecodeWorkspace{e ? base + offset : nullptr, e};
    };
    dec_ws_ = region(0, elems[0]);
    dec_xp_ws_ = region(elems[0], elems[1]);
    dec_dt_ws_ = region(elems[0] + elems[1], elems[2]);
  }
  host_ids_ = cuda::HostBuffer(4 * size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode ids");
  banned_ = DeviceBuffer(size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode banned ids");
  picks_ = DeviceBuffer(size_t(kMaxDecodeBatch) * sizeof(int32_t), "decode greedy picks");
  host_logits_ = cuda::HostBuffer(size_t(logit_rows_) * size_t(c_.n_vocab) * sizeof(float),
                                  "decode logits");
  const auto env_on = [](const char* name) {
    const char* v = std::getenv(name);
    return v && *v && *v != '0';
  };
  if ((copts.persistent_decode || env_on("MAMBA_PERSISTENT")) && !env_on("MAMBA_NO_PERSISTENT"))
    setup_persistent();
  prefill_batch_.n_seq = 1;
  prefill_batch_.start = seq_.as<int32_t>();
  prefill_batch_.slots = seq_.as<int32_t>() + 2;
  // The uploads ran on the legacy default stream, which stream_ does not wait for.
  CUDA_CHECK(cudaDeviceSynchronize());
}

CudaBackend::~CudaBackend() {
  for (auto& [n, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_) cudaStreamSynchronize(stream_);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
}

DeviceBuffer CudaBackend::upload(const void* data, size_t bytes, const std::string& what) {
  DeviceBuffer b(bytes, what);
  if (bytes) CUDA_CHECK(cudaMemcpy(b.data(), data, bytes, cudaMemcpyHostToDevice));
  return b;
}

DeviceBuffer CudaBackend::upload(const std::vector<float>& v, const std::string& what) {
  return upload(v.data(), v.size() * sizeof(float), what);
}

DeviceMatrix CudaBackend::upload(const Matrix& m, const std::string& name, DeviceBuffer& owner) {
  const size_t bytes = size_t(m.rows) * size_t(m.cols) * gguf::dtype_size(m.dtype);
  owner = upload(m.data, bytes, "weights " + name);
  return DeviceMatrix{owner.data(), m.dtype, m.rows, m.cols};
}

cuda::StateRef CudaBackend::conv_state(int il) const {
  return {state_.as<float>() + int64_t(il) * (c_.d_conv - 1) * c_.conv_dim(), slot_floats_};
}

cuda::StateRef CudaBackend::ssm_state(int il) const {
  const int64_t conv_all = c_.n_layer * (c_.d_conv - 1) * c_.conv_dim();
  return {state_.as<float>() + conv_all + int64_t(il) * c_.d_inner * c_.d_state, slot_floats_};
}

// The persistent decode step takes Mamba-1 (not Falcon-Mamba, whose dt, B and C are normed
// between x_proj and the scan) with all four projections in one 16-bit dtype, where its shapes
// and shared memory fit (persistent_decode_unsupported); everything else keeps the per-kernel
// path.
void CudaBackend::setup_persistent() {
  if (c_.arch != Arch::Mamba1 || c_.dt_b_c_rms) return;
  const gguf::DType t = layers_[0].in_proj.dtype;
  if (t != gguf::DType::F16 && t != gguf::DType::BF16) return;
  for (const DeviceLayer& d : layers_)
    for (const DeviceMatrix* m : {&d.in_proj, &d.x_proj, &d.dt_proj, &d.out_proj})
      if (m->dtype != t) return;
  cuda::PersistentDecodeConfig& p = pcfg_;
  p.n_layer = int(c_.n_layer);
  p.d_model = int(c_.d_model);
  p.d_inner = int(c_.d_inner);
  p.d_state = int(c_.d_state);
  p.d_conv = int(c_.d_conv);
  p.dt_rank = int(c_.dt_rank);
  p.norm_eps = c_.norm_eps;
  p.bf16 = t == gguf::DType::BF16;
  const DeviceLayer& l0 = layers_[0];
  p.split[0] = cuda::linear_decode_split(l0.in_proj);
  p.split[1] = cuda::linear_decode_split(l0.x_proj);
  p.split[2] = cuda::linear_decode_split(l0.dt_proj);
  p.split[3] = cuda::linear_decode_split(l0.out_proj);
  const std::string why = cuda::persistent_decode_unsupported(p);
  if (!why.empty()) return;
  // State slices must keep the scan step's 16-byte accesses.
  if (slot_floats_ % 4 != 0 || (ssm_state(0).base - state_.as<float>()) % 4 != 0) return;
  std::vector<cuda::PersistentDecodeLayer> host(layers_.size());
  for (size_t il = 0; il < layers_.size(); il++) {
    const DeviceLayer& d = layers_[il];
    cuda::PersistentDecodeLayer& h = host[il];
    h.proj[0] = d.in_proj.data;
    h.proj[1] = d.x_proj.data;
    h.proj[2] = d.dt_proj.data;
    h.proj[3] = d.out_proj.data;
    h.in_proj_b = ptr_or_null(d.in_proj_b);
    h.out_proj_b = ptr_or_null(d.out_proj_b);
    h.norm_w = d.attn_norm.as<float>();
    h.conv_w = d.conv_w.as<float>();
    h.conv_b = ptr_or_null(d.conv_b);
    h.dt_bias = d.dt_bias.as<float>();
    h.A = d.A.as<float>();
    h.D = d.D.as<float>();
    h.conv_state = conv_state(int(il));
    h.ssm_state = ssm_state(int(il));
  }
  p_layers_ = upload(host.data(), host.size() * sizeof(host[0]), "persistent decode layer table");
  p_part_ = DeviceBuffer(cuda::persistent_decode_part_floats(p) * sizeof(float),
                         "persistent decode partial sums");
  p_sync_ = DeviceBuffer(sizeof(unsigned), "persistent decode barrier");
  persistent_ = true;
}

// ---- slots ------------------------------------------------------------------------------------

void CudaBackend::reset_slot(int slot) {
  check_slot(slot);
  CUDA_CHECK(cudaMemsetAsync(slot_ptr(slot), 0, state_bytes(), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_slot(int src, int dst) {
  check_slot(src);
  check_slot(dst);
  if (src == dst) return;
  CUDA_CHECK(cudaMemcpyAsync(slot_ptr(dst), slot_ptr(src), state_bytes(),
                             cudaMemcpyDeviceToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::save_slot(int slot, std::vector<uint8_t>& out) {
  check_slot(slot);
  out.resize(state_bytes());
  CUDA_CHECK(cudaMemcpyAsync(out.data(), slot_ptr(slot), state_bytes(), cudaMemcpyDeviceToHost,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::load_slot(int slot, std::span<const uint8_t> in) {
  check_slot(slot);
  if (in.size() != state_bytes())
    fail("saved state has ", in.size(), " bytes, expected ", state_bytes(), " for this model");
  CUDA_CHECK(cudaMemcpyAsync(slot_ptr(slot), in.data(), state_bytes(), cudaMemcpyHostToDevice,
                             stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- forward ----------------------------------------------------------------------------------

void CudaBackend::in_proj_conv(int il, int n, bool decode, float* proj, int64_t ld_proj,
                               const float* conv_in, int conv_dim, float* conv_out,
                               cuda::Out16 conv_out16) {
  const DeviceLayer& w = layers_[size_t(il)];
  cuda::Conv1dParams cp;
  cp.x = conv_in;
  cp.ldx = ld_proj;
  cp.w = w.conv_w.as<float>();
  cp.b = w.conv_b.as<float>();
  cp.state = conv_state(il);
  cp.dim = conv_dim;
  cp.d_conv = int(c_.d_conv);
  cp.out = conv_out;
  cp.out16 = conv_out16;
  // xn_ (and its 16-bit copy for a prefill) were written by forward()'s norm. A Mamba-1
  // decode step of up to 8 rows with 16-bit weights runs the conv step in in_proj's epilogue:
  // one kernel fewer a layer. Measured on the H200 (docs/benchmarks.md): mamba-1.4b at one row
  // +4%; at 64 rows the staged GEMM's epilogue, one conv step after another per thread, made
  // the step 11% slower, and Mamba-2 (its conv on xBC) was 0.7% slower fused at one row.
  const bool fuse =
      decode && n <= 8 && c_.arch == Arch::Mamba1 && w.in_proj.dtype != gguf::DType::F32;
  cuda::FusedConv fc;
  if (fuse) fc = {cp, slots_.as<int32_t>(), conv_in - proj};
  // Or, where the previous out_proj wrote h's sums of squares, in_proj norms h_ itself.
  const bool normed = norm_in(il, n, decode);
  const cuda::NormIn ni =
      normed ? cuda::NormIn{sumsq_.as<float>(), w.attn_norm.as<float>(), c_.norm_eps}
             : cuda::NormIn{};
  this->proj(w.in_proj, normed ? h_.as<float>() : xn_.as<float>(), int(c_.d_model), n, proj,
             ld_proj, w.in_proj_b, decode,
             !normed && rounded_input(w.in_proj, decode, n).data != nullptr, nullptr, {}, fc, ni);
  if (fuse) return;
  if (decode)
    cuda::conv1d_step(cp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::conv1d_prefill(cp, prefill_batch_, stream_);
}

void CudaBackend::mamba1_mixer(int il, int n, bool decode) {
  const DeviceLayer& w = layers_[size_t(il)];
  const int DM = int(c_.d_model), DI = int(c_.d_inner), N = int(c_.d_state);
  const int R = int(c_.dt_rank);
  const int64_t ld_proj = 2 * int64_t(DI), ld_dbl = R + 2 * int64_t(N);
  float* proj = proj_.as<float>();  // (n, 2*DI): x | z
  float* xc = xc_.as<float>();      // (n, DI)
  float* dbl = dbl_.as<float>();    // (n, R + 2N): dt_low | B | C
  float* dt = dt_.as<float>();      // (n, DI)
  float* y = y_.as<float>();        // (n, DI)

  // x_proj reads the conv output; the scan reads it in float32 too.
  const cuda::Out16 xc16 = rounded_input(w.x_proj, decode, n, dec_xp_ws_);
  in_proj_conv(il, n, decode, proj, ld_proj, proj, DI, xc, xc16);
  // Where both run the staged GEMM, x_proj also writes dt_low rounded for dt_proj, which then
  // needs no rounding pass (not for Falcon-Mamba, whose dt_low is normed in between).
  const bool dt16 = (decode || short_prefill_) && xc16.data && !c_.dt_b_c_rms &&
                    dec_dt_ws_.x16 && cuda::linear_decode_reads_x16(w.dt_proj, n, dec_dt_ws_);
  const cuda::Out16 dt_low16 =
      dt16 ? cuda::Out16{dec_dt_ws_.x16, w.dt_proj.dtype == gguf::DType::BF16, R} : cuda::Out16{};
  this->proj(w.x_proj, xc, DI, n, dbl, ld_dbl, DeviceBuffer(), decode, xc16.data != nullptr,
             &dec_xp_ws_, dt_low16);
  if (c_.dt_b_c_rms) cuda::falcon_bcdt_rms(dbl, ld_dbl, n, R, N, c_.mixer_rms_eps, stream_);
  this->proj(w.dt_proj, dbl, ld_dbl, n, dt, DI, DeviceBuffer(), decode, dt16,
             dt16 ? &dec_dt_ws_ : nullptr);
  cuda::SelectiveScanParams sp;
  sp.x = xc;
  sp.dt = dt;
  sp.dt_bias = w.dt_bias.as<float>();
  sp.A = w.A.as<float>();
  sp.B = dbl + R;
  sp.C = dbl + R + N;
  sp.ldbc = ld_dbl;
  sp.D = w.D.as<float>();
  sp.z = proj + DI;
  sp.ldz = ld_proj;
  sp.state = ssm_state(il);
  sp.d_inner = DI;
  sp.d_state = N;
  sp.y = y;
  sp.y16 = rounded_input(w.out_proj, decode, n);
  if (decode)
    cuda::selective_scan_step(sp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::selective_scan_prefill(sp, prefill_batch_, stream_);
  const bool res = residual_out(il, n, decode);
  this->proj(w.out_proj, y, DI, n, res ? h_.as<float>() : out_.as<float>(), DM, w.out_proj_b,
             decode, sp.y16.data != nullptr, nullptr, {}, {}, {},
             res ? cuda::ResidualOut{sumsq_.as<float>()} : cuda::ResidualOut{});
}

void CudaBackend::mamba2_mixer(int il, int n, bool decode) {
  const DeviceLayer& w = layers_[size_t(il)];
  const int DM = int(c_.d_model), DI = int(c_.d_inner), N = int(c_.d_state);
  const int G = int(c_.n_groups), CD = int(c_.conv_dim());
  const int64_t ld_proj = c_.in_proj_rows();
  float* proj = proj_.as<float>();  // (n, in_proj_rows): z (DI) | xBC (CD) | dt (H)
  float* xc = xc_.as<float>();      // (n, CD): x (DI) | B (G*N) | C (G*N)
  float* y = y_.as<float>();        // (n, DI)

  in_proj_conv(il, n, decode, proj, ld_proj, proj + DI, CD, xc);
  cuda::SsdParams sp;
  sp.x = xc;
  sp.ldx = CD;
  sp.B = xc + DI;
  sp.C = xc + DI + int64_t(G) * N;
  sp.ldbc = CD;
  sp.dt = proj + DI + CD;
  sp.lddt = ld_proj;
  sp.dt_bias = w.dt_bias.as<float>();
  sp.A = w.A.as<float>();
  sp.D = w.D.as<float>();
  sp.dt_min = c_.dt_min;
  sp.dt_max = c_.dt_max;
  sp.state = ssm_state(il);
  sp.n_heads = int(c_.n_heads);
  sp.head_dim = int(c_.head_dim);
  sp.d_state = N;
  sp.n_groups = G;
  sp.y = y;
  if (decode)
    cuda::ssd_step(sp, n, slots_.as<int32_t>(), stream_);
  else
    cuda::ssd_prefill(sp, prefill_batch_, ssd_ws_.data(), ssd_ws_.bytes(), stream_);
  // Only out_proj reads the normed y: a prefill with 16-bit weights writes just its 16-bit copy.
  const cuda::Out16 y16 = rounded_input(w.out_proj, decode, n);
  cuda::gated_rmsnorm(y, proj, ld_proj, w.norm.as<float>(), n, DI, G, c_.norm_eps,
                      y16.data ? nullptr : y, y16, stream_);
  const bool res = residual_out(il, n, decode);
  this->proj(w.out_proj, y, DI, n, res ? h_.as<float>() : out_.as<float>(), DM, w.out_proj_b,
             decode, y16.data != nullptr, nullptr, {}, {}, {},
             res ? cuda::ResidualOut{sumsq_.as<float>()} : cuda::ResidualOut{});
}

void CudaBackend::forward(int n, bool decode) {
  const int DM = int(c_.d_model);
  float* h = h_.as<float>();
  float* xn = xn_.as<float>();
  cuda::embedding(token_embd_.data, token_embd_.dtype, c_.n_vocab, DM, tokens_.as<int32_t>(), n,
                  h, stream_);
  const bool persistent = decode && persistent_ && n <= cuda::kPersistentMaxRows;
  if (persistent) {
    cuda::PersistentDecodeArgs a;
    a.layers = p_layers_.as<cuda::PersistentDecodeLayer>();
    a.n = n;
    a.slots = slots_.as<int32_t>();
    a.h = h;
    a.out = out_.as<float>();
    a.xc = xc_.as<float>();
    a.z = dt_.as<float>();  // the per-kernel path's dt_proj output, unused here
    a.y = y_.as<float>();
    a.part = p_part_.as<float>();
    a.sync = p_sync_.as<unsigned>();
    cuda::persistent_decode(pcfg_, a, stream_);
  } else {
    layers(n, decode);
  }
  // A decode step's LM head reads all n rows (see decode_batch); a prefill's takes row ranges
  // and rounds them itself. (The per-kernel path's last out_proj may have added its output into
  // h already; the persistent kernel leaves it in out_.)
  const bool added = !persistent && residual_out(int(c_.n_layer) - 1, n, decode);
  cuda::rmsnorm_residual(h, added ? nullptr : out_.as<float>(), output_norm_.as<float>(), n, DM,
                         c_.norm_eps, xn, decode ? rounded_input(output_, true, n) : cuda::Out16{},
                         stream_);
}

void CudaBackend::layers(int n, bool decode) {
  const int DM = int(c_.d_model);
  float* h = h_.as<float>();
  float* xn = xn_.as<float>();
  for (int il = 0; il < int(c_.n_layer); il++) {
    const DeviceLayer& w = layers_[size_t(il)];
    if (!norm_in(il, n, decode))  // else in_proj norms h itself
      cuda::rmsnorm_residual(h, il == 0 ? nullptr : out_.as<float>(), w.attn_norm.as<float>(),
                             n, DM, c_.norm_eps, xn, rounded_input(w.in_proj, decode, n),
                             stream_);
    if (c_.arch == Arch::Mamba1)
      mamba1_mixer(il, n, decode);
    else
      mamba2_mixer(il, n, decode);
  }
}

bool CudaBackend::residual_out(int il, int n, bool decode) const {
  const auto is16 = [](const DeviceMatrix& W) {
    return W.dtype == gguf::DType::F16 || W.dtype == gguf::DType::BF16;
  };
  static const bool off = std::getenv("MAMBA_NO_NORM_FUSION") != nullptr;  // A/B in one build
  if (off || !decode || n > 8 || c_.d_model > cuda::kRmsNormMaxDim) return false;
  if (!is16(layers_[size_t(il)].out_proj)) return false;
  return il + 1 == int(c_.n_layer) || is16(layers_[size_t(il) + 1].in_proj);
}

void CudaBackend::proj(const DeviceMatrix& W, const float* x, int64_t ldx, int n, float* y,
                       int64_t ldy, const DeviceBuffer& b, bool decode, bool x_rounded,
                       const cuda::LinearDecodeWorkspace* ws, cuda::Out16 y16,
                       const cuda::FusedConv& conv, const cuda::NormIn& norm,
                       const cuda::ResidualOut& res) {
  if (decode || short_prefill_)
    cuda::linear_decode(W, x, ldx, n, y, ldy, ptr_or_null(b), ws ? *ws : dec_ws_, stream_,
                        x_rounded, y16, conv, norm, res);
  else
    cuda::linear(cublas_, W, x, ldx, n, y, ldy, ptr_or_null(b), lin_scratch(), stream_,
                 x_rounded);
}

cuda::Out16 CudaBackend::rounded_input(const DeviceMatrix& W, bool decode, int n,
                                       const cuda::LinearDecodeWorkspace& ws) const {
  if (W.dtype == gguf::DType::F32) return {};
  const bool bf16 = W.dtype == gguf::DType::BF16;
  if (!decode && !short_prefill_) return {lin16_.data(), bf16};
  if (cuda::linear_decode_reads_x16(W, n, ws)) return {ws.x16, bf16, W.cols};
  return {};
}

void CudaBackend::lm_head(int row0, int count, bool decode, bool x_rounded) {
  proj(output_, xn_.as<float>() + int64_t(row0) * c_.d_model, c_.d_model, count,
       logits_.as<float>(), c_.n_vocab, DeviceBuffer(), decode, x_rounded);
}

}  // namespace cuda_detail

using cuda_detail::CudaBackend;

std::unique_ptr<Backend> make_cuda_backend(const Model& model, const BackendOptions& opts,
                                           const CudaOptions& cuda) {
  return std::make_unique<CudaBackend>(model, opts, cuda);
}

bool cuda_persistent_decode(const Backend& b) {
  const auto* c = dynamic_cast<const CudaBackend*>(&b);
  return c && c->runs_persistent();
}

}  // namespace mamba
