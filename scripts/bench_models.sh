#!/usr/bin/env bash
# Makes random-weight checkpoints of the published Mamba shapes (scripts/make_random_hf.py) and
# converts each to GGUF with mamba-convert, ready for mamba-bench. Run it on the GPU machine
# (torch + transformers initialise the weights on the GPU; a 7B shape takes well under a minute).
#
# Usage: scripts/bench_models.sh [MODEL...]
#   MODEL       mamba-130m mamba-1.4b mamba-2.8b mamba2-130m mamba2-2.7b codestral-7b
#               (default: all of them; `python3 scripts/make_random_hf.py --list` shows shapes)
#   OUT_DIR     where the .gguf files go (default /tmp/models): OUT_DIR/<model>-<outtype>.gguf
#   DTYPE       dtype of the HF checkpoint (default float16)
#   OUTTYPE     mamba-convert --outtype (default f16)
#   SEED        weights seed (default 0)
#   TOKENIZERS  folder with gpt-neox-20b.tokenizer.json and mistral-v3.tokenizer.model (default:
#               make_random_hf.py's, ../shared/data/tokenizers); without it the GGUFs have no
#               vocabulary, which mamba-bench does not need
#   BUILD_DIR   build folder holding bin/mamba-convert (default build); built when missing,
#               against DEPS_DIR (default .deps) when that exists, like scripts/gpu_test.sh
#   KEEP_HF=1   keep the HF checkpoints (OUT_DIR/hf/<model>); by default each is deleted once
#               converted, since all six in f16 plus their GGUFs need about 60 GB
#   FORCE=1     remake models whose .gguf already exists (default: skip them)
#
# Then, for example:
#   build/bin/mamba-bench -m /tmp/models/mamba-2.8b-f16.gguf --device cuda \
#       -p 512 -n 128 -b 1,8,64 -d 0,16384 -o json --plot /tmp/models/mamba-2.8b.svg
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT_DIR:-/tmp/models}
dtype=${DTYPE:-float16}
outtype=${OUTTYPE:-f16}
seed=${SEED:-0}
build=${BUILD_DIR:-build}
all=(mamba-130m mamba-1.4b mamba-2.8b mamba2-130m mamba2-2.7b codestral-7b)
models=("$@")
[ ${#models[@]} -gt 0 ] || models=("${all[@]}")

convert=$build/bin/mamba-convert
if [ ! -x "$convert" ]; then
  echo "== building mamba-convert in $build"
  cmake_args=(-G Ninja)
  deps=${DEPS_DIR:-$root/.deps}
  if [ -d "$deps/usr" ]; then
    cmake_args+=(-DCMAKE_PREFIX_PATH="$deps/usr" -DICU_ROOT="$deps/usr")
    export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  fi
  command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
  cmake -S . -B "$build" "${cmake_args[@]}" >/dev/null
  cmake --build "$build" -j"$(nproc)" --target mamba-convert >/dev/null
fi

tok_args=()
[ -n "${TOKENIZERS:-}" ] && tok_args=(--tokenizers "$TOKENIZERS")
mkdir -p "$out/hf"
for m in "${models[@]}"; do
  gguf=$out/$m-$outtype.gguf
  if [ -f "$gguf" ] && [ "${FORCE:-0}" != 1 ]; then
    echo "== $m: $gguf exists (FORCE=1 remakes it)"
    continue
  fi
  hf=$out/hf/$m
  echo "== $m"
  t=$(date +%s)
  python3 scripts/make_random_hf.py "$m" "$hf" --dtype "$dtype" --seed "$seed" "${tok_args[@]}"
  "$convert" "$hf" -o "$gguf" --outtype "$outtype"
  [ "${KEEP_HF:-0}" = 1 ] || rm -rf "$hf"
  echo "$m: $(du -h "$gguf" | cut -f1) in $(( $(date +%s) - t )) s"
done
ls -l "$out"/*.gguf
