#!/usr/bin/env bash
# Adds ICU to .deps/ for building on the GPU machine, whose image has the ICU 74 runtime
# (/lib/x86_64-linux-gnu/libicuuc.so.74, libicui18n.so.74) but no ICU headers, and whose
# working tree may carry at most 64 MiB (the full libicu-dev/libicu72 packages are ~85 MB).
# It unpacks Debian's libicu-dev headers, relabels them as ICU 74 (the symbol suffix and the
# C++ namespace follow the version number; the C and C++ APIs the tokenizer uses are the same
# in 72 and 74), and links the unversioned library names to the machine's ICU 74 libraries.
# Only for builds that run on that machine. Run after ../shared/scripts/device-deps.sh.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest="$root/.deps/usr"
tmp=$(mktemp -d); chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq libicu-dev)
dpkg-deb -x "$tmp"/libicu-dev_*.deb "$tmp/x"
mkdir -p "$dest/include" "$dest/lib/x86_64-linux-gnu"
rm -rf "$dest/include/unicode"
cp -r "$tmp/x/usr/include/unicode" "$dest/include/"
major=$(sed -n 's/^#define U_ICU_VERSION_MAJOR_NUM \([0-9]*\).*/\1/p' "$dest/include/unicode/uvernum.h")
sed -i -e "s/^#define U_ICU_VERSION_MAJOR_NUM $major/#define U_ICU_VERSION_MAJOR_NUM 74/" \
  -e "s/^#define U_ICU_VERSION_SUFFIX _$major/#define U_ICU_VERSION_SUFFIX _74/" \
  -e "s/^#define U_ICU_VERSION \"$major\.[0-9]*\"/#define U_ICU_VERSION \"74.2\"/" \
  -e "s/^#define U_ICU_VERSION_SHORT \"$major\"/#define U_ICU_VERSION_SHORT \"74\"/" \
  "$dest/include/unicode/uvernum.h"
for lib in icuuc icui18n icudata; do
  ln -sfn /lib/x86_64-linux-gnu/lib$lib.so.74 "$dest/lib/x86_64-linux-gnu/lib$lib.so"
done
echo "ICU headers (relabelled 74) and library links in $dest"
