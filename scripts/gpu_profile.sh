#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one call: builds mamba-bench, makes a random f16 model of
# a published shape, and says where its decode step's time goes:
#   1. nsys: one step's kernels on a timeline at each batch size, summarised by
#      scripts/nsys_gaps.py (mean duration, gap and critical-path time per kernel and per
#      position in a layer), when nsys is installed;
#   2. ncu: the first KERNEL_COUNT launches of each kernel regex, by SASS instruction, with
#      their stall reasons (scripts/ncu_hotspots.py), and the details page's headline lines.
#
# Usage: scripts/gpu_profile.sh
#   MODEL       shape (default mamba-1.4b; see scripts/gpu_bench.sh)
#   BATCHES     decode batch sizes (default "1 64")
#   KERNELS     "BATCH:REGEX ..." for ncu (default "1:mma_kernel 64:gemm_kernel")
#   KERNEL_COUNT  launches per regex (default 4: layer 0's projections)
#   LOG_DIR     where the CSVs and reports go (default $OUT, else ./gpu-profile-logs)
#   DEPS_DIR    as for scripts/gpu_bench.sh
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
logs=${LOG_DIR:-${OUT:-$root/gpu-profile-logs}}
mkdir -p "$logs"
source "$root/scripts/gpu_env.sh"
cmake_args+=(-DMAMBA_TESTS=OFF)
build=/tmp/gpu-profile-build
cmake -S . -B "$build" "${cmake_args[@]}" >"$logs/configure.log" 2>&1 &&
  cmake --build "$build" -j"$(nproc)" --target mamba-bench mamba-random >"$logs/build.log" 2>&1 ||
  { grep -E "error" -A3 "$logs/build.log" | head -30; exit 1; }
bench=$build/bin/mamba-bench
model=${MODEL:-mamba-1.4b}
f=/tmp/models/$model-f16.gguf
mkdir -p /tmp/models
if [ ! -f "$f" ]; then
  a=$(shape_args "$model") || exit 1
  "$build/bin/mamba-random" $a --dtype f16 -o "$f" >/dev/null || exit 1
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

if command -v nsys >/dev/null; then
  for b in ${BATCHES:-1 64}; do
    rep=$logs/nsys-b$b
    nsys profile -t cuda --cuda-graph-trace=node -f true -o "$rep" \
      "$bench" -m "$f" --device cuda -p 0 -n 8 -b "$b" -r 1 >"$rep.log" 2>&1 &&
      nsys stats -r cuda_gpu_trace -f csv -o "$rep" "$rep.nsys-rep" >>"$rep.log" 2>&1
    echo "== nsys, $model, batch $b: one decode step"
    python3 scripts/nsys_gaps.py "${rep}_cuda_gpu_trace.csv" || tail -5 "$rep.log"
  done
else
  echo "== nsys is not installed: no timeline"
fi

ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for spec in ${KERNELS:-1:mma_kernel 64:gemm_kernel}; do
  b=${spec%%:*} re=${spec#*:}
  rep=$logs/ncu-b$b-${re//[^a-zA-Z0-9_]/_}
  echo "== ncu, $model, batch $b, /$re/ (first ${KERNEL_COUNT:-4} launches)"
  "$ncu" --set full --import-source yes --kernel-name "regex:$re" --launch-count "${KERNEL_COUNT:-4}" \
    -f -o "$rep" "$bench" -m "$f" --device cuda -p 0 -n 3 -b "$b" -r 1 >"$rep.log" 2>&1 ||
    { tail -5 "$rep.log"; continue; }
  "$ncu" --import "$rep.ncu-rep" --page details >"$rep.txt" 2>&1
  grep -E "^  [a-z].*\(|Duration|DRAM Throughput|Registers Per|Achieved Occupancy" "$rep.txt" | head -40
  # The SASS page carries the per-instruction stall samples (the CUDA-source page does not).
  "$ncu" --import "$rep.ncu-rep" --page source --csv --print-source sass >"$rep-sass.csv" 2>&1
  python3 scripts/ncu_hotspots.py "$rep-sass.csv" 20
done
