#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: what each kernel of the Mamba-1 decode step costs inside
# the decode graph. Kernels timed alone (ncu) include their launch and ramp, which the
# programmatic launches hide in the graph, so this leaves chosen launches out of the step
# instead (scripts/proto/skip-kernels.patch, MAMBA_SKIP) and times the step without them.
# The outputs are wrong by design; only the timings mean anything.
#
# Usage: scripts/gpu_ablate.sh [VARIANT...]
#   VARIANT     further trees or patches to time beside the ablation tree (scripts/gpu_bench.sh)
#   MODEL       shape (default mamba-1.4b)
#   SKIPS       the MAMBA_SKIP sets, one run each (default "xproj dtproj scan outproj inproj
#               conv norm")
#   BENCH_ARGS  mamba-bench arguments after -m (default "-p 0 -n 64 -b 1,64 -r 2 --greedy")
#   LOG_DIR, MODEL_DIR, DEPS_DIR: as for scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-mamba-1.4b}
args=${BENCH_ARGS:--p 0 -n 64 -b 1,64 -r 2 --greedy}
deps=${DEPS_DIR:-$PWD/.deps}
[ -d "$deps/usr" ] && export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
# The ablation tree first: with MAMBA_SKIP unset it runs main's step, the baseline.
MODELS=$model BENCH_ARGS=$args scripts/gpu_bench.sh scripts/proto/skip-kernels.patch "$@" ||
  exit 1
bench=/tmp/gpu-bench-build/skip-kernels/bin/mamba-bench
for s in ${SKIPS:-xproj dtproj scan outproj inproj conv norm}; do
  echo "== MAMBA_SKIP=$s"
  MAMBA_SKIP=$s "$bench" -m "${MODEL_DIR:-/tmp/models}/$model-f16.gguf" --device cuda $args 2>&1 |
    grep -E "^\| .*tg|rror"
done
