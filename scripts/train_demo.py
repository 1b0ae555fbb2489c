#!/usr/bin/env python3
"""Trains the bundled demo model (models/README.md): a small Mamba-2 Python code model with its
own SentencePiece tokenizer, on the Python source that the machine it runs on has: the CPython
standard library (PSF-2.0) and the BSD-3-Clause packages in PACKAGES, where installed.

Run it on a GPU machine with torch, transformers (Mamba2ForCausalLM) and sentencepiece:

    python3 scripts/train_demo.py --work /tmp/demo --out OUT --train-seconds 480 \
        --deadline 585 --reserve 75

Everything lives in --work, and every stage is skipped when its result is already there, so a
run that stops (a time limit) resumes where it left off when started again on the same --work:

  corpus      the .py files that parse, split by a hash of their path into training files and
              held-out files (1 in 50)
  tokenizer   a SentencePiece BPE model trained on the training files' lines (byte fallback,
              so any text encodes; whitespace kept exactly, since indentation is syntax)
  data        the files encoded as one stream: BOS, the file's ids, EOS, for each file
  train       AdamW under bf16 autocast for a budget of wall-clock seconds in total across
              runs, on an einsum form of the same model (see fast_model); the checkpoint
              (weights, optimiser, step, seconds so far) is written every few minutes and at
              the end of each run, and a later run continues from it
  export      weights rounded to float16 (the shipped GGUF is f16, so the reference below is
              computed from exactly the shipped values), saved with save_pretrained plus
              tokenizer.model and tokenizer_config.json: a directory mamba-convert reads
  evaluate    transformers' held-out loss and perplexity in float32 (TF32 off), and the
              perplexity of a held-out sample under the protocol of mamba-perplexity

The perplexity protocol (the same as mamba-perplexity's): the text's ids without BOS are cut
into consecutive chunks of --ctx tokens (the last one may be shorter); each chunk is scored from
a fresh state with BOS in front, so every token of the chunk is predicted; ppl = exp(mean NLL
over all predicted tokens).

Outputs under --out (few files, since that is what a remote run can send back): metrics.json,
and demo_hf.tar.partNN, one tar split into parts of at most 15 MB holding demo_hf/ (the exported
directory) and report/ (metrics.json, corpus_stats.json, train_log.jsonl, samples.txt, and
heldout_sample.py, the held-out sample as text).

Why Mamba-2 rather than Mamba-1: it is the architecture of Codestral Mamba (the code model
this one imitates), its chunked scan trains fast without custom kernels, and the engine's SSD
path is the one a bundled model should exercise. n_groups = 1, so transformers' gated RMSNorm
(over the whole width) equals the engine's per-group one.
"""
import argparse
import ast
import hashlib
import io
import json
import math
import os
import shutil
import sys
import sysconfig
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor

T0 = time.time()

# Model shape: ~19M parameters with the tied embedding, a ~38 MB f16 GGUF.
MODEL = dict(hidden_size=512, num_hidden_layers=9, state_size=64, head_dim=64, num_heads=16,
             n_groups=1, expand=2, conv_kernel=4, chunk_size=64, use_bias=False,
             use_conv_bias=True, tie_word_embeddings=True)
VOCAB_SIZE = 8192
UNK, BOS, EOS = 0, 1, 2
HELDOUT_MOD = 50
# Permissively licensed packages added to the standard library when the machine has them:
# (import name, distribution name). All BSD-3-Clause.
PACKAGES = [("numpy", "numpy"), ("scipy", "scipy"), ("sympy", "sympy"),
            ("networkx", "networkx"), ("pandas", "pandas"), ("sklearn", "scikit-learn")]
SKIP_DIRS = {"site-packages", "dist-packages", "encodings", "pydoc_data", "__pycache__"}
MAX_FILE_BYTES = 300_000

SAMPLE_PROMPTS = [
    "def fibonacci(n):\n",
    "import os\n\n\ndef list_python_files(root):\n",
    "class Stack:\n    \"\"\"A last-in, first-out stack.\"\"\"\n\n    def __init__(self):\n",
    "def parse_args(argv):\n",
]


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


# ---- corpus ----------------------------------------------------------------------------------
def _read_if_python(path):
    """The file's text when it is UTF-8 and parses with this Python, else None."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
        ast.parse(text)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError,
            MemoryError):
        return None
    # One newline convention, no trailing spaces at the end of the file.
    return text.replace("\r\n", "\n").rstrip() + "\n"


def is_heldout(rel):
    return int(hashlib.md5(rel.encode()).hexdigest(), 16) % HELDOUT_MOD == 0


def package_licence(dist_name):
    try:
        from importlib import metadata
        m = metadata.metadata(dist_name)
        lic = m.get("License-Expression") or m.get("License") or ""
        if len(lic) > 40 or not lic:  # a whole licence text: name it by its classifier
            lic = next((c.split(" :: ")[-1] for c in m.get_all("Classifier") or []
                        if c.startswith("License ::")), lic[:40])
        return m["Version"], lic
    except Exception:  # noqa: BLE001 - missing metadata only loses the note
        return "?", "?"


def python_files(root, skip):
    out = []
    for r, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for n in sorted(names):
            p = os.path.join(r, n)
            if n.endswith(".py") and os.path.isfile(p) and os.path.getsize(p) <= MAX_FILE_BYTES:
                out.append(p)
    return out


def build_corpus(work):
    path = os.path.join(work, "corpus.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    stdlib = sysconfig.get_paths()["stdlib"]
    purelib = sysconfig.get_paths()["purelib"]
    sources = [{"name": "stdlib", "version": sys.version.split()[0], "licence": "PSF-2.0",
                "root": stdlib, "files": python_files(stdlib, SKIP_DIRS)}]
    for module, dist in PACKAGES:
        root = os.path.join(purelib, module)
        if os.path.isdir(root):
            version, licence = package_licence(dist)
            sources.append({"name": dist, "version": version, "licence": licence,
                            "root": purelib, "files": python_files(root, {"__pycache__"})})
    files = [(s["name"], s["root"], p) for s in sources for p in s["files"]]
    with ProcessPoolExecutor() as ex:
        texts = list(ex.map(_read_if_python, [p for _, _, p in files], chunksize=16))
    train, heldout = [], []
    for (source, root, p), t in zip(files, texts):
        if t is None or not t.strip():
            continue
        rel = os.path.relpath(p, root)
        entry = {"source": source, "path": rel, "text": t}
        (heldout if is_heldout(source + "/" + rel) else train).append(entry)
    for s in sources:
        s["candidate_files"] = len(s.pop("files"))
    corpus = {"sources": sources, "train": train, "heldout": heldout}
    with open(path, "w") as f:
        json.dump(corpus, f)
    return corpus


def corpus_stats(c):
    sources = []
    for s in c["sources"]:
        tr = [f for f in c["train"] if f["source"] == s["name"]]
        he = [f for f in c["heldout"] if f["source"] == s["name"]]
        sources.append(dict(s, train_files=len(tr), heldout_files=len(he),
                            train_bytes=sum(len(f["text"].encode()) for f in tr),
                            heldout_bytes=sum(len(f["text"].encode()) for f in he)))
    return {"sources": sources,
            "train_files": sum(s["train_files"] for s in sources),
            "train_bytes": sum(s["train_bytes"] for s in sources),
            "heldout_files": sum(s["heldout_files"] for s in sources),
            "heldout_bytes": sum(s["heldout_bytes"] for s in sources)}


# ---- tokenizer -------------------------------------------------------------------------------
def train_tokenizer(work, corpus):
    import sentencepiece as spm
    path = os.path.join(work, "tokenizer.model")
    if not os.path.exists(path):
        def lines():
            for f in corpus["train"]:
                for line in f["text"].split("\n"):
                    if line.strip():
                        yield line
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines(), model_writer=model, model_type="bpe",
            vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=0.9999,
            # Code: keep every space (indentation is syntax), no added leading space, no
            # Unicode normalisation; runs of spaces may become one piece.
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
            # Lines are the training sentences; a newline is always one piece of its own.
            user_defined_symbols=["\n"], max_sentence_length=4096,
            input_sentence_size=2_000_000, shuffle_input_sentence=True,
            unk_id=UNK, bos_id=BOS, eos_id=EOS, pad_id=-1,
            num_threads=os.cpu_count() or 4, minloglevel=2)
        with open(path + ".tmp", "wb") as f:
            f.write(model.getvalue())
        os.replace(path + ".tmp", path)
    sp = spm.SentencePieceProcessor(model_file=path)
    assert sp.get_piece_size() == VOCAB_SIZE and sp.bos_id() == BOS and sp.eos_id() == EOS
    return sp, path


def write_tokenizer_config(dst):
    with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                   "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "legacy": False, "add_prefix_space": False}, f,
                  indent=1)


# ---- data ------------------------------------------------------------------------------------
def encode_files(sp, files):
    import numpy as np
    ids = sp.encode([f["text"] for f in files], num_threads=os.cpu_count() or 4)
    parts = []
    for x in ids:
        parts.append(np.asarray([BOS] + x + [EOS], dtype=np.int32))
    return np.concatenate(parts)


def build_data(work, sp, corpus):
    import numpy as np
    paths = [os.path.join(work, n) for n in ("train.npy", "heldout.npy")]
    if not all(os.path.exists(p) for p in paths):
        np.save(paths[0], encode_files(sp, corpus["train"]))
        np.save(paths[1], encode_files(sp, corpus["heldout"]))
    return np.load(paths[0]), np.load(paths[1])


def heldout_sample(sp, corpus, n_tokens):
    """Whole lines of held-out standard-library files (in path order) until about n_tokens
    ids: a text under one licence (PSF-2.0) that can be shipped with the tests."""
    lines, count = [], 0
    stdlib = [f for f in corpus["heldout"] if f["source"] == "stdlib"]
    for f in sorted(stdlib, key=lambda f: f["path"]):
        for line in f["text"].split("\n"):
            lines.append(line)
            count += len(sp.encode(line)) + 1
            if count >= n_tokens:
                return "\n".join(lines) + "\n"
    return "\n".join(lines) + "\n"


# ---- a fast training model -------------------------------------------------------------------
# transformers' Mamba-2 without the mamba_ssm kernels scans with broadcast products of shape
# (batch, chunks, chunk, chunk, heads, head_dim): ~20k tokens/s on an H100 for this model, and
# out of memory beyond small batches. Training uses the same model written with einsums that
# contract as they go. Its parameters have transformers' names and shapes, so the weights move
# between the two with load_state_dict; the run checks both give the same logits before
# training, and everything measured afterwards is measured with transformers.
def ssd_scan(torch, x, dt, A, B, C, chunk):
    """The Mamba-2 recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t h_t, for
    n_groups = 1, computed chunk by chunk (float32). x (b, L, h, p), dt (b, L, h), A (h),
    B and C (b, L, n). Returns y (b, L, h, p)."""
    F = torch.nn.functional
    b, L, h, p = x.shape
    n = B.shape[-1]
    pad = (-L) % chunk
    if pad:
        x, dt = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(dt, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    c = (L + pad) // chunk
    x, dt = x.reshape(b, c, chunk, h, p), dt.reshape(b, c, chunk, h)
    B, C = B.reshape(b, c, chunk, n), C.reshape(b, c, chunk, n)
    acs = torch.cumsum(dt * A, dim=2)  # log decay from the chunk's start, inclusive
    xdt = x * dt[..., None]
    # Within a chunk: y_i = sum_{j <= i} exp(acs_i - acs_j) (C_i . B_j) dt_j x_j.
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=x.device).tril()
    seg = (acs[:, :, :, None, :] - acs[:, :, None, :, :])
    decay = torch.exp(seg.masked_fill(~causal[None, None, :, :, None], float("-inf")))
    scores = torch.einsum("bcin,bcjn->bcij", C, B)
    y = torch.einsum("bcijh,bcjhp->bcihp", decay * scores[..., None], xdt)
    # Each chunk's own contribution to the state at its end.
    to_end = torch.exp(acs[:, :, -1:, :] - acs)
    states = torch.einsum("bcjn,bcjhp->bchpn", B, xdt * to_end[..., None])
    # The state entering chunk k: sum over m < k of states_m decayed through chunks m+1..k-1.
    total = torch.cumsum(acs[:, :, -1, :], dim=1)  # (b, c, h), through the end of each chunk
    before = total - acs[:, :, -1, :]  # through the end of the previous chunk
    earlier = torch.ones(c, c, dtype=torch.bool, device=x.device).tril(-1)
    w = before[:, :, None, :] - total[:, None, :, :]  # (b, k, m, h)
    w = torch.exp(w.masked_fill(~earlier[None, :, :, None], float("-inf")))
    entering = torch.einsum("bkmh,bmhpn->bkhpn", w, states)
    y = y + torch.einsum("bcin,bchpn->bcihp", C, entering) * torch.exp(acs)[..., None]
    return y.reshape(b, c * chunk, h, p)[:, :L]


def fast_model(torch, config):
    nn, F = torch.nn, torch.nn.functional
    d_model, eps = config.hidden_size, config.layer_norm_epsilon
    d_inner, h, p = config.num_heads * config.head_dim, config.num_heads, config.head_dim
    n, k = config.state_size, config.conv_kernel
    assert config.n_groups == 1 and not config.use_bias

    def up(t):  # at least float32 (float64 stays: the local checks run in float64)
        return t if t.dtype == torch.float64 else t.float()

    class RMSNorm(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x, gate=None):
            dtype, x = x.dtype, up(x)
            if gate is not None:
                x = x * F.silu(up(gate))
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            return self.weight * x.to(dtype)

    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            conv_dim = d_inner + 2 * n
            self.in_proj = nn.Linear(d_model, d_inner + conv_dim + h, bias=False)
            self.conv1d = nn.Conv1d(conv_dim, conv_dim, k, groups=conv_dim, padding=k - 1,
                                    bias=config.use_conv_bias)
            self.dt_bias = nn.Parameter(torch.ones(h))
            self.A_log = nn.Parameter(torch.zeros(h))
            self.D = nn.Parameter(torch.ones(h))
            self.norm = RMSNorm(d_inner)
            self.out_proj = nn.Linear(d_inner, d_model, bias=False)

        def forward(self, u):
            b, L, _ = u.shape
            z, xbc, dt = torch.split(self.in_proj(u), [d_inner, d_inner + 2 * n, h], dim=-1)
            xbc = F.silu(self.conv1d(xbc.transpose(1, 2))[..., :L].transpose(1, 2))
            x, B, C = torch.split(xbc, [d_inner, n, n], dim=-1)
            with torch.autocast(u.device.type, enabled=False):
                x = up(x).reshape(b, L, h, p)
                dt = F.softplus(up(dt) + up(self.dt_bias))
                A = -torch.exp(up(self.A_log))
                y = ssd_scan(torch, x, dt, A, up(B), up(C), 64)
                y = y + x * up(self.D)[:, None]
            return self.out_proj(self.norm(y.reshape(b, L, d_inner), z))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = RMSNorm(d_model)
            self.mixer = Mixer()

        def forward(self, x):
            return up(x) + self.mixer(self.norm(x))  # the residual stream in float32

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.Embedding(config.vocab_size, d_model)
            self.layers = nn.ModuleList(Block() for _ in range(config.num_hidden_layers))
            self.norm_f = RMSNorm(d_model)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.lm_head = nn.Linear(d_model, config.vocab_size, bias=False)
            self.lm_head.weight = self.backbone.embeddings.weight  # tied

        def forward(self, ids):
            x = self.backbone.embeddings(ids)
            for layer in self.backbone.layers:
                x = layer(x)
            return self.lm_head(self.backbone.norm_f(x))

    return LM()


# ---- model -----------------------------------------------------------------------------------
def make_model(torch, transformers):
    cfg = transformers.Mamba2Config(vocab_size=VOCAB_SIZE, bos_token_id=BOS, eos_token_id=EOS,
                                    pad_token_id=UNK, **MODEL)
    return transformers.Mamba2ForCausalLM(cfg)


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        # Matrices decay; the embedding, norms, biases, A_log, D and dt_bias do not.
        (decay if p.dim() == 2 and "embeddings" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_at(args, step, progress):
    """Linear warm-up over steps, then a cosine over the fraction of the time budget used."""
    warm = min(1.0, (step + 1) / args.warmup_steps)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return args.lr * warm * (args.min_lr_frac + (1 - args.min_lr_frac) * cos)


def logits_of(model, x):
    """Logits of either model: the fast one returns them, transformers' an output object."""
    out = model(x) if not hasattr(model, "config") else model(x, use_cache=False).logits
    return out


def batch(torch, data, batch_size, seq_len, gen, device):
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=gen)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    return data[idx].to(device, non_blocking=True).long()


def heldout_loss(torch, model, held, seq_len, max_windows, device, autocast):
    """Mean NLL over consecutive seq_len windows of the held-out stream (no overlap)."""
    import torch.nn.functional as F
    model.eval()
    n = min(max_windows, (len(held) - 1) // seq_len)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, 16):
            rows = [held[j * seq_len: j * seq_len + seq_len + 1] for j in range(i, min(n, i + 16))]
            x = torch.stack(rows).to(device).long()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                logits = logits_of(model, x[:, :-1])
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                  x[:, 1:].reshape(-1), reduction="sum")
            total += nll.item()
            count += x[:, 1:].numel()
    model.train()
    return total / max(1, count), count


def save_checkpoint(torch, path, model, opt, state):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def fast_training_model(torch, hf, train_ids):
    """The fast model with hf's weights, when both give the same float32 logits; else hf."""
    fast = fast_model(torch, hf.config).to("cuda")
    fast.load_state_dict(hf.state_dict(), strict=True)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    x = torch.from_numpy(train_ids[:2 * 777].astype("int64")).reshape(2, 777).cuda()
    with torch.no_grad():
        a, b = logits_of(hf, x).double(), logits_of(fast, x).double()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    rel = ((a - b).norm() / a.norm()).item()
    ok = rel < 1e-4
    log(f"fast model vs transformers, float32 logits: rel L2 {rel:.2e}: "
        f"{'training the fast model' if ok else 'training transformers model'}")
    return fast if ok else hf


def train(args, torch, transformers, train_ids, held_ids, out):
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model = make_model(torch, transformers).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    if args.fast:
        model = fast_training_model(torch, model, train_ids)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                            betas=(0.9, 0.95), eps=1e-8, fused=True)
    ckpt = os.path.join(args.work, "checkpoint.pt")
    state = {"step": 0, "seconds": 0.0, "tokens": 0, "seed": args.seed}
    if os.path.exists(ckpt):
        c = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        state = c["state"]
        log(f"resumed at step {state['step']}, {state['seconds']:.0f}s trained")
    log(f"model: {n_params / 1e6:.2f}M parameters")
    data = torch.from_numpy(train_ids)
    held = torch.from_numpy(held_ids)
    # A new generator per run, seeded by the step, so a resumed run draws new batches.
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + state["step"])
    log_path = os.path.join(args.work, "train_log.jsonl")
    stop_at = min(T0 + args.deadline - args.reserve, time.time() + args.run_seconds)
    if "budget" not in state:
        # The schedule's length is fixed by the first run: the budget asked for, or what fits
        # before this run's deadline (training steps take ~90% of the wall clock; evaluations
        # and the self-test take the rest).
        state["budget"] = min(args.train_seconds, 0.9 * (stop_at - time.time()) - 20)
        log(f"training budget: {state['budget']:.0f}s")
    last_save = last_eval = time.time()
    use_autocast = True
    model.train()
    while state["seconds"] < state["budget"] and time.time() < stop_at:
        t = time.time()
        lr = lr_at(args, state["step"], state["seconds"] / state["budget"])
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch(torch, data, args.batch_size, args.seq_len, gen, device)
        opt.zero_grad(set_to_none=True)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                logits = logits_of(model, x[:, :-1])
            loss = torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
            loss.backward()
        except RuntimeError as e:
            if not use_autocast or state["step"] > 0:
                raise
            log(f"bf16 autocast failed ({str(e).splitlines()[0]}); training in float32/TF32")
            use_autocast = False
            opt.zero_grad(set_to_none=True)
            continue
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["tokens"] += x[:, 1:].numel()
        if state["step"] % 25 == 0 or state["step"] <= 3:
            loss_v = loss.item()
            if not math.isfinite(loss_v):
                raise SystemExit(f"loss is {loss_v} at step {state['step']}")
            torch.cuda.synchronize()
        state["seconds"] += time.time() - t
        rec = None
        if state["step"] % 50 == 0 or state["step"] == 1:
            rec = {"step": state["step"], "seconds": round(state["seconds"], 1),
                   "tokens": state["tokens"], "lr": lr, "loss": round(loss.item(), 4),
                   "grad_norm": round(float(gnorm), 3)}
        if time.time() - last_eval > args.eval_every or state["step"] == args.self_test_step:
            hl, _ = heldout_loss(torch, model, held, args.seq_len, 32, device, use_autocast)
            rec = rec or {"step": state["step"], "seconds": round(state["seconds"], 1),
                          "tokens": state["tokens"], "lr": lr, "loss": round(loss.item(), 4)}
            rec["heldout_loss"] = round(hl, 4)
            last_eval = time.time()
        if rec:
            log(json.dumps(rec))
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        if state["step"] == args.self_test_step:
            # Exercise checkpoint, export and evaluation now, so that a bug there shows in
            # the first minute instead of after the whole budget.
            save_checkpoint(torch, ckpt, model, opt, state)
            export_and_evaluate(args, torch, transformers, model, held_ids, out, self_test=True)
            last_save = time.time()
        if time.time() - last_save > args.save_every:
            save_checkpoint(torch, ckpt, model, opt, state)
            last_save = time.time()
    save_checkpoint(torch, ckpt, model, opt, state)
    log(f"trained {state['step']} steps, {state['tokens'] / 1e6:.1f}M tokens, "
        f"{state['seconds']:.0f}s in total")
    return model, state, n_params


# ---- export and evaluation -------------------------------------------------------------------
def export(args, torch, model, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    import transformers
    half = make_model(torch, transformers)
    half.load_state_dict(model.state_dict(), strict=True)
    half = half.to(torch.float16)
    half.save_pretrained(dst, safe_serialization=True)
    shutil.copy(os.path.join(args.work, "tokenizer.model"), os.path.join(dst, "tokenizer.model"))
    write_tokenizer_config(dst)


def chunk_perplexity(torch, model, ids, ctx, device):
    """mamba-perplexity's protocol: chunks of ctx ids, each from a fresh state after BOS."""
    import torch.nn.functional as F
    total, count, per_chunk = 0.0, 0, []
    with torch.no_grad():
        for s in range(0, len(ids), ctx):
            chunk = ids[s:s + ctx]
            x = torch.tensor([[BOS] + chunk], device=device)
            logits = model(x, use_cache=False).logits[0, :-1].float()
            nll = F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
            per_chunk.append(nll / len(chunk))
            total += nll
            count += len(chunk)
    return math.exp(total / count), total / count, count, per_chunk


def export_and_evaluate(args, torch, transformers, model, held_ids, out, self_test=False):
    import sentencepiece as spm
    dst = os.path.join(args.work, "hf")
    export(args, torch, model, dst)
    # The reference: the exported (f16-rounded) checkpoint, loaded back, in float32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = transformers.Mamba2ForCausalLM.from_pretrained(dst, dtype=torch.float32).to("cuda")
    ref.eval()
    sp = spm.SentencePieceProcessor(model_file=os.path.join(dst, "tokenizer.model"))
    with open(os.path.join(args.work, "corpus.json")) as f:
        corpus = json.load(f)
    text = heldout_sample(sp, corpus, args.sample_tokens)
    ids = sp.encode(text)
    ppl, nll, count, per_chunk = chunk_perplexity(torch, ref, ids, args.ctx, "cuda")
    held = torch.from_numpy(held_ids)
    max_windows = 8 if self_test else 10_000
    hl, hn = heldout_loss(torch, ref, held, args.seq_len, max_windows, "cuda", False)
    metrics = {"self_test": self_test, "sample": {"ctx": args.ctx, "n_tokens": count,
                                                  "nll": nll, "ppl": ppl,
                                                  "chunk_nll": per_chunk,
                                                  "first_ids": ids[:64]},
               "heldout": {"seq_len": args.seq_len, "n_tokens": hn, "loss": hl,
                           "ppl": math.exp(hl)}}
    samples = []
    for prompt in SAMPLE_PROMPTS[:1 if self_test else None]:
        x = torch.tensor([[BOS] + sp.encode(prompt)], device="cuda")
        try:
            with torch.no_grad():
                y = ref.generate(x, max_new_tokens=96, do_sample=False)
            samples.append(prompt + sp.decode(y[0, x.shape[1]:].tolist()))
        except Exception as e:  # noqa: BLE001 - samples are informative only
            samples.append(f"{prompt!r}: generate failed: {e}")
    del ref
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    report = os.path.join(args.work, "report")
    with open(os.path.join(report, "heldout_sample.py"), "w") as f:
        f.write(text)
    with open(os.path.join(report, "samples.txt"), "w") as f:
        f.write("\n\n==========\n\n".join(samples))
    write_metrics(args, metrics)
    log(f"{'self-test ' if self_test else ''}evaluation: sample ppl {ppl:.4f} over {count} "
        f"tokens, held-out loss {hl:.4f} (ppl {math.exp(hl):.3f}) over {hn} tokens")
    return metrics


def write_metrics(args, metrics):
    """metrics.json into the report and --out, then the tar of export and report."""
    for d in (os.path.join(args.work, "report"), args.out):
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1)
    log_path = os.path.join(args.work, "train_log.jsonl")
    if os.path.exists(log_path):
        shutil.copy(log_path, os.path.join(args.work, "report"))
    pack(args.work, args.out)


def pack(work, out):
    """Export and report as one tar, in parts of at most 15 MB (the transfer limit is 16 MiB)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(os.path.join(work, "hf"), arcname="demo_hf")
        tar.add(os.path.join(work, "report"), arcname="report")
    data = buf.getvalue()
    for old in os.listdir(out):
        if old.startswith("demo_hf.tar.part"):
            os.remove(os.path.join(out, old))
    part = 15_000_000
    for i in range(0, len(data), part):
        with open(os.path.join(out, f"demo_hf.tar.part{i // part:02d}"), "wb") as f:
            f.write(data[i:i + part])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="working directory (resumes from it)")
    ap.add_argument("--out", required=True, help="where the results go")
    ap.add_argument("--train-seconds", type=float, default=400,
                    help="training budget in seconds, in total over all runs")
    ap.add_argument("--run-seconds", type=float, default=1e9,
                    help="train at most this long in this run")
    ap.add_argument("--deadline", type=float, default=1e9,
                    help="this run must end within this many seconds of its start")
    ap.add_argument("--reserve", type=float, default=90,
                    help="seconds kept before --deadline for export and evaluation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--eval-every", type=float, default=60)
    ap.add_argument("--save-every", type=float, default=180)
    ap.add_argument("--self-test-step", type=int, default=20,
                    help="export and evaluate once at this step (0: never)")
    ap.add_argument("--ctx", type=int, default=512, help="perplexity chunk length")
    ap.add_argument("--sample-tokens", type=int, default=2048,
                    help="about how many ids the held-out perplexity sample has")
    ap.add_argument("--no-fast", dest="fast", action="store_false",
                    help="train transformers' own Mamba2ForCausalLM (slow; for comparison)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="corpus, tokenizer and data only (no torch needed)")
    args = ap.parse_args()
    os.makedirs(os.path.join(args.work, "report"), exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    corpus = build_corpus(args.work)
    stats = corpus_stats(corpus)
    log("corpus:", json.dumps(stats))
    sp, _ = train_tokenizer(args.work, corpus)
    train_ids, held_ids = build_data(args.work, sp, corpus)
    stats.update(train_tokens=int(len(train_ids)), heldout_tokens=int(len(held_ids)),
                 train_bytes_per_token=round(stats["train_bytes"] / len(train_ids), 3))
    log("data:", json.dumps(stats))
    with open(os.path.join(args.work, "report", "corpus_stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    if args.prepare_only:
        return

    import torch
    import transformers
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name()}")
    model, state, n_params = train(args, torch, transformers, train_ids, held_ids, args.out)
    metrics = export_and_evaluate(args, torch, transformers, model, held_ids, args.out)
    metrics.update(training=state, n_params=n_params, fast=type(model).__name__ == "LM",
                   corpus=stats, model=MODEL, vocab_size=VOCAB_SIZE,
                   batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, torch=torch.__version__, transformers=transformers.__version__,
                   gpu=torch.cuda.get_device_name())
    write_metrics(args, metrics)
    log("done")


if __name__ == "__main__":
    main()
