#!/usr/bin/env bash
# Memory of a classic worker over a long run: one worker (pre_fork = min_fork = max_fork =
# 1) answering as examples/helloworld.lua, one keep-alive connection, RSS and PSS of the
# worker (from /proc/PID/status and /proc/PID/smaps_rollup) when idle after its start, after
# the first FIRST requests and after TOTAL requests in all. The growth from FIRST to TOTAL
# is what a leak or a heap that never settles would show.
#
#   bash bench/memory.sh                       # FIRST=1000 TOTAL=1000000 LUA=5.4
#   TOTAL=100000 LUA=5.3 bash bench/memory.sh  # a quick check
#
# Prints a markdown table and the command line; every process it starts is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA=${LUA:-5.4}
FIRST=${FIRST:-1000}
TOTAL=${TOTAL:-1000000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=0 # bench_init: no nginx
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init

port=$(free_port)
cat >"$TMP/app.lua" <<LUA
local http = require "moonbridge_http"
listen{ { proto = "tcp", host = "127.0.0.1", port = $port },
  pre_fork = 1, min_fork = 1, max_fork = 1,
  connect = http.generate_handler(function(request)
    request:send_status("200 OK")
    request:send_header("Content-Type", "text/plain; charset=UTF-8")
    request:send_data("Hello World!\n")
    return true
  end) }
LUA
start_server "$TMP/app.lua"
worker=""
for _ in $(seq 100); do
  worker=$(workers_of "$MASTER")
  [ -n "$worker" ] && break
  sleep 0.1
done
[ -n "$worker" ] || { echo "no worker started" >&2; cat "$TMP/server.log" >&2; exit 1; }
sleep 0.5

mem() { # -> "RSS PSS" in KiB of the worker
  echo "$(rss_kib "$worker") $(awk '/^Pss:/ {print $2}' "/proc/$worker/smaps_rollup")"
}
# requests N: N keep-alive requests on one connection (bench/keepalive_client.lua, on
# core CLIENT_CPU); prints N
requests() {
  taskset -c "$CLIENT_CPU" "lua$LUA" bench/keepalive_client.lua "$port" "$1"
}

read -r rss0 pss0 < <(mem)
done1=$(requests "$FIRST")
read -r rss1 pss1 < <(mem)
done2=$(requests $((TOTAL - done1)))
read -r rss2 pss2 < <(mem)
now=$(workers_of "$MASTER")
[ "$now" = "$worker" ] || echo "warning: the worker changed during the run ($worker -> $now)" >&2

echo "Command: \`FIRST=$FIRST TOTAL=$TOTAL LUA=$LUA bash bench/memory.sh\` (Lua $LUA, $(uname -sr))."
echo
echo "| worker (PID $worker) | requests served | RSS | PSS |"
echo "|---|---|---|---|"
echo "| idle, after its start | 0 | $rss0 KiB | $pss0 KiB |"
echo "| after the first requests | $done1 | $rss1 KiB | $pss1 KiB |"
echo "| after all | $((done1 + done2)) | $rss2 KiB | $pss2 KiB |"
echo
echo "Growth from the first $done1 requests to the end: $((rss2 - rss1)) KiB of RSS, $((pss2 - pss1)) KiB of PSS."
