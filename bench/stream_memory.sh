#!/usr/bin/env bash
# Memory of a classic worker streaming large bodies: one worker (pre_fork = min_fork =
# max_fork = 1) sends a response of MIB MiB (send_data in 64 KiB pieces, chunked, as an
# application generating output would) and receives an upload of MIB MiB read with
# stream_request_body_now, counting the bytes. For each, the worker's RSS before and its
# peak RSS during the transfer (VmHWM after resetting it through /proc/PID/clear_refs; the
# highest of samples taken every 50 ms where that is not allowed). The goal (issue 13): the
# peak stays below the RSS before plus 2 x minimum_output_chunk_size plus SLACK_KIB, that is,
# memory does not grow with the body.
#
#   bash bench/stream_memory.sh                  # MIB=1024 LUA=5.4 SLACK_KIB=1024
#   MIB=64 LUA=5.3 bash bench/stream_memory.sh   # a quick check
#
# Prints a markdown table (scenario, figure, goal, held) and the command line; exits 1 when
# a transfer fails; every process it starts is stopped at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA=${LUA:-5.4}
MIB=${MIB:-1024}
SLACK_KIB=${SLACK_KIB:-1024}
CHUNK=1024 # minimum_output_chunk_size, set explicitly below (it is also the default)
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=0
# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init

port=$(free_port)
cat >"$TMP/app.lua" <<LUA
local http = require "moonbridge_http"
local piece = string.rep("s", 65536)
listen{ { proto = "tcp", host = "127.0.0.1", port = $port },
  pre_fork = 1, min_fork = 1, max_fork = 1,
  connect = http.generate_handler({ minimum_output_chunk_size = $CHUNK,
    request_body_size_limit = ($MIB + 1) * 1024 * 1024 }, function(request)
    if request.path == "stream" then
      request:send_status("200 OK")
      request:send_header("Content-Type", "application/octet-stream")
      for _ = 1, tonumber(request.query:sub(2)) * 16 do request:send_data(piece) end
    elseif request.path == "upload" then
      local n = 0
      request:stream_request_body_now(function(chunk) n = n + #chunk end)
      request:send_status("200 OK")
      request:send_data(n)
    else
      request:send_status("200 OK")
      request:send_data("ready")
    end
    return true
  end) }
LUA
start_server "$TMP/app.lua"
wait_port "$port"
worker=$(workers_of "$MASTER")
[ -n "$worker" ] || { echo "no worker started" >&2; cat "$TMP/server.log" >&2; exit 1; }

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# transfer get|post -> "RSS-before PEAK seconds" (KiB, KiB, s); the client's byte count is
# checked by bench/stream_client.lua itself
transfer() {
  local before peak sampler t0 t1 clear=0
  before=$(rss_kib "$worker")
  if echo 5 >"/proc/$worker/clear_refs" 2>/dev/null; then clear=1; fi
  peak=$before
  (while :; do rss_kib "$worker"; sleep 0.05; done) >"$TMP/samples" &
  sampler=$!
  t0=$(date +%s.%N)
  timeout 600 taskset -c "$CLIENT_CPU" "lua$LUA" bench/stream_client.lua "$port" "$1" "$MIB" \
    >"$TMP/client.out" || { kill "$sampler"; echo "the $1 transfer failed" >&2; cat "$TMP/server.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  kill "$sampler"
  wait "$sampler" 2>/dev/null || true
  if [ "$clear" = 1 ]; then
    peak=$(hwm_kib "$worker")
  else
    peak=$(sort -n "$TMP/samples" | tail -1)
  fi
  echo "$before $peak $(echo "$t1 - $t0" | bc -l | cut -c1-5)"
}

read -r get_before get_peak get_s < <(transfer get)
read -r post_before post_peak post_s < <(transfer post)
now=$(workers_of "$MASTER")
[ "$now" = "$worker" ] || echo "warning: the worker changed during the run ($worker -> $now)" >&2

bound=$((2 * CHUNK / 1024 + SLACK_KIB))
row() { # scenario before peak seconds
  local growth=$(($3 - $2)) held=no
  [ "$growth" -le "$bound" ] && held=yes
  echo "| $1 | RSS $2 KiB before, peak $3 KiB (+$growth KiB), $(echo "$MIB / $4" | bc) MiB/s | peak <= before + $bound KiB | $held |"
}
echo "Command: \`MIB=$MIB LUA=$LUA SLACK_KIB=$SLACK_KIB bash bench/stream_memory.sh\` (Lua $LUA, $(uname -sr))."
echo
echo "| scenario | figure | goal | held |"
echo "|---|---|---|---|"
row "a $MIB MiB response (send_data, 64 KiB pieces, chunked)" "$get_before" "$get_peak" "$get_s"
row "a $MIB MiB upload (stream_request_body_now)" "$post_before" "$post_peak" "$post_s"
