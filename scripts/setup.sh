#!/usr/bin/env bash
# Installs what building and testing need (Debian packages; crates come from crates.io),
# then builds and installs the rock for Lua 5.3 and 5.4 into .trees/5.3 and .trees/5.4.
# Safe to run again: installed packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(lua5.3 lua5.4 liblua5.3-dev liblua5.4-dev luarocks lua-busted lua-socket wrk curl)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }

for v in 5.3 5.4; do
  echo "setup: building the rock for Lua $v"
  luarocks --lua-version "$v" make --tree ".trees/$v" moonbridge-scm-1.rockspec >/dev/null
done
