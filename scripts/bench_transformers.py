#!/usr/bin/env python3
"""Measures transformers' own speed on the published Mamba shapes, with the same random weights
as scripts/make_random_hf.py, so that mamba-bench's figures have a reference from the same run:

    python3 scripts/bench_transformers.py mamba-1.4b mamba2-2.7b [-p 512] [-n 128] [-b 1,64]
                                          [-r 3] [--dtype float16] [-o md|json]

Tests, named as mamba-bench names them:
  ppP      one forward pass over a P-token prompt (no cache), P / seconds; only the last
           position's logits when the model accepts logits_to_keep
  tgN      N tokens decoded one by one through generate() with the recurrent cache, greedy,
           from a 1-token prompt: N / (time of generate(N + 1 new) - time of generate(1 new)),
           so the prefill and generate()'s setup are not counted
  tgN xB   the same for B sequences at once, B * N / seconds

Each figure is the median of -r timed runs after one warm-up run, timed with CUDA events, with
the standard deviation. The path transformers takes is printed: without the mamba_ssm and
causal_conv1d packages it is the eager (pure PyTorch) path, which is what this project compares
against. Needs torch and transformers (5.x) and a GPU.
"""
import argparse
import inspect
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_random_hf  # noqa: E402  (the shapes and the weight initialisation)


def int_list(s):
    return [int(v) for v in s.split(",") if v]


def timed(fn, reps):
    """Median and stdev of fn()'s GPU time in seconds over reps runs, after one warm-up."""
    import torch
    fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), (statistics.stdev(times) if len(times) > 1 else 0.0), times


def fast_path(arch):
    """Whether transformers would use the mamba_ssm / causal_conv1d kernels for this arch."""
    try:
        if arch == "mamba":
            from transformers.models.mamba import modeling_mamba as m
        else:
            from transformers.models.mamba2 import modeling_mamba2 as m
        return bool(getattr(m, "is_fast_path_available", False))
    except Exception:  # noqa: BLE001  (a layout change in transformers: report unknown)
        return None


def bench_model(name, args, rows):
    import torch
    t0 = time.time()
    model = make_random_hf.build(name, args.dtype, args.seed, "cuda", t0)
    model.eval()
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    arch = make_random_hf.MODELS[name][0]
    path = fast_path(arch)
    path_name = {True: "mamba_ssm kernels", False: "eager", None: "unknown"}[path]
    make_random_hf.log(t0, f"{name}: path {path_name}, logits_to_keep {'yes' if keep else 'no'}")

    def add(test, tokens, med, sd, times):
        rows.append(dict(model=name, dtype=args.dtype, path=path_name, test=test,
                         tokens_per_s=tokens / med, stdev=tokens * sd / med**2,
                         seconds=times))
        make_random_hf.log(t0, f"{name} {test}: {tokens / med:,.1f} tok/s")

    def attempt(test, fn):
        """Runs one test; a test that does not fit in GPU memory becomes a row saying so (the
        eager Mamba-2 path materialises (chunk, chunk, heads, d_state) products at pp512) and
        the others still run."""
        try:
            fn()
        except torch.OutOfMemoryError as e:
            first = str(e).split(".")[0]
            rows.append(dict(model=name, dtype=args.dtype, path=path_name, test=test,
                             tokens_per_s=None, stdev=None, error=f"out of GPU memory ({first})"))
            make_random_hf.log(t0, f"{name} {test}: out of GPU memory: {first}")
            torch.cuda.empty_cache()

    with torch.inference_mode():
        for p in args.p:
            ids = torch.randint(0, vocab, (1, p), device="cuda", generator=gen)
            kw = dict(use_cache=False)
            if keep:
                kw["logits_to_keep"] = 1

            def pp():
                med, sd, times = timed(lambda: model(input_ids=ids, **kw), args.r)
                add(f"pp{p}", p, med, sd, times)
            attempt(f"pp{p}", pp)
        for n in args.n:
            for b in args.b:
                ids = torch.randint(0, vocab, (b, 1), device="cuda", generator=gen)
                test = f"tg{n}" + (f" x{b}" if b > 1 else "")

                def generate(new):
                    return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          max_new_tokens=new, min_new_tokens=new,
                                          do_sample=False, use_cache=True,
                                          pad_token_id=model.config.pad_token_id or 0)

                def tg():
                    out = generate(n + 1)
                    if out.shape[1] != n + 2:
                        raise SystemExit(f"{name}: generate made {out.shape[1] - 1} tokens, "
                                         f"not {n + 1}")
                    m1, s1, t1 = timed(lambda: generate(1), args.r)
                    mn, sn, tn = timed(lambda: generate(n + 1), args.r)
                    add(test, b * n, mn - m1, (sn**2 + s1**2) ** 0.5,
                        [a - c for a, c in zip(tn, t1)])
                attempt(test, tg)
    del model
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", choices=sorted(make_random_hf.MODELS))
    ap.add_argument("-p", type=int_list, default=[512], help="prompt lengths (pp tests)")
    ap.add_argument("-n", type=int_list, default=[128], help="generated tokens (tg tests)")
    ap.add_argument("-b", type=int_list, default=[1], help="sequences per tg test")
    ap.add_argument("-r", type=int, default=3, help="timed repetitions")
    ap.add_argument("--dtype", default="float16", choices=make_random_hf.DTYPES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", default="md", choices=("md", "json"))
    args = ap.parse_args()

    import torch
    import transformers
    if not torch.cuda.is_available():
        raise SystemExit("bench_transformers.py needs a GPU")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.cuda.get_device_name()}", file=sys.stderr)
    rows = []
    for name in args.models:
        bench_model(name, args, rows)
    if args.o == "json":
        print(json.dumps(rows, indent=1))
        return
    print("| model | dtype | path | test | t/s |")
    print("|---|---|---|---|---:|")
    for r in rows:
        speed = (r["error"] if r["tokens_per_s"] is None
                 else f"{r['tokens_per_s']:,.2f} ± {r['stdev']:,.2f}")
        print(f"| {r['model']} | {r['dtype']} | {r['path']} | {r['test']} | {speed} |")


if __name__ == "__main__":
    main()
