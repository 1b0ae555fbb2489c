#!/usr/bin/env bash
# Installs the build dependencies with apt (Debian/Ubuntu) when any is missing.
set -euo pipefail
pkgs="cmake ninja-build g++ pkg-config nlohmann-json3-dev libcli11-dev doctest-dev libsentencepiece-dev libicu-dev"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing:" $missing >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi
