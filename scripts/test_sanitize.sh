#!/usr/bin/env bash
# Builds the CPU engine with AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ and
# runs the whole test suite under them (tools run by the tests are sanitized too). Any report
# fails the run: UBSan stops at the first finding, ASan reports leaks at exit.
# Usage: scripts/test_sanitize.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# RelWithDebInfo: optimised, so the model tests stay fast under the sanitizers, with line
# numbers in any report.
cmake -S . -B build-asan -G Ninja -DMAMBA_SANITIZE=ON -DMAMBA_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build build-asan -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ctest --test-dir build-asan --output-on-failure -j"$(nproc)" --timeout 900
