#!/usr/bin/env bash
# Hardening: what a hostile or unlucky client, a failing handler and a shutdown do to the
# server, as one table (scenario, figure, goal, held). On loopback only, every part bounded
# (about 4 minutes with the defaults); every process it starts is stopped by PID.
#
#   1. flood: COUNT HTTP/1.0 requests, 32 at a time, a new connection each (bench/
#      hardening_client.lua flood); wrk keep-alive for 5 s (-c32); 2 000 pipelined requests
#      on one connection. Goal: every request answered, no wrk error.
#   2. descriptors and RSS of a worker over the flood: open descriptors and VmRSS of the
#      one worker and of the master before (after 1 000 warm-up connections) and after.
#      Goal: no descriptor more, RSS within 1 MiB.
#   3. faults (bench/hardening_app.lua): a handler error, os.exit, memory_limit exceeded,
#      an endless loop under timeout(1), and a worker killed (SIGKILL) in the middle of a
#      response, while a normal client sends requests. Goal: each costs only its own
#      request (the expected answer or a close), every normal request is answered, and the
#      pool has its workers again afterwards.
#   4. graceful drain: SIGTERM to the master while 20 paced uploads of 8 MiB are in flight.
#      Goal: all 20 answered with the right length, the master exits 0.
#   5. misuse: 30 000 calls of moonbridge_io functions and methods with wrong arguments and
#      on closed, finished and live handles. Goal: no crash, every error a plain string.
#   6. slow clients (bench/slow_clients.sh, ATTACK=5): 300 incomplete heads and 200
#      silent connections against a classic pool of max_fork 32, then against a concurrent
#      pool. Goal: the classic pool serves a normal client again within busy_header_timeout
#      (2 s) plus 1 s; the concurrent pool answers every request.
#   7. streams (bench/stream_memory.sh, MIB=1024): a 1 GiB response and a 1 GiB upload;
#      its goals (peak RSS within 2 x minimum_output_chunk_size plus 1 MiB).
#
#   bash bench/hardening.sh
#   COUNT=2000 STREAM_MIB=64 bash bench/hardening.sh   # a quick look
#
# Env: COUNT HTTP/1.0 requests of the flood (20000); STREAM_MIB (1024); LUA 5.3 or 5.4
# (5.4). Exits 1 when a goal is not held (after printing the whole table).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
COUNT=${COUNT:-20000}
STREAM_MIB=${STREAM_MIB:-1024}
LUA=${LUA:-5.4}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PEERS=0
COMMAND="COUNT=$COUNT STREAM_MIB=$STREAM_MIB LUA=$LUA bash bench/hardening.sh"

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init
CLIENT=(taskset -c "$CLIENT_CPU" "lua$LUA" "$ROOT/bench/hardening_client.lua")
ROWS=()
FAILED=0

# add scenario figure goal held(yes/no)
add() {
  ROWS+=("| $1 | $2 | $3 | $4 |")
  [ "$4" = yes ] || FAILED=$((FAILED + 1))
}
held() { if eval "$1"; then echo yes; else echo no; fi; } # held 'condition' -> yes or no

fds_of() { find "/proc/$1/fd" -mindepth 1 2>/dev/null | wc -l; }
field() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); exit}}' <<<"$1"; }

# start_app workers: bench/hardening_app.lua; sets PORT and MASTER
start_app() {
  PORT=$(free_port)
  PORT=$PORT WORKERS=$1 DIR=$TMP start_server bench/hardening_app.lua
  wait_port "$PORT"
  wait_workers "$MASTER" "$1" || { echo "the workers did not start" >&2; cat "$TMP/server.log" >&2; exit 1; }
}

# ---- 1, 2: flood, descriptors and RSS ---------------------------------------------------
PORT=$(free_port)
cat >"$TMP/one.lua" <<LUA
local http = require "moonbridge_http"
listen{ { proto = "tcp", host = "127.0.0.1", port = $PORT },
  pre_fork = 1, min_fork = 1, max_fork = 1,
  connect = http.generate_handler(function(request)
    request:send_status("200 OK")
    request:send_data("Hello World!\n")
    return true
  end) }
LUA
start_server "$TMP/one.lua"
wait_port "$PORT"
wait_workers "$MASTER" 1
WORKER=$(workers_of "$MASTER" | head -1)
"${CLIENT[@]}" flood "$PORT" 1000 32 >/dev/null
fd0=$(fds_of "$WORKER"); mfd0=$(fds_of "$MASTER"); rss0=$(rss_kib "$WORKER"); mrss0=$(rss_kib "$MASTER")
out=$("${CLIENT[@]}" flood "$PORT" "$COUNT" 32)
ok=$(field "$out" ok); bad=$(field "$out" failed)
add "flood: $COUNT HTTP/1.0 requests, 32 at a time, a new connection each" "$ok answered, $bad failed" "all answered" "$(held '[ "$ok" = "$COUNT" ]')"
fd1=$(fds_of "$WORKER"); mfd1=$(fds_of "$MASTER"); rss1=$(rss_kib "$WORKER"); mrss1=$(rss_kib "$MASTER")
alive=$(held 'kill -0 "$WORKER"')
add "descriptors over the flood: worker, master" "worker $fd0 -> $fd1, master $mfd0 -> $mfd1 (same worker: $alive)" "no more" \
  "$(held '[ "$fd1" -le "$fd0" ] && [ "$mfd1" -le "$mfd0" ] && [ "$alive" = yes ]')"
add "RSS over the flood: worker, master" "worker $rss0 -> $rss1 KiB, master $mrss0 -> $mrss1 KiB" "within 1024 KiB" \
  "$(held '[ $((rss1 - rss0)) -le 1024 ] && [ $((mrss1 - mrss0)) -le 1024 ]')"
wrk_out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c32 -d5s "http://127.0.0.1:$PORT/" 2>&1)
reqs=$(awk '/requests in/ {print $1}' <<<"$wrk_out")
errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$wrk_out")
non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$wrk_out")
add "flood: wrk keep-alive, 32 connections, 5 s (one worker)" "$reqs requests, ${errs:-0} socket errors, ${non2xx:-0} non-2xx" "no error" \
  "$(held '[ "${errs:-0}" = 0 ] && [ "${non2xx:-0}" = 0 ] && [ -n "$reqs" ]')"
out=$("${CLIENT[@]}" pipeline "$PORT" 2000)
ok=$(field "$out" ok)
add "pipelining: 2000 requests in one write on one connection" "$ok answered in order" "all 2000" "$(held '[ "$ok" = 2000 ]')"
stop_pid "$MASTER"

# ---- 3: faults --------------------------------------------------------------------------
start_app 4
"${CLIENT[@]}" normal "$PORT" 8 >"$TMP/normal.out" &
NORMAL=$!
PIDS+=("$NORMAL")
code() { curl -s -o /dev/null --max-time "$2" -w '%{http_code}' "http://127.0.0.1:$PORT/$1" || true; }
sleep 0.5
c_error=$(code error 5)
c_exit=$(code exit 5)
c_memory=$(code memory 20)
t0=$(date +%s.%N)
c_loop=$(code loop 10)
t_loop=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
rm -f "$TMP/stream.pid"
curl -s -o "$TMP/stream.body" --max-time 10 "http://127.0.0.1:$PORT/stream" &
STREAM=$!
for _ in $(seq 50); do [ -s "$TMP/stream.pid" ] && break; sleep 0.1; done
sleep 0.5
spid=$(cat "$TMP/stream.pid" 2>/dev/null || true)
[ -n "$spid" ] && kill -KILL "$spid"
s_rc=0
wait "$STREAM" || s_rc=$?
s_size=$(stat -c %s "$TMP/stream.body" 2>/dev/null || echo 0)
wait "$NORMAL" || true
out=$(cat "$TMP/normal.out")
ok=$(field "$out" ok); bad=$(field "$out" failed)
sleep 1
workers=$(workers_of "$MASTER" | wc -l)
add "faults: handler error, os.exit, memory_limit, endless loop under timeout(1)" \
  "HTTP $c_error, $c_exit (closed), $c_memory, $c_loop (killed after $t_loop s)" "500, closed, 500, closed" \
  "$(held '[ "$c_error" = 500 ] && [ "$c_exit" = 000 ] && [ "$c_memory" = 500 ] && [ "$c_loop" = 000 ]')"
add "faults: worker killed mid-response (SIGKILL)" "curl status $s_rc after $((s_size / 1024)) KiB" "the stream breaks (curl status 18 or 56)" \
  "$(held '[ "$s_rc" = 18 ] || [ "$s_rc" = 56 ]')"
add "faults: a normal client meanwhile (8 s, a new connection each)" "$ok answered, $bad failed" "all answered" "$(held '[ "${bad:-1}" = 0 ] && [ "${ok:-0}" -gt 0 ]')"
add "faults: workers afterwards (min_fork 4)" "$workers" ">= 4" "$(held '[ "$workers" -ge 4 ]')"
stop_pid "$MASTER"

# ---- 4: graceful drain ------------------------------------------------------------------
start_app 20
"${CLIENT[@]}" uploads "$PORT" 20 8 >"$TMP/uploads.out" &
UP=$!
PIDS+=("$UP")
for _ in $(seq 100); do grep -q '^ready' "$TMP/uploads.out" && break; sleep 0.1; done
sleep 0.5
kill -TERM "$MASTER"
up_rc=0
wait "$UP" || up_rc=$?
m_rc=0
for _ in $(seq 300); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
wait "$MASTER" || m_rc=$?
out=$(grep '^ok' "$TMP/uploads.out" || true)
ok=$(field "$out" ok)
add "graceful drain: SIGTERM during 20 paced 8 MiB uploads" "$ok of 20 answered right, master exit code $m_rc" "20 of 20, exit 0" \
  "$(held '[ "$ok" = 20 ] && [ "$m_rc" = 0 ] && [ "$up_rc" = 0 ]')"

# ---- 5: misuse --------------------------------------------------------------------------
mkdir "$TMP/misuse"
m_rc=0
out=$(cd "$TMP/misuse" && timeout 120 "lua$LUA" "$ROOT/bench/hardening_client.lua" misuse 30000) || m_rc=$?
add "misuse: moonbridge_io calls with wrong arguments and dead handles" \
  "$(field "$out" calls) calls, $(field "$out" errors) errors, $(field "$out" non-string) not plain strings, exit $m_rc" \
  "no crash, only plain strings" "$(held '[ "$m_rc" = 0 ] && [ "$(field "$out" non-string)" = 0 ]')"

within() { awk -v t="$1" -v max="$2" 'BEGIN {exit !(t ~ /^[0-9.]+$/ && t + 0 <= max)}'; } # seconds max
all_of() { awk -v s="$1" 'BEGIN {split(s, a, " of "); exit !(a[1] > 0 && a[1] == a[2])}'; } # "N of M"
# ---- 6: slow clients --------------------------------------------------------------------
slow=$(ATTACK=5 LUA=$LUA bash bench/slow_clients.sh)
classic=$(grep -m1 '^| classic, max_fork 32 | silent' <<<"$slow" || true)
conc=$(grep -m1 '^| concurrent' <<<"$slow" || true)
c_again=$(awk -F' [|] ' '{print $5}' <<<"$classic")
c_ans=$(awk -F' [|] ' '{print $4}' <<<"$classic")
k_ans=$(awk -F' [|] ' '{print $4}' <<<"$conc")
add "slow clients: 300 incomplete heads + 200 silent, classic pool of max_fork 32" \
  "served again after ${c_again:-?}; $c_ans answered" "served again within 3 s" \
  "$(held 'within "${c_again% s}" 3')"
add "slow clients: the same against a concurrent pool (1 worker)" "$k_ans answered" "all answered" \
  "$(held 'all_of "$k_ans"')"

# ---- 7: streams -------------------------------------------------------------------------
streams=$(MIB=$STREAM_MIB LUA=$LUA bash bench/stream_memory.sh || true)
while IFS= read -r line; do
  ROWS+=("$line")
  case "$line" in *"| no |") FAILED=$((FAILED + 1)) ;; esac
done < <(grep '^| ' <<<"$streams" | grep -v -e '^| scenario' -e '^|---')

echo "## Hardening"
echo
echo "| scenario | figure | goal | held |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Command: \`$COMMAND\`"
[ "$FAILED" = 0 ]
