#!/usr/bin/env bash
#   bash scripts/setup.sh [--check-rust]
# Checks the Rust toolchain (with --check-rust, only that), installs what building and
# testing need (Debian packages; crates come from crates.io), then builds and installs the
# rock for Lua 5.3 and 5.4 into .trees/5.3 and .trees/5.4. Safe to run again: installed
# packages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust: the rust-version of Cargo.toml (the newest any locked dependency needs; mlua 0.12
# needs 1.88). Debian 12's own rustc/cargo (1.63) are too old: install with rustup.
RUST_MIN=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
RUSTUP_HELP="install a current toolchain with rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
  . \"\$HOME/.cargo/env\"
(or, if rustup is installed already: rustup update stable). Debian's rustc/cargo packages
are too old."
version_ge() { # a, b: whether version a >= version b
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}
for tool in rustc cargo; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup: moonbridge needs $tool >= $RUST_MIN (not found on PATH); $RUSTUP_HELP" >&2
    exit 1
  fi
  found=$("$tool" --version 2>/dev/null | sed -n "s/^$tool \([0-9][0-9.]*\).*/\1/p")
  if [ -z "$found" ] || ! version_ge "$found" "$RUST_MIN"; then
    echo "setup: moonbridge needs $tool >= $RUST_MIN (found ${found:-no version} at" \
      "$(command -v "$tool")); $RUSTUP_HELP" >&2
    exit 1
  fi
done
[ "${1:-}" = "--check-rust" ] && exit 0

# netcat-openbsd: `nc -N` in the README's examples.
PACKAGES=(lua5.3 lua5.4 liblua5.3-dev liblua5.4-dev luarocks lua-busted lua-socket wrk curl
  netcat-openbsd)
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

for v in 5.3 5.4; do
  echo "setup: building the rock for Lua $v"
  luarocks --lua-version "$v" make --tree ".trees/$v" moonbridge-scm-1.rockspec >/dev/null
done
