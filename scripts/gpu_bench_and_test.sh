#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one call: times patches beside this tree
# (scripts/gpu_bench.sh), then runs the CUDA tests (scripts/gpu_test.sh, without the
# sanitizers) of this tree with each of TEST_PATCHES applied. The test builds start at once,
# beside gpu_bench.sh's builds, so that only the runs wait; the tests run after the timings,
# never during them.
#
# Usage: TEST_PATCHES="a.patch b.patch" scripts/gpu_bench_and_test.sh [VARIANT...]
#   VARIANT, MODELS, BENCH_ARGS, PROFILE, DEPS_DIR: as for scripts/gpu_bench.sh
#   TEST_PATCHES  patches whose trees get the CUDA tests (default: none)
#   TEST_TIMEOUT  seconds per test tree, build included (default 240)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
logs=${LOG_DIR:-${OUT:-$root/gpu-bench-logs}}
mkdir -p "$logs"
source "$root/scripts/gpu_env.sh"

tests=(${TEST_PATCHES:-})
for p in "${tests[@]}"; do
  name=$(basename "$p" .patch)
  tree=/tmp/gpu-test-src/$name
  rm -rf "$tree" && mkdir -p "$tree"
  tar -C "$root" --exclude='./build*' --exclude=./.git -cf - . | tar -C "$tree" -xf -
  patch -s -d "$tree" -p1 <"$p" || { echo "patch $p does not apply"; exit 1; }
  ( cmake -S "$tree" -B "$tree/build-gpu" "${cmake_args[@]}" >"$logs/test-configure-$name.log" 2>&1 &&
    cmake --build "$tree/build-gpu" -j4 --target test_cuda_ops test_cuda_model test_cuda_batch \
      mamba-convert mamba-batch \
      >"$logs/test-build-$name.log" 2>&1 ) &
done

"$root/scripts/gpu_bench.sh" "$@"
wait  # the test builds

for p in "${tests[@]}"; do
  name=$(basename "$p" .patch)
  echo "== CUDA tests with $name"
  DEPS_DIR=$deps LOG_DIR="$logs/tests-$name" SANITIZE=0 \
    timeout "${TEST_TIMEOUT:-240}" /tmp/gpu-test-src/$name/scripts/gpu_test.sh 2>&1 |
    grep -E "exit|comparisons|FAIL|failed|error" | head -20
done
