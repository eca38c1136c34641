#!/usr/bin/env bash
# Installs what is needed, builds the rock for Lua 5.3 and 5.4, and serves
# examples/helloworld.lua on 127.0.0.1:8080 (PORT=... to change) with Lua 5.4 until ^C.
#   bash scripts/serve.sh [app.lua]          then: curl http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .trees/5.4/bin/moonbridge "${1:-examples/helloworld.lua}"
