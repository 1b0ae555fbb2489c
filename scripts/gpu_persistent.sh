#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds test_cuda_model and mamba-bench once, runs the CUDA
# model tests (the persistent decode step against the per-kernel layers bit for bit, both
# against the CPU backend, batch invariance), then times decode with the persistent step on
# and off (MAMBA_PERSISTENT / MAMBA_NO_PERSISTENT: one build, same run, same GPU) on random f16
# models of the published Mamba-1 shapes.
#
# Usage: scripts/gpu_persistent.sh
#   MODELS     shapes (default "mamba-130m mamba-1.4b mamba-2.8b")
#   BENCH_ARGS mamba-bench arguments after -m (default "-p 0 -n 128 -b 1,2,8 -r 3")
#   TESTS      doctest filter for test_cuda_model (default: all but the fixtures)
#   LOG_DIR    logs (default $OUT, else build-gpu/persistent-logs)
#   DEPS_DIR   unpacked Debian packages (default .deps: ../shared/scripts/device-deps.sh, then
#              scripts/device-icu.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
logs=${LOG_DIR:-${OUT:-build-gpu/persistent-logs}}
mkdir -p "$logs"
source "$root/scripts/gpu_env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
t0=$(date +%s)
cmake -S . -B build-gpu "${cmake_args[@]}" >"$logs/configure.log" 2>&1 ||
  { tail -20 "$logs/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target test_cuda_model mamba-bench mamba-random \
  mamba-convert >"$logs/build.log" 2>&1 || { grep -E "error" -A3 "$logs/build.log" | head -30; exit 1; }
echo "built in $(( $(date +%s) - t0 )) s"

mdir=/tmp/models; mkdir -p $mdir
files=()
for m in ${MODELS:-mamba-130m mamba-1.4b mamba-2.8b}; do
  f=$mdir/$m-f16.gguf; files+=("$f")
  [ -f "$f" ] || build-gpu/bin/mamba-random $(shape_args "$m") --dtype f16 -o "$f" >/dev/null &
done

status=0
timeout 300 build-gpu/tests/test_cuda_model -tce="${TESTS:-fixtures*}" >"$logs/model.log" 2>&1
rc=$?; echo "test_cuda_model: exit $rc"; [ $rc -eq 0 ] || status=1
grep -E "^RESULT .*persistent" "$logs/model.log"
grep -E "ERROR|FAILED" "$logs/model.log" | head -20; tail -3 "$logs/model.log"
wait
list=$(IFS=,; echo "${files[*]}")
for v in 1 0; do
  echo "== persistent decode $([ $v = 1 ] && echo on || echo off)"
  MAMBA_PERSISTENT=$v MAMBA_NO_PERSISTENT=$((1 - v)) timeout 200 build-gpu/bin/mamba-bench -m "$list" \
    --device cuda ${BENCH_ARGS:--p 0 -n 128 -b 1,2,8 -r 3} 2>&1 | tee "$logs/bench-persistent-$v.md" |
    grep -v '^|--'
done
exit $status
