#!/usr/bin/env bash
# Benchmarks the pre-forking server on loopback for both Lua versions and prints a markdown
# table (numbers for docs/server.md):
#   - new connections/s for a raw echo app with two workers (one request per connection,
#     the server closes), driven by CLIENTS processes of bench/server_client.lua keeping
#     CONCURRENCY connections in flight each;
#   - fork latency: connection to handler start when no spare worker exists, next to the
#     same with a spare worker.
#   bash bench/server.sh [seconds=5] [clients=2] [concurrency=16] [latency_samples=100]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-5}
CLIENTS=${2:-2}
CONCURRENCY=${3:-16}
SAMPLES=${4:-100}
bash scripts/setup.sh >/dev/null
. scripts/env.sh
TMP=$(mktemp -d)
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
  "lua$1" -e 'local l = require("moonbridge_io").tcplisten("127.0.0.1", 0) print(l.local_tcpport) l:close()'
}

# start_server VERSION APP: starts the launcher in the background; sets SERVER and PORT
start_server() {
  PORT=$(free_port "$1")
  BENCH_APP=$2 BENCH_PORT=$PORT ".trees/$1/bin/moonbridge" bench/server_apps.lua 2>>"$TMP/server.log" &
  SERVER=$!
  for _ in $(seq 1 100); do
    "lua$1" -e "assert(require('moonbridge_io').tcpconnect('127.0.0.1', $PORT))" 2>/dev/null && break
    sleep 0.05
  done
}

stop_server() {
  kill -TERM "$SERVER"
  wait "$SERVER" || { echo "server exited with $?" >&2; cat "$TMP/server.log" >&2; exit 1; }
  SERVER=""
}

# percentile FILE P: the P-th percentile (0..100) of the numbers in FILE, in milliseconds
percentile() {
  sort -g "$1" | awk -v p="$2" '{ a[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.2f", a[i] * 1000 }'
}

declare -A RATE MEDIAN_FORK P90_FORK MEDIAN_SPARE P90_SPARE
for v in 5.4 5.3; do
  # connections per second
  start_server "$v" echo
  for c in $(seq 1 "$CLIENTS"); do
    "lua$v" bench/server_client.lua rate "$PORT" "$SECONDS_RUN" "$CONCURRENCY" >"$TMP/rate.$c" &
  done
  wait $(jobs -p | grep -v "^$SERVER$") 2>/dev/null || true
  stop_server
  RATE[$v]=$(cat "$TMP"/rate.* | awk '{ done += $1; failed += $2; if ($3 > t) t = $3 }
    END { if (failed > 0) { print "FAILED " failed > "/dev/stderr" } printf "%d", done / t }')
  # fork latency, and the same with a spare worker
  for app in fork spare; do
    start_server "$v" "$app"
    "lua$v" bench/server_client.lua latency "$PORT" "$SAMPLES" 0.05 >"$TMP/lat.$app"
    stop_server
  done
  MEDIAN_FORK[$v]=$(percentile "$TMP/lat.fork" 50)
  P90_FORK[$v]=$(percentile "$TMP/lat.fork" 90)
  MEDIAN_SPARE[$v]=$(percentile "$TMP/lat.spare" 50)
  P90_SPARE[$v]=$(percentile "$TMP/lat.spare" 90)
done

echo "Command: \`bash bench/server.sh $SECONDS_RUN $CLIENTS $CONCURRENCY $SAMPLES\` ($(nproc) CPUs, $(uname -sr))"
echo
echo "| measurement | Lua 5.4 | Lua 5.3 |"
echo "|---|---|---|"
echo "| echo, 2 workers: new connections/s ($CLIENTS clients x $CONCURRENCY in flight, ${SECONDS_RUN} s) | ${RATE[5.4]} | ${RATE[5.3]} |"
echo "| connection to handler start, no spare worker (fork): median / p90 ms | ${MEDIAN_FORK[5.4]} / ${P90_FORK[5.4]} | ${MEDIAN_FORK[5.3]} / ${P90_FORK[5.3]} |"
echo "| connection to handler start, spare worker: median / p90 ms | ${MEDIAN_SPARE[5.4]} / ${P90_SPARE[5.4]} | ${MEDIAN_SPARE[5.3]} / ${P90_SPARE[5.3]} |"
