#!/usr/bin/env bash
# Tokenizer encoding speed on 1 MB of English text (a benchmark, not a test).
#
#   scripts/bench_tokenizer.sh [TEXT_FILE]
#
# Without TEXT_FILE, 1 MB of English is assembled from documentation every Debian system has
# (licence texts, Perl's diagnostics, Vim's user manual). Tokenizers are the real ones in
# ../shared/data/tokenizers (or $MAMBA_TOKENIZER_DIR); the tool is build/bin/mamba-tokenize
# (or $MAMBA_BIN_DIR/mamba-tokenize). The first run starts with an empty word cache.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${MAMBA_BIN_DIR:-build/bin}/mamba-tokenize"
tok_dir="${MAMBA_TOKENIZER_DIR:-../shared/data/tokenizers}"
[[ -x "$bin" ]] || { echo "error: $bin not found (build first)" >&2; exit 1; }

text="${1:-}"
if [[ -z "$text" ]]; then
  text="$(mktemp)"
  trap 'rm -f "$text"' EXIT
  shopt -s nullglob
  perl_diag=(/usr/share/perl/*/pod/perldiag.pod)  # may match a version and its symlink
  sources=(/usr/share/common-licenses/{GPL-3,Apache-2.0,GFDL-1.3,LGPL-2.1,MPL-2.0}
           "${perl_diag[@]:0:1}" /usr/share/vim/vim*/doc/usr_*.txt)
  ((${#sources[@]})) || { echo "error: no English documentation found; pass a text file" >&2; exit 1; }
  head -c 1000000 < <(cat "${sources[@]}") > "$text"  # not a pipe: pipefail would see SIGPIPE
fi

for tokenizer in gpt-neox-20b.tokenizer.json mistral-v3.tokenizer.model mistral-v1.tokenizer.model; do
  if [[ -f "$tok_dir/$tokenizer" ]]; then
    echo "== $tokenizer"
    "$bin" --tokenizer "$tok_dir/$tokenizer" --bench "$text" --bench-runs 5 --no-special
  else
    echo "== $tokenizer: not found in $tok_dir, skipped"
  fi
done
