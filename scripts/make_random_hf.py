#!/usr/bin/env python3
"""Makes a random-weight Hugging Face checkpoint in one of the published Mamba shapes, for speed
measurements at real model sizes (mamba-bench) without downloading anything.

    python3 scripts/make_random_hf.py mamba-1.4b OUTDIR [--dtype float16] [--seed 0]
    python3 scripts/make_random_hf.py --list

The directory it writes is what transformers' save_pretrained writes (config.json,
model*.safetensors, generation_config.json) plus the tokenizer of the published model, so
`mamba-convert OUTDIR -o out.gguf --outtype f16` takes it like a downloaded checkpoint:

  mamba-130m, mamba-1.4b, mamba-2.8b   MambaForCausalLM, GPT-NeoX tokenizer.json, tied head
  mamba2-130m, mamba2-2.7b             Mamba2ForCausalLM, GPT-NeoX tokenizer.json, tied head
  codestral-7b                         Mamba2ForCausalLM (Mamba-Codestral-7B-v0.1), Mistral v3
                                       tokenizer.model, separate head

Shapes are those of the published configs (state-spaces/mamba-*: vocab 50277 padded to a
multiple of 8; state-spaces/mamba2-*: padded to a multiple of 16, d_state 128, head_dim 64, one
group, chunk 256; mistralai/Mamba-Codestral-7B-v0.1: 8 groups, vocab 32768).

Weights: the model is built directly on the GPU (torch.device context; the CPU when there is
none, which is slow for the big shapes) in float32, so transformers' own initialisation runs
there. Then every projection, the embedding and a separate head are redrawn from N(0, 0.02) with
a seeded generator; A_log, D, dt_bias / dt_proj, the conv1d and the norms keep transformers'
initialisation (S4D-real A, D = 1, dt log-uniform in [time_step_min, time_step_max]), so the
recurrence behaves like a freshly initialised Mamba. Then everything is cast to --dtype and saved.

Needs torch and transformers (written against transformers 5.x). The tokenizers come from
--tokenizers DIR (default: ../shared/data/tokenizers next to the repository, or
$MAMBA_TOKENIZERS): gpt-neox-20b.tokenizer.json and mistral-v3.tokenizer.model. Without them the
checkpoint is written with no tokenizer (mamba-convert warns; mamba-bench does not need one).
"""
import argparse
import json
import os
import shutil
import sys
import time

# name: (transformers class, config keyword arguments, tokenizer kind)
NEOX_IDS = dict(bos_token_id=0, eos_token_id=0, pad_token_id=1)  # <|endoftext|>, <|padding|>
MODELS = {
    "mamba-130m": ("mamba", dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280), "neox"),
    "mamba-1.4b": ("mamba", dict(hidden_size=2048, num_hidden_layers=48, vocab_size=50280), "neox"),
    "mamba-2.8b": ("mamba", dict(hidden_size=2560, num_hidden_layers=64, vocab_size=50280), "neox"),
    "mamba2-130m": ("mamba2", dict(hidden_size=768, num_hidden_layers=24, vocab_size=50288,
                                   n_groups=1, tie_word_embeddings=True), "neox"),
    "mamba2-2.7b": ("mamba2", dict(hidden_size=2560, num_hidden_layers=64, vocab_size=50288,
                                   n_groups=1, tie_word_embeddings=True), "neox"),
    "codestral-7b": ("mamba2", dict(hidden_size=4096, num_hidden_layers=64, vocab_size=32768,
                                    n_groups=8, tie_word_embeddings=False, bos_token_id=1,
                                    eos_token_id=2, pad_token_id=None), "mistral"),
}

# Shared by every shape of each architecture (the published values).
MAMBA1_COMMON = dict(state_size=16, expand=2, conv_kernel=4, time_step_rank="auto",
                     use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
                     tie_word_embeddings=True, **NEOX_IDS)
MAMBA2_COMMON = dict(state_size=128, expand=2, conv_kernel=4, head_dim=64, chunk_size=256,
                     use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
                     time_step_limit=(0.0, float("inf")), rms_norm=True)

DTYPES = ("float16", "bfloat16", "float32")
INIT_STD = 0.02


def config_kwargs(name):
    arch, shape, _ = MODELS[name]
    if arch == "mamba":
        return {**MAMBA1_COMMON, **shape}
    kw = {**MAMBA2_COMMON, **NEOX_IDS, **shape}
    kw["num_heads"] = kw["expand"] * kw["hidden_size"] // kw["head_dim"]
    return kw


def default_tokenizers():
    env = os.environ.get("MAMBA_TOKENIZERS")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(root), "shared", "data", "tokenizers")


def log(t0, msg):
    print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)


def build(name, dtype_name, seed, device_name, t0):
    import torch
    import transformers

    arch = MODELS[name][0]
    kw = config_kwargs(name)
    if arch == "mamba":
        config, cls = transformers.MambaConfig(**kw), transformers.MambaForCausalLM
    else:
        config, cls = transformers.Mamba2Config(**kw), transformers.Mamba2ForCausalLM
    device = torch.device(device_name)

    # Construct on the device: every parameter is allocated there and transformers'
    # initialisation (the A_log / D / dt values this script keeps) runs there too.
    torch.manual_seed(seed)
    with device:
        model = cls(config)
    log(t0, f"built {cls.__name__} on {device}")

    # Redraw the projections, the embedding and an untied head from N(0, INIT_STD).
    # Parameters shared by tying appear once in named_parameters().
    gen = torch.Generator(device=device).manual_seed(seed)
    redrawn = 0
    with torch.no_grad():
        for pname, p in model.named_parameters():
            leaf = pname.rsplit(".", 2)
            module = leaf[-2] if len(leaf) >= 2 else ""
            if module in ("in_proj", "x_proj", "out_proj", "embeddings", "lm_head") \
                    and pname.endswith(".weight"):
                p.normal_(0.0, INIT_STD, generator=gen)
                redrawn += p.numel()
            elif module in ("in_proj", "out_proj") and pname.endswith(".bias"):
                p.zero_()
        head, embd = model.lm_head.weight, model.backbone.embeddings.weight
        if config.tie_word_embeddings and head.data_ptr() != embd.data_ptr():
            head.copy_(embd)  # tied in the config but not shared in memory: keep them equal
    model = model.to(getattr(torch, dtype_name))
    if device.type == "cuda":
        torch.cuda.synchronize()
    n = sum(p.numel() for p in model.parameters())
    log(t0, f"initialised: {n / 1e9:.3f}B parameters ({redrawn / 1e9:.3f}B redrawn), {dtype_name}")
    return model


def write_tokenizer(name, out_dir, tok_dir, t0):
    kind = MODELS[name][2]
    if kind == "neox":
        src, dst = os.path.join(tok_dir, "gpt-neox-20b.tokenizer.json"), "tokenizer.json"
        cfg = {"add_bos_token": False, "add_eos_token": False, "bos_token": "<|endoftext|>",
               "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "tokenizer_class": "GPTNeoXTokenizer"}  # pad: config.json's pad_token_id
    else:
        src, dst = os.path.join(tok_dir, "mistral-v3.tokenizer.model"), "tokenizer.model"
        cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
               "eos_token": "</s>", "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}
    if not os.path.isfile(src):
        print(f"warning: {src} not found: no tokenizer written (give --tokenizers DIR)",
              file=sys.stderr)
        return
    shutil.copy(src, os.path.join(out_dir, dst))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    log(t0, f"tokenizer: {dst} from {src}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", choices=sorted(MODELS), help="published shape")
    ap.add_argument("out", nargs="?", help="output directory (replaced if it exists)")
    ap.add_argument("--dtype", default="float16", choices=DTYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    ap.add_argument("--tokenizers", default=default_tokenizers(),
                    help="folder with gpt-neox-20b.tokenizer.json and mistral-v3.tokenizer.model")
    ap.add_argument("--list", action="store_true", help="print the shapes and exit")
    args = ap.parse_args()

    if args.list:
        for name in MODELS:
            print(f"{name:13s} {MODELS[name][0]:6s} {json.dumps(config_kwargs(name))}")
        return
    if not args.model or not args.out:
        ap.error("give a model name and an output directory (or --list)")

    t0 = time.time()
    import torch
    import transformers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        print("warning: no GPU: initialising on the CPU (minutes for the large shapes)",
              file=sys.stderr)
    log(t0, f"{args.model}: torch {torch.__version__}, transformers {transformers.__version__}, "
            f"{device}")

    model = build(args.model, args.dtype, args.seed, device, t0)
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    model.save_pretrained(args.out, safe_serialization=True)
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    log(t0, f"saved {args.out} ({size / 2**30:.2f} GiB)")
    write_tokenizer(args.model, args.out, args.tokenizers, t0)


if __name__ == "__main__":
    main()
