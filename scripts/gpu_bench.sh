#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds mamba-bench from one or more source trees (all at
# once, the cores shared between them; checked on a CPU-only machine: two trees in 233 s on 2
# cores, then the bench stops at "no CUDA device"), makes
# random-weight f16 models of the published shapes with mamba-random, and runs the same
# mamba-bench command with every tree's build, one after another, so that versions are
# compared within one run on one GPU. Optionally times every decode-step kernel with ncu.
#
# Usage: scripts/gpu_bench.sh [VARIANT...]   (default: this tree; the first one makes the models)
#   VARIANT     a source tree, or a patch file (NAME.patch): this tree with the patch applied,
#               labelled NAME, so an experiment kept as a patch runs beside the tree it patches
#   MODELS      shapes to make and run (default "mamba-130m mamba-1.4b"); known shapes:
#               mamba-130m mamba-1.4b mamba-2.8b mamba2-2.7b
#   BENCH_ARGS  mamba-bench arguments after -m (default "-p 512 -n 128 -b 1,64 -r 3")
#   PROFILE     a model shape: time each kernel of its decode steps with ncu at batch 1 and at
#               PROFILE_BATCH (default 64), with the first tree's build (default: no profile)
#   PROFILE_FULL  with PROFILE: a kernel-name regex; ncu --set full on its first
#               PROFILE_FULL_COUNT (default 2) calls at PROFILE_BATCH rows, written as a report
#               (full-LABEL.ncu-rep) and as text (full-LABEL.txt, the details page)
#   BATCH       "REQUESTS x PROMPT_TOKENS" (e.g. 64x16): after the benches, every tree's
#               mamba-batch runs that many greedy requests of random prompt ids, 128 new
#               tokens each (ignore_eos), --parallel REQUESTS, on the first model; its own
#               summary line (tokens, seconds, tok/s) is printed (default: none)
#   MODEL_DIR   where the models go (default /tmp/models)
#   LOG_DIR     where the tables go (default $OUT, else ./gpu-bench-logs)
#   DEPS_DIR    unpacked Debian packages to build against (default .deps, used when present;
#               on the GPU machine: ../shared/scripts/device-deps.sh, then scripts/device-icu.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
srcs=("$@")
[ ${#srcs[@]} -gt 0 ] || srcs=("$root")
models=(${MODELS:-mamba-130m mamba-1.4b})
bench_args=${BENCH_ARGS:--p 512 -n 128 -b 1,64 -r 3}
mdir=${MODEL_DIR:-/tmp/models}
logs=${LOG_DIR:-${OUT:-$root/gpu-bench-logs}}
mkdir -p "$mdir" "$logs"

source "$root/scripts/gpu_env.sh"
cmake_args+=(-DMAMBA_TESTS=OFF)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"

labels=()
trees=()
for src in "${srcs[@]}"; do
  label=$(basename "$(realpath "$src")")
  if [[ $src == *.patch ]]; then
    label=$(basename "$src" .patch)
    tree=/tmp/gpu-bench-src/$label
    rm -rf "$tree" && mkdir -p "$tree"
    tar -C "$root" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$tree" -xf -
    patch -s -d "$tree" -p1 <"$src" || { echo "patch $src does not apply"; exit 1; }
    src=$tree
  fi
  labels+=("$label")
  trees+=("$src")
done

# All trees build at once, the cores shared between them (nvcc's memory grows with its jobs,
# so they are divided, not multiplied).
jobs=$(( $(nproc) / ${#labels[@]} )); [ "$jobs" -ge 2 ] || jobs=2
t0=$(date +%s)
for i in "${!labels[@]}"; do
  label=${labels[$i]}
  build=/tmp/gpu-bench-build/$label
  ( cmake -S "${trees[$i]}" -B "$build" "${cmake_args[@]}" >"$logs/configure-$label.log" 2>&1 &&
    cmake --build "$build" -j"$jobs" --target mamba-bench mamba-random ${BATCH:+mamba-batch} \
      >"$logs/build-$label.log" 2>&1 ) &
done
wait
for i in "${!labels[@]}"; do
  label=${labels[$i]}
  if [ ! -x "/tmp/gpu-bench-build/$label/bin/mamba-bench" ] ||
     grep -q "FAILED" "$logs/build-$label.log" 2>/dev/null; then
    echo "build of ${trees[$i]} failed:"
    grep -E "error|Error" -A3 "$logs"/*-"$label".log | head -40
    exit 1
  fi
done
echo "built ${labels[*]} in $(( $(date +%s) - t0 )) s"

files=()
for m in "${models[@]}"; do
  f=$mdir/$m-f16.gguf
  files+=("$f")
  [ -f "$f" ] && continue
  args=$(shape_args "$m") || exit 1
  /tmp/gpu-bench-build/${labels[0]}/bin/mamba-random $args --dtype f16 -o "$f" >/dev/null || exit 1
done
list=$(IFS=,; echo "${files[*]}")

for label in "${labels[@]}"; do
  echo "== $label: mamba-bench -m $list --device cuda $bench_args"
  /tmp/gpu-bench-build/$label/bin/mamba-bench -m "$list" --device cuda $bench_args \
    2>&1 | tee "$logs/bench-$label.md"
done

if [ -n "${BATCH:-}" ]; then
  nreq=${BATCH%x*} plen=${BATCH#*x}
  req=$logs/requests-$BATCH.jsonl
  python3 - "$nreq" "$plen" >"$req" <<'EOF'
import json, random, sys
n, p = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    print(json.dumps({"id": i, "prompt_ids": [rng.randrange(50000) for _ in range(p)],
                      "n_predict": 128, "ignore_eos": True}))
EOF
  for label in "${labels[@]}"; do
    echo "== $label: mamba-batch, $nreq requests of $plen prompt ids, 128 new tokens"
    /tmp/gpu-bench-build/$label/bin/mamba-batch -m "${files[0]}" --device cuda \
      --batch-file "$req" -o "$logs/batch-out-$label.jsonl" --parallel "$nreq" 2>&1 |
      grep -E "^done|rror"
  done
fi

if [ -n "${PROFILE:-}" ]; then
  f=$mdir/$PROFILE-f16.gguf
  [ -f "$f" ] || { echo "PROFILE=$PROFILE is not among MODELS"; exit 1; }
  ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  label=${labels[0]}
  for b in 1 "${PROFILE_BATCH:-64}"; do
      # A warm-up and one timed run of 3 decode steps each; graph nodes are profiled one by
      # one, and the table is the last step's.
      csv=$logs/ncu-$label-b$b.csv
      "$ncu" --clock-control none --metrics gpu__time_duration.sum --csv \
        /tmp/gpu-bench-build/$label/bin/mamba-bench -m "$f" --device cuda -p 0 -n 3 -b "$b" -r 1 \
        >"$csv" 2>/dev/null
      echo "== $label, $PROFILE, batch $b: decode kernels (ncu, each alone; the last step, us)"
      python3 - "$csv" <<'EOF'
import csv, sys, collections
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
# The last step: kernels from the last embedding lookup on. Projections are told apart by grid.
last = max(i for i, r in enumerate(rows) if "embedding" in r["Kernel Name"])
tot, cnt = {}, collections.Counter()
for r in rows[last:]:
    name = r["Kernel Name"].split("(")[0].split("<")[0].replace("void ", "").split("::")[-1]
    if "linear_decode" in name:
        name += " " + r["Grid Size"]
    scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
    v = float(r["Metric Value"].replace(",", "")) * scale[r["Metric Unit"]]
    tot[name] = tot.get(name, 0.0) + v
    cnt[name] += 1
s = sum(tot.values())
for k, v in sorted(tot.items(), key=lambda kv: -kv[1]):
    print(f"{k:48s} {cnt[k]:5d} x {v / cnt[k]:8.2f} us = {v:9.1f} us  {100 * v / s:5.1f}%")
print(f"{'sum':48s} {sum(cnt.values()):5d}           {s:9.1f} us")
EOF
  done
  if [ -n "${PROFILE_FULL:-}" ]; then
    rep=$logs/full-$label
    echo "== $label, $PROFILE, batch ${PROFILE_BATCH:-64}: ncu --set full on /$PROFILE_FULL/"
    "$ncu" --set full --import-source yes --kernel-name "regex:$PROFILE_FULL" \
      --launch-count "${PROFILE_FULL_COUNT:-2}" -f -o "$rep" \
      /tmp/gpu-bench-build/$label/bin/mamba-bench -m "$f" --device cuda -p 0 -n 3 \
      -b "${PROFILE_BATCH:-64}" -r 1 >/dev/null 2>"$rep.log" || tail -5 "$rep.log"
    "$ncu" --import "$rep.ncu-rep" --page details >"$rep.txt" 2>&1
    grep -E "Duration|DRAM Throughput|L2 Cache Throughput|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy" \
      "$rep.txt" | head -40
  fi
fi
