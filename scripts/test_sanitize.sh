#!/usr/bin/env bash
# Builds the CPU engine with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ and
# runs the whole test suite under them (tools run by the tests are sanitized too). Any report
# fails the run: UBSan stops at the first finding, ASan reports leaks at exit.
# Usage: scripts/test_sanitize.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# -O1 -g1: optimised enough that the model tests stay fast under the sanitizers, with
# function names and line numbers in any report (-g1 keeps the line tables, not the local
# variables). Against -O2 -g it halves the compile time, which is most of this script's run.
cmake -S . -B build-asan -G Ninja -DMAMBA_SANITIZE=ON -DMAMBA_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  "$@" >/dev/null
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" --timeout 900
