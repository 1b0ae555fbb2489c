#!/usr/bin/env python3
"""Where a kernel's warps stall, by source line, from an ncu report with source counters.

Usage (on the GPU machine): ncu --import REP.ncu-rep --page source --csv --print-source cuda \
  > src.csv; python3 scripts/ncu_hotspots.py src.csv [TOP]
Prints, per kernel section of the CSV, the TOP (default 30) source lines by warp-stall samples
(all samples), with their share and the line's text. `--print-source sass` works too: its rows
are instructions, by address.
"""
import csv
import sys


def sections(path):
    """Yields (kernel, header, rows) for each table in the CSV (ncu prints one per kernel)."""
    kernel, header, rows, shown = "", None, [], 0
    for rec in csv.reader(open(path, errors="replace")):
        if not rec:
            continue
        if rec[0] == "Kernel Name" and len(rec) > 1:
            if header:
                yield kernel, header, rows
            kernel, header, rows = rec[1], None, []
        elif any(c.startswith("Warp Stall Sampling") for c in rec):
            if header:
                yield kernel, header, rows
            header, rows = rec, []
        elif header:
            rows.append(rec)
        elif shown < 20 and not kernel:  # text before the first table: an unknown format
            print("|", ",".join(rec)[:200])
            shown += 1
    if header:
        yield kernel, header, rows


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
    seen = set()
    for kernel, header, rows in sections(path):
        line_col = next((header.index(c) for c in ("#", "Line", "Line No", "Address")
                         if c in header), 0)
        src_col = header.index("Source") if "Source" in header else line_col + 1
        stall = [i for i, c in enumerate(header) if c.startswith("Warp Stall Sampling (All")]
        if not stall:
            print("no stall column in", header)
            continue
        s = stall[0]
        vals = []
        for r in rows:
            try:
                vals.append((float(r[s].replace(",", "") or 0), r[line_col], r[src_col].strip()))
            except (ValueError, IndexError):
                pass
        total = sum(v for v, _, _ in vals) or 1.0
        ranked = sorted(vals, key=lambda t: -t[0])[:top]
        # ncu may print a kernel's table twice; show each once.
        key = (kernel, total, tuple(src for _, _, src in ranked[:5]))
        if key in seen:
            continue
        seen.add(key)
        # Stall reasons over the whole kernel, where the table has them (the SASS page does).
        reasons = [i for i, c in enumerate(header) if c.startswith("stall_") and "Not Issued" not in c]
        sums = []
        for i in reasons:
            t = 0.0
            for r in rows:
                try:
                    t += float(r[i].replace(",", "") or 0)
                except (ValueError, IndexError):
                    pass
            sums.append((t, header[i][len("stall_"):]))
        all_reasons = sum(t for t, _ in sums) or 1.0
        print(f"== {kernel[:100]}")
        print(f"   {len(rows)} lines, {total:.0f} stall samples" +
              ("; by reason: " + ", ".join(f"{n} {100 * t / all_reasons:.0f}%"
                                           for t, n in sorted(sums, reverse=True)[:6])
               if sums else ""))
        for v, ln, src in ranked:
            print(f"{100 * v / total:5.1f}%  {ln:>5}  {src[:110]}")


if __name__ == "__main__":
    main()
