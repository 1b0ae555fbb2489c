#!/usr/bin/env bash
# Installs the build dependencies (Debian/Ubuntu) and builds the engine into build/.
# Usage: scripts/setup.sh [extra cmake args...]   e.g. -DMAMBA_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja "$@" >/dev/null
cmake --build build -j"$(nproc)"
