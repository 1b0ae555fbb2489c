#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite. GPU tests skip (and say
# so) on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh "$@"
ctest --test-dir build --output-on-failure -j"$(nproc)"
