#!/usr/bin/env bash
# Benchmarks moonbridge_io against LuaSocket (Debian lua-socket) on loopback, for both Lua
# versions, using the rocks that scripts/setup.sh installed.
#   bash bench/io.sh [bulk_mib=1024] [lines=1000000] [rounds=5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. scripts/env.sh
for v in 5.4 5.3; do
  "lua$v" bench/io_bench.lua "${1:-1024}" "${2:-1000000}" "${3:-5}"
  echo
done
