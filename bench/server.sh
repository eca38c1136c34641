#!/usr/bin/env bash
# Benchmarks the pre-forking server on loopback for both Lua versions and prints a markdown
# table (the numbers of docs/server.md):
#   - new connections/s for a raw echo app with two workers (one request per connection,
#     the server closes), driven by CLIENTS processes of bench/server_client.lua keeping
#     CONCURRENCY connections in flight each;
#     and the server's CPU time per connection (which the load on a shared machine disturbs
#     less than the rate);
#   - fork latency: connection to handler start when no spare worker exists, next to the
#     same with a spare worker.
# The Lua versions alternate over ROUNDS rounds and medians are reported, so that load from
# other processes on a shared machine hits both alike.
#   bash bench/server.sh [seconds=5] [clients=2] [concurrency=16] [latency_samples=50] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN=${1:-5}
CLIENTS=${2:-2}
CONCURRENCY=${3:-16}
SAMPLES=${4:-50}
ROUNDS=${5:-3}
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
  BENCH_APP=$2 BENCH_PORT=$PORT ".trees/$1/bin/moonbridge" bench/server_apps.lua \
    >/dev/null 2>>"$TMP/server.log" &
  SERVER=$!
  for _ in $(seq 1 100); do
    "lua$1" -e "assert(require('moonbridge_io').tcpconnect('127.0.0.1', $PORT))" 2>/dev/null && return
    sleep 0.05
  done
  echo "server did not start" >&2
  cat "$TMP/server.log" >&2
  exit 1
}

stop_server() {
  kill -TERM "$SERVER"
  local code=0
  wait "$SERVER" || code=$?
  SERVER=""
  if [ "$code" -ne 0 ]; then
    echo "server exited with $code" >&2
    cat "$TMP/server.log" >&2
    exit 1
  fi
}

# CPU time (user + system, in clock ticks) used so far by the server: master and workers
server_ticks() {
  local pids="$SERVER $(cat "/proc/$SERVER/task/$SERVER/children")"
  # utime and stime, counted after the ")" that ends the command name: a worker's
  # name ("moonbridge: wor") holds a space, which shifts the plain field numbers
  for p in $pids; do sed 's/.*) //' "/proc/$p/stat"; done | awk '{ s += $12 + $13 } END { print s }'
}
TCK=$(getconf CLK_TCK)

# median of the numbers in a file
median() {
  sort -g "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}

# percentile FILE P: the P-th percentile (0..100) of the seconds in FILE, in milliseconds
percentile() {
  sort -g "$1" | awk -v p="$2" '{ a[NR] = $1 } END { i = int((NR - 1) * p / 100) + 1; printf "%.2f", a[i] * 1000 }'
}

for round in $(seq 1 "$ROUNDS"); do
  for v in 5.4 5.3; do
    # connections per second
    start_server "$v" echo
    pids=()
    for c in $(seq 1 "$CLIENTS"); do
      "lua$v" bench/server_client.lua rate "$PORT" "$SECONDS_RUN" "$CONCURRENCY" >"$TMP/rate.$c" &
      pids+=($!)
    done
    wait "${pids[@]}"
    ticks=$(server_ticks)
    stop_server
    cat "$TMP"/rate.* | awk -v out="$TMP/failed" -v ticks="$ticks" -v tck="$TCK" -v cpu="$TMP/cpu-$v" \
      '{ done += $1; failed += $2; if ($3 > t) t = $3 }
      END { printf "%d\n", done / t; printf "%.1f\n", ticks / tck * 1e6 / done >> cpu
            if (failed > 0) print failed >> out }' >>"$TMP/rate-$v"
    # latency with and without a spare worker
    for app in fork spare; do
      start_server "$v" "$app"
      "lua$v" bench/server_client.lua latency "$PORT" "$SAMPLES" 0.05 >>"$TMP/lat-$app-$v"
      stop_server
    done
  done
done
if [ -s "$TMP/failed" ]; then
  echo "some connections failed: $(awk "{ s += \$1 } END { print s }" "$TMP/failed")" >&2
  exit 1
fi

row() { # label, then one value per version
  echo "| $1 | $2 | $3 |"
}
echo "Command: \`bash bench/server.sh $SECONDS_RUN $CLIENTS $CONCURRENCY $SAMPLES $ROUNDS\`" \
  "($(nproc) CPUs, $(uname -sr); medians of $ROUNDS rounds)"
echo
echo "| measurement | Lua 5.4 | Lua 5.3 |"
echo "|---|---|---|"
row "echo, 2 workers: new connections/s ($CLIENTS client processes x $CONCURRENCY in flight)" \
  "$(median "$TMP/rate-5.4")" "$(median "$TMP/rate-5.3")"
row "echo: server CPU per connection (master + workers, user + system), µs" \
  "$(median "$TMP/cpu-5.4")" "$(median "$TMP/cpu-5.3")"
for app in fork spare; do
  label="connection to handler start, no spare worker (fork): median / p90 ms"
  [ "$app" = spare ] && label="connection to handler start, spare worker: median / p90 ms"
  row "$label" \
    "$(percentile "$TMP/lat-$app-5.4" 50) / $(percentile "$TMP/lat-$app-5.4" 90)" \
    "$(percentile "$TMP/lat-$app-5.3" 50) / $(percentile "$TMP/lat-$app-5.3" 90)"
done
