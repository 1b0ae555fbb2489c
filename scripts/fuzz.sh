#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang with ASan+UBSan) and runs each one for
# SECONDS, starting from its seed corpus in tests/fuzz/corpus/<target>.
#
# Usage: scripts/fuzz.sh SECONDS [target...]     targets: gguf safetensors hf_config tokenizer batch_line
#   FUZZ_JOBS=N   run N targets at once (default 1)
#   FUZZ_TIMEOUT=S  seconds one input may take before it counts as a hang (default 10; raise it
#                 on a machine whose cores are shared, where a starved process trips 10 s)
#
# New inputs found go to build-fuzz/corpus/<target> (the committed seeds are not touched);
# a crash, hang or sanitizer report leaves its input in build-fuzz/artifacts/<target>/ and
# makes the script exit 1. Prints one line per target: executions, exec/s, corpus, result.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz.sh SECONDS [target...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf safetensors hf_config tokenizer batch_line)

# clang and libFuzzer's runtime (Debian: clang, libclang-rt-14-dev), plus the build deps.
pkgs="clang libclang-rt-14-dev cmake ninja-build nlohmann-json3-dev libcli11-dev doctest-dev libsentencepiece-dev libicu-dev"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: $missing" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

B=build-fuzz
CC=clang CXX=clang++ cmake -S . -B $B -G Ninja -DMAMBA_FUZZ=ON -DMAMBA_CUDA=OFF -DMAMBA_TESTS=OFF >/dev/null
cmake --build $B -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")

run_one() {
  local t=$1
  local corpus=$B/corpus/$t art=$B/artifacts/$t/ log=$B/logs/$t.log
  mkdir -p "$corpus" "$art" "$B/logs"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: an input that makes the parser
  # allocate 2 GB is a finding too (the files are small, the engine must not trust their sizes).
  # Sanitizer options make every report fatal, leaks included.
  local rc=0
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$B/fuzz/fuzz_$t" "$corpus" "tests/fuzz/corpus/$t" -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art" >"$log" 2>&1 || rc=$?
  local execs rate units
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(ls "$corpus" | wc -l)
  if [ $rc -eq 0 ]; then
    printf '%-12s %12s execs %8s exec/s  corpus %6s  ok\n' "$t" "${execs:-?}" "${rate:-?}" "$units"
  else
    printf '%-12s %12s execs %8s exec/s  corpus %6s  FAILED (exit %d): see %s and %s\n' \
      "$t" "${execs:-?}" "${rate:-?}" "$units" "$rc" "$log" "$art"
  fi
  return $rc
}

jobs=${FUZZ_JOBS:-1}
status=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
