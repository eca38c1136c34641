#!/usr/bin/env bash
# Slow and idle clients against a pool, and a normal client during the attack (issue 13,
# item 1). On loopback, bounded (about 2 minutes with the defaults).
#
# Each row: bench/http_app.lua (moonbridge_http's defaults unless the row says otherwise)
# as a classic pool of max_fork = WORKERS, or a concurrent pool (one worker,
# concurrency 1000); then an attack held open by bench/idle_client.lua:
#   - heads+silent: HEADS connections that sent an incomplete head ("GET / HTTP/1.1\r\n
#     Host: a\r\nX-Slow: ") and OTHERS that connected and sent nothing;
#   - heads+keep-alive: HEADS incomplete heads and OTHERS keep-alive connections that had
#     one request answered and stay idle;
# and, once the attack is open, a normal client: sequential requests (curl, each
# --max-time 5) for ATTACK seconds. Printed: requests answered / made, the time from the
# attack being open until the first answer ("served again after"), the median and
# slowest answered request, and how many attack connections the server still held when
# the attack ended. The row with busy_header_timeout = false shows the classic pool
# without the bound (idle keep-alive connections are still given up).
#
#   bash bench/slow_clients.sh
#   ATTACK=5 bash bench/slow_clients.sh      # a quick look
#
# Env: ATTACK seconds of normal requests per row (15); HEADS (300); OTHERS (200); WORKERS
# max_fork of the classic pool (32); LUA rock tree 5.3 or 5.4 (5.4). Prints a markdown
# table and the command line; every process it starts is stopped (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
ATTACK=${ATTACK:-15}
HEADS=${HEADS:-300}
OTHERS=${OTHERS:-200}
WORKERS=${WORKERS:-32}
LUA=${LUA:-5.4}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=0
COMMAND="ATTACK=$ATTACK HEADS=$HEADS OTHERS=$OTHERS WORKERS=$WORKERS LUA=$LUA bash bench/slow_clients.sh"

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

now() { date +%s.%N; }

# row label concurrency busy attack: one line of the table
row() {
  local label=$1 conc=$2 busy=$3 attack=$4 port workers=$WORKERS
  port=$(free_port)
  [ "$conc" -gt 1 ] && workers=1
  # DEFER_ACCEPT=0: silent clients must reach the pool (with defer_accept the kernel would
  # hold them back, which is not what this attack measures)
  local env=(PORT="$port" WORKERS="$workers" CONCURRENCY="$conc" DEFER_ACCEPT=0)
  [ -n "$busy" ] && env+=(BUSY_HEADER_TIMEOUT="$busy")
  env "${env[@]}" taskset -c "$SERVER_CPU" "$MOONBRIDGE" bench/http_app.lua >"$TMP/server.log" 2>&1 &
  local server=$!
  PIDS+=("$server")
  wait_port "$port"
  wait_workers "$server" "$workers" || { echo "$label: workers did not start" >&2; exit 1; }
  local other_mode=silent
  [ "$attack" = keepalive ] && other_mode=idle
  taskset -c "$CLIENT_CPU" "lua$LUA" bench/idle_client.lua slow "$port" "$HEADS" 600 60 >"$TMP/heads.out" 2>&1 &
  local c1=$!
  taskset -c "$CLIENT_CPU" "lua$LUA" bench/idle_client.lua "$other_mode" "$port" "$OTHERS" 600 60 >"$TMP/others.out" 2>&1 &
  local c2=$!
  PIDS+=("$c1" "$c2")
  local r1 r2
  r1=$(wait_ready "$TMP/heads.out" "$c1" 70)
  r2=$(wait_ready "$TMP/others.out" "$c2" 70)
  local t0 t_end ok=0 n=0 first="" times=() out code t
  t0=$(now)
  t_end=$(awk -v a="$t0" -v d="$ATTACK" 'BEGIN {printf "%.3f", a + d}')
  while awk -v a="$(now)" -v b="$t_end" 'BEGIN {exit !(a < b)}'; do
    out=$(taskset -c "$CLIENT_CPU" curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}' "http://127.0.0.1:$port/" || true)
    code=${out%% *}
    t=${out#* }
    n=$((n + 1))
    if [ "$code" = 200 ]; then
      ok=$((ok + 1))
      times+=("$t")
      [ -n "$first" ] || first=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f s", b - a}')
    fi
  done
  stop_pid "$c1"
  stop_pid "$c2"
  local held1 held2 stats="-"
  held1=$(awk '/^open / {print $2}' "$TMP/heads.out")
  held2=$(awk '/^open / {print $2}' "$TMP/others.out")
  if [ "${#times[@]}" -gt 0 ]; then
    stats=$(printf '%s\n' "${times[@]}" | sort -g | awk '{t[NR] = $1} END {printf "%.1f ms / %.0f ms", t[int((NR + 1) / 2)] * 1000, t[NR] * 1000}')
  fi
  echo "| $label | $attack | $(awk '{print $2}' <<<"$r1") + $(awk '{print $2}' <<<"$r2") | $ok of $n | ${first:-never} | $stats | ${held1:-?} + ${held2:-?} |"
  stop_pid "$server"
}

echo "## Slow and idle clients: $HEADS incomplete heads + $OTHERS others, then normal requests for $ATTACK s"
echo
echo "| pool | attack | attack connections opened | normal requests answered | served again after | answered: median / slowest | attack connections still held at the end |"
echo "|---|---|---|---|---|---|---|"
row "classic, max_fork $WORKERS" 1 "" silent
row "classic, max_fork $WORKERS" 1 "" keepalive
row "classic, max_fork $WORKERS, busy_header_timeout = false" 1 false silent
row "concurrent, 1 worker, concurrency 1000" 1000 "" silent
echo
echo "Command: \`$COMMAND\`"
