#!/usr/bin/env python3
"""Where a decode step's time goes between its kernels, from an nsys GPU trace.

Usage (on the GPU machine):
  nsys profile -t cuda --cuda-graph-trace=node -o step mamba-bench ... -p 0 -n 8 -b B -r 1
  nsys stats -r cuda_gpu_trace -f csv -o step step.nsys-rep
  python3 scripts/nsys_gaps.py step_cuda_gpu_trace.csv
Takes the last decode step (the kernels from the last embedding lookup on) and prints, per
kernel name, how many ran, their mean duration, the mean gap before each (its start minus the
latest end of the kernels before it; negative: it started early, as programmatic dependent
launch allows, and overlapped them) and the mean time each adds to the step (its end minus that
latest end: these sum to the step's wall time), then the wall time against the kernel time.
"""
import collections
import csv
import sys


def short(name):
    n = name.split("(")[0].split("<")[0].replace("void ", "")
    return n.split("::")[-1]


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    start_key = next(k for k in rows[0] if k.startswith("Start"))
    dur_key = next(k for k in rows[0] if k.startswith("Duration"))
    name_key = "Name" if "Name" in rows[0] else next(k for k in rows[0] if "Name" in k)
    ks = []
    for r in rows:
        try:
            ks.append((int(float(r[start_key])), int(float(r[dur_key])), r[name_key]))
        except (ValueError, KeyError):
            pass
    ks = [k for k in ks if "memcpy" not in k[2].lower() and "memset" not in k[2].lower()]
    ks.sort()
    last = max(i for i, k in enumerate(ks) if "embedding" in k[2])
    step = ks[last:]
    agg = collections.OrderedDict()
    end = step[0][0]
    for i, (s, d, n) in enumerate(step):
        key = short(n)
        gap = s - end if i else 0
        a = agg.setdefault(key, [0, 0, 0, 0])
        a[0] += 1
        a[1] += d
        a[2] += gap
        a[3] += max(0, s + d - end)
        end = max(end, s + d)
    wall = end - step[0][0]
    busy = sum(d for _, d, _ in step)
    print(f"{'kernel':44s} {'n':>5s} {'mean us':>9s} {'mean gap us':>12s} {'adds us':>9s}"
          f" {'adds total':>11s}")
    for k, (c, d, g, a) in sorted(agg.items(), key=lambda kv: -kv[1][3]):
        print(f"{k[:44]:44s} {c:5d} {d / c / 1e3:9.2f} {g / c / 1e3:12.2f} {a / c / 1e3:9.2f}"
              f" {a / 1e3:11.1f}")
    # One layer's kernels in order (positions relative to the scan step, which every layer runs
    # once), averaged over the layers: the projections share one kernel name.
    anchors = [i for i, k in enumerate(step) if "scan" in k[2] or "ssd" in k[2]]
    if len(anchors) >= 3:
        period = anchors[1] - anchors[0]
        first = anchors[0] - min(anchors[0], period // 2)
        print(f"one layer ({period} kernels), mean over {len(anchors) - 1} layers:")
        ends = [0] * len(step)
        e = step[0][0]
        for i, (s0, d, _) in enumerate(step):
            ends[i] = e
            e = max(e, s0 + d)
        for pos in range(period):
            idx = [first + pos + L * period for L in range(len(anchors) - 1)]
            idx = [i for i in idx if i < len(step)]
            d = sum(step[i][1] for i in idx) / len(idx)
            g = sum(step[i][0] - ends[i] for i in idx) / len(idx)
            a = sum(max(0, step[i][0] + step[i][1] - ends[i]) for i in idx) / len(idx)
            print(f"  {pos:2d} {short(step[idx[0]][2])[:40]:40s} {d / 1e3:8.2f} us, gap "
                  f"{g / 1e3:6.2f}, adds {a / 1e3:6.2f}")
    gaps = sum(a[2] for a in agg.values())
    print(f"step wall {wall / 1e3:.1f} us, kernel time {busy / 1e3:.1f} us, "
          f"sum of gaps {gaps / 1e3:.1f} us, {len(step)} kernels")


if __name__ == "__main__":
    main()
