#!/usr/bin/env python3
"""What the GPU's own libraries reach on the decode projections' shapes, as a bound to aim at.

For each (rows, K, features) shape: cuBLAS (torch.matmul, f16, the rows times the transposed
weight as the engine's decode projections compute them) and a device-to-device copy of the
weight's bytes, each on a rotation of weight copies larger than L2 so that every call streams
its weight from HBM. Median of CUDA-event timings after warm-up.

Usage (on the GPU machine): python3 scripts/gemm_roofline.py [--shapes 64x2048x8192,...]
"""
import argparse
import statistics

import torch


def timed(fn, calls, reps=30):
    """us per call: `calls` back-to-back calls captured in a CUDA graph (no host launch gaps),
    the median over `reps` replays."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        for i in range(calls):  # warm-up, and cuBLAS picks its kernels before the capture
            fn(i)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(calls):
            fn(i)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / calls)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    # mamba-1.4b: in_proj, out_proj, x_proj, dt_proj, LM head at 1 and 64 rows
    ap.add_argument("--shapes", default="1x2048x8192,64x2048x8192,1x4096x2048,64x4096x2048,"
                    "64x4096x160,64x128x4096,64x2048x50280")
    args = ap.parse_args()
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(0))
    print("| rows x K x features | weight MB | cuBLAS us | cuBLAS TB/s | copy us | copy TB/s (read) |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in args.shapes.split(","):
        n, k, m = (int(v) for v in s.split("x"))
        wbytes = m * k * 2
        copies = max(2, (200 << 20) // wbytes + 1)  # more than L2 many times over
        ws = [torch.randn(m, k, device=dev, dtype=torch.float16) for _ in range(copies)]
        dst = [torch.empty_like(w) for w in ws]
        x = torch.randn(n, k, device=dev, dtype=torch.float16)
        y = torch.empty(n, m, device=dev, dtype=torch.float16)

        def mm(i):
            torch.matmul(x, ws[i % copies].t(), out=y)

        def cp(i):
            dst[i % copies].copy_(ws[i % copies])

        t_mm = timed(mm, 4 * copies)
        t_cp = timed(cp, 4 * copies)
        print(f"| {s} | {wbytes / 1e6:.1f} | {t_mm:.2f} | {wbytes / t_mm / 1e6:.2f} | "
              f"{t_cp:.2f} | {wbytes / t_cp / 1e6:.2f} |")
        del ws, dst


if __name__ == "__main__":
    main()
