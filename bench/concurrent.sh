#!/usr/bin/env bash
# Benchmark of concurrent pools (`listen{ ..., concurrency = N }`: one worker process serves
# many connections as coroutines over epoll), on loopback, in three parts:
#
# 1. Throughput. wrk (CONN connections) against, in the same run:
#    - moonbridge, concurrent pool: bench/http_app.lua with CONCURRENCY=1000, that is ONE
#      worker (pre_fork = min_fork = max_fork = 1) running up to 1000 handlers;
#    - moonbridge, classic pool: bench/http_app.lua with WORKERS=40 (40 worker processes);
#    - nginx `content_by_lua_block` and nginx `return 200` (bench/http_nginx.conf, one worker
#      process), when nginx is installed (with its Lua module for the first);
#    - the pre-fork floor (bench/prefork_floor.c, 40 processes; keep-alive only).
#    Cases: GET keep-alive "/", GET with `Connection: close`, GET of a 1 MiB response, POST of
#    a 64 KiB body (bench/http_post.lua). The servers are pinned to core SERVER_CPU, wrk to
#    CLIENT_CPU; every case runs ROUNDS times with the servers interleaved, and the median is
#    reported: req/s (median), p99 latency of the median run, and the server's CPU time per
#    request (median over the rounds): user + system time of the server's whole process tree
#    (master and workers; reaped children through cutime/cstime) from /proc/PID/stat, before
#    and after the wrk run, divided by the requests wrk completed. Each measured run follows
#    an unmeasured warm-up run of WARMUP seconds (1; 0: none; bench/lib.sh's measure).
# 2. Idle connections. IDLE keep-alive connections to a concurrent pool (one worker, started
#    for this with concurrency IDLE + 100), each after one answered request: the worker's RSS
#    before and with them open, KiB per connection, the time of a normal request (curl, 5
#    sequential ones) and the req/s of one more keep-alive connection (wrk -c1, 2 s), before
#    and while they are open. They are held a few seconds, well within
#    moonbridge_http's idle_timeout (65 s). The client is bench/idle_client.lua; the script
#    raises its own soft descriptor limit to the hard limit for it. The worker inherits this
#    shell's limit: if it is below IDLE + 100 the table says so (raise `ulimit -n` first).
# 3. Slow clients. 300 connections that sent an incomplete head and 200 that sent nothing,
#    then 20 sequential normal requests (curl --max-time 5 each), against the concurrent pool
#    (one worker) and against a classic pool with max_fork = 32: how many of 20 succeed.
#
#   bash bench/concurrent.sh                         # defaults below
#   DUR=2 ROUNDS=1 IDLE=2000 bash bench/concurrent.sh   # a quick check
#   DUR=10 CONN=64 ROUNDS=5 LUA=5.3 bash bench/concurrent.sh
#
# Env: DUR seconds per wrk run (5); CONN wrk connections (32); ROUNDS runs per case (3);
# LUA the rock tree to use, .trees/5.3 or .trees/5.4 (5.4); IDLE idle connections for part
# 2 (10000); PEERS=0 runs no nginx and no floor (and installs nothing; with PEERS=1, the
# default, nginx-light and libnginx-mod-http-lua are installed when missing); SERVER_CPU (0)
# and CLIENT_CPU (1).
#
# Prints markdown tables and the command line. Exits non-zero when setup fails; every
# process it starts is stopped at exit (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
COMMAND="DUR=${DUR:-5} CONN=${CONN:-32} ROUNDS=${ROUNDS:-3} LUA=${LUA:-5.4} IDLE=${IDLE:-10000} PEERS=${PEERS:-1} bash bench/concurrent.sh"

DUR=${DUR:-5}          # seconds per wrk run
CONN=${CONN:-32}       # wrk connections
ROUNDS=${ROUNDS:-3}    # runs per case; the median is reported
LUA=${LUA:-5.4}        # which rock tree (.trees/5.3 or .trees/5.4) to benchmark
IDLE=${IDLE:-10000}    # idle keep-alive connections held in part 2
PEERS=${PEERS:-1}      # 0: no nginx, no pre-fork floor
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CONCURRENCY=1000       # handlers of the concurrent pool's one worker (part 1 and 3)
CLASSIC_WORKERS=40     # workers of the classic pool (part 1), and processes of the floor
SLOW_HEADS=300         # part 3: connections with an incomplete head
SLOW_SILENT=200        # part 3: connections that send nothing
SLOW_REQUESTS=20       # part 3: sequential normal requests
SLOW_WORKERS=32        # part 3: max_fork of the classic pool

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init # wrk, the nginx peers (installed when missing), the rock, TMP, PIDS and cleanup

declare -A SPID SPORT # server key -> master PID, port (SPID: also used by measure of bench/lib.sh)

# start_mb key concurrency workers: bench/http_app.lua on core SERVER_CPU; waits until it
# answers and all its workers are up.
start_mb() {
  local port
  port=$(free_port)
  PORT=$port CONCURRENCY=$2 WORKERS=$3 taskset -c "$SERVER_CPU" "$MOONBRIDGE" bench/http_app.lua \
    >"$TMP/$1.log" 2>&1 &
  SPID[$1]=$!
  SPORT[$1]=$port
  PIDS+=("$!")
  wait_port "$port"
  local want=$3
  [ "$2" -gt 1 ] && want=1
  wait_workers "${SPID[$1]}" "$want" && return 0
  echo "$1: $want workers did not start" >&2
  cat "$TMP/$1.log" >&2
  exit 1
}

fd_limit() { awk '/^Max open files/ {print $4}' "/proc/$1/limits" 2>/dev/null || true; }

start_mb conc "$CONCURRENCY" 1
start_mb classic 1 "$CLASSIC_WORKERS"
NGINX_PORT=""
NGINX_LUA=""
FLOOR_PORT=""
if [ "$PEERS" = 1 ]; then
  start_floor "$CLASSIC_WORKERS"
  start_nginx
fi
SERVERS=(conc classic)
[ -n "$NGINX_LUA" ] && SERVERS+=(lua)
[ -n "$NGINX_PORT" ] && SERVERS+=(ngx)
[ -n "$FLOOR_PORT" ] && SERVERS+=(floor)
declare -A LABEL=(
  [conc]="moonbridge concurrent (1 worker, concurrency $CONCURRENCY)"
  [classic]="moonbridge classic ($CLASSIC_WORKERS workers)"
  [lua]="nginx \`content_by_lua_block\` (1 worker)"
  [ngx]="nginx \`return 200\` (1 worker)"
  [floor]="pre-fork floor ($CLASSIC_WORKERS processes)"
)
[ -n "$NGINX_PORT" ] && SPID[lua]=$NGINX_PID && SPID[ngx]=$NGINX_PID
[ -n "$FLOOR_PORT" ] && SPID[floor]=$FLOOR_PID

url_of() { # server path -> URL
  case $1 in
    conc | classic) echo "http://127.0.0.1:${SPORT[$1]}$2" ;;
    lua) echo "http://127.0.0.1:$NGINX_PORT/lua$2" ;;
    ngx) echo "http://127.0.0.1:$NGINX_PORT$2" ;;
    floor) echo "http://127.0.0.1:$FLOOR_PORT/" ;;
  esac
}

# ---- part 1: throughput --------------------------------------------------------------

# case name | wrk args | path | floor (1 = run it)
CASES=(
  "GET keep-alive||/|1"
  "GET, Connection: close|-H Connection:@close|/|"
  "GET 1 MiB response||/1m|"
  "POST 64 KiB body|-s $ROOT/bench/http_post.lua|/post|"
)

for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for c in "${CASES[@]}"; do
    IFS='|' read -r name args path floor <<<"$c"
    for s in "${SERVERS[@]}"; do
      [ "$s" = floor ] && [ -z "$floor" ] && continue
      # shellcheck disable=SC2086 # args are word lists on purpose
      measure "$name" "$s" "$(url_of "$s" "$path")" $args
    done
  done
done

echo
echo "## Concurrent pools: throughput"
echo
echo "Command: \`$COMMAND\` (Lua $LUA, Linux $(uname -r), $(nproc) CPUs)."
echo "$CONN connections, ${DUR}s per run, median of $ROUNDS; servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU:"
echo "\`taskset -c $CLIENT_CPU wrk -t1 -c$CONN -d${DUR}s --latency [args] URL\`."
echo "CPU/request: user + system time of the server's process tree during the run / requests completed (median of the rounds)."
echo
echo "| case | server | req/s | p99 | server CPU µs/request |"
echo "|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ _ floor <<<"$c"
  for s in "${SERVERS[@]}"; do
    [ "$s" = floor ] && [ -z "$floor" ] && continue
    printf '| %s | %s | %.0f | %s | %.1f |\n' "$name" "${LABEL[$s]}" \
      "$(rps_of "$name|$s")" "$(p99_of "$name|$s")" "$(cpu_of "$name|$s")"
  done
done

ratios() { # case other -> "req/s | CPU | p99" of concurrent / other
  local a="$1|conc" b="$1|$2"
  if [ -z "${RPS[$b]:-}" ]; then echo "- | - | -"; return; fi
  echo "$(div "$(rps_of "$a")" "$(rps_of "$b")") | $(div "$(cpu_of "$a")" "$(cpu_of "$b")") | $(div "$(ms "$(p99_of "$a")")" "$(ms "$(p99_of "$b")")")"
}
echo
echo "Ratios, concurrent pool / peer (req/s: above 1 is faster; CPU/request and p99: below 1 is cheaper, quicker):"
echo
echo "| case | req/s vs content_by_lua | CPU/req vs content_by_lua | p99 vs content_by_lua | req/s vs classic | CPU/req vs classic | p99 vs classic |"
echo "|---|---|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  IFS='|' read -r name _ _ _ <<<"$c"
  echo "| $name | $(ratios "$name" lua) | $(ratios "$name" classic) |"
done

# ---- part 2: idle connections ----------------------------------------------------------

# end_client file pid: SIGTERM, waits for it; sets OPEN_LINE to its "open STILL OPENED"
# line (called in this shell, not in $(...): only this shell can wait for the client)
end_client() {
  stop_pid "$2"
  OPEN_LINE=$(grep '^open ' "$1" 2>/dev/null || true)
}
# req_times url -> "median X ms, max Y ms" of 5 sequential requests (curl time_total), or
# "N of 5 failed" when some did not get a 200 within 5 s
req_times() {
  local out times=() failed=0
  for _ in 1 2 3 4 5; do
    out=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{time_total}' "$1" || true)
    if [ "${out%% *}" = 200 ]; then times+=("${out#* }"); else failed=$((failed + 1)); fi
  done
  if [ "$failed" -gt 0 ]; then echo "$failed of 5 failed"; return; fi
  printf '%s\n' "${times[@]}" | sort -g | awk '{t[NR] = $1} END {printf "median %.2f ms, max %.2f ms", t[3] * 1000, t[5] * 1000}'
}
# keepalive_rps url -> req/s of wrk on one keep-alive connection for 2 s
keepalive_rps() {
  local r
  r=$(taskset -c "$CLIENT_CPU" wrk -t1 -c1 -d2s "$1" 2>&1 | awk '/^Requests\/sec:/ {print $2}')
  printf '%.0f' "${r:-0}"
}

echo
echo "## Concurrent pools: $IDLE idle keep-alive connections on one worker"
echo
IDLE_CONC=$((IDLE + 100))
[ "$IDLE_CONC" -gt 100000 ] && IDLE_CONC=100000
start_mb idle "$IDLE_CONC" 1
IDLE_WORKER=$(workers_of "${SPID[idle]}" | head -1)
worker_limit=$(fd_limit "$IDLE_WORKER")
hard=$(ulimit -H -n)
[ "$hard" = unlimited ] && hard=1048576
client_limit=$hard
[ "$client_limit" -gt $((IDLE + 1000)) ] && client_limit=$((IDLE + 1000))
notes=()
if [ "$worker_limit" != unlimited ] && [ "$worker_limit" -lt $((IDLE + 100)) ]; then
  notes+=("**The worker's descriptor limit is $worker_limit, below the $IDLE connections asked for (+100): it cannot hold them all. Raise the soft limit (\`ulimit -n\`, up to the hard limit $hard) before running this script.**")
fi
if [ "$client_limit" -lt $((IDLE + 50)) ]; then
  notes+=("**The hard descriptor limit ($hard) is too low for a client holding $IDLE connections; the client opens what it can.**")
fi
IDLE_URL="http://127.0.0.1:${SPORT[idle]}/"
before_ms=$(req_times "$IDLE_URL")
before_rps=$(keepalive_rps "$IDLE_URL")
rss0=$(rss_kib "$IDLE_WORKER") # after some requests, so the worker's own buffers are in
t_open=$(date +%s.%N)
(ulimit -S -n "$client_limit" && exec "lua$LUA" bench/idle_client.lua idle "${SPORT[idle]}" "$IDLE" 120 50) \
  >"$TMP/idle.out" 2>"$TMP/idle.err" &
CLIENT=$!
PIDS+=("$CLIENT")
ready=$(wait_ready "$TMP/idle.out" "$CLIENT" 60)
t_open=$(awk -v a="$t_open" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
sleep 1 # the worker's loop settles (the last responses go out, buffers are given back)
rss1=$(rss_kib "$IDLE_WORKER")
during_ms=$(req_times "$IDLE_URL")
during_rps=$(keepalive_rps "$IDLE_URL")
worker_alive=1
kill -0 "$IDLE_WORKER" 2>/dev/null || worker_alive=""
end_client "$TMP/idle.out" "$CLIENT"
still=$OPEN_LINE
opened=$(awk '{print $2}' <<<"$ready")
[ -n "$ready" ] || notes+=("**The client did not report its connections open within 60 s** (stderr: $(tr '\n' ' ' <"$TMP/idle.err"))")
[ -n "$(cut -d' ' -f4- <<<"$ready")" ] && notes+=("First failure the client saw: $(cut -d' ' -f4- <<<"$ready").")
[ -n "$worker_alive" ] || notes+=("**The worker (PID $IDLE_WORKER) exited during the measurement**; it logged: \`$(grep -m1 -e 'Worker failure' -e 'Error' "$TMP/idle.log" | sed 's/^.*\] //' || true)\` (its connections went with it).")
per_conn="-"
if [ -n "$rss0" ] && [ -n "$rss1" ] && [ "${opened:-0}" -gt 0 ]; then
  per_conn=$(awk -v a="$rss0" -v b="$rss1" -v n="$opened" 'BEGIN {printf "%.1f", (b - a) / n}')
fi
echo "| measurement | value |"
echo "|---|---|"
echo "| connections answered and held (of $IDLE) | ${opened:-0} (opened in ${t_open} s) |"
echo "| still open when the client let go (not closed or answered by the server) | $(awk '{print $2}' <<<"$still") |"
echo "| worker's descriptor limit (soft, /proc/PID/limits) | $worker_limit |"
echo "| worker RSS before | ${rss0:--} KiB |"
echo "| worker RSS with the connections open | ${rss1:--} KiB |"
echo "| RSS per idle connection | $per_conn KiB |"
echo "| one request before opening them (curl time_total, 5 requests) | $before_ms |"
echo "| one request while they are open (curl time_total, 5 requests) | $during_ms |"
echo "| one more keep-alive connection, req/s (wrk -c1, 2 s): before / while they are open | $before_rps / $during_rps |"
for n in "${notes[@]}"; do echo; echo "$n"; done
stop_pid "${SPID[idle]}"

# ---- part 3: slow clients --------------------------------------------------------------

echo
echo "## Slow clients: $SLOW_HEADS incomplete heads and $SLOW_SILENT silent connections, then $SLOW_REQUESTS requests (curl --max-time 5)"
echo
start_mb slow_classic 1 "$SLOW_WORKERS"
held() { # client's ready line, its open line -> "opened (still open at the end)"
  local a b
  a=$(awk '{print $2}' <<<"$1")
  b=$(awk '{print $2}' <<<"$2")
  echo "${a:-0} (${b:-?} still open at the end)"
}
echo "| pool | incomplete heads held | silent connections held | requests answered | time for the $SLOW_REQUESTS requests |"
echo "|---|---|---|---|---|"
for s in conc slow_classic; do
  port=${SPORT[$s]}
  "lua$LUA" bench/idle_client.lua slow "$port" "$SLOW_HEADS" 300 30 >"$TMP/$s-slow.out" 2>&1 &
  c1=$!
  PIDS+=("$c1")
  "lua$LUA" bench/idle_client.lua silent "$port" "$SLOW_SILENT" 300 30 >"$TMP/$s-silent.out" 2>&1 &
  c2=$!
  PIDS+=("$c2")
  r1=$(wait_ready "$TMP/$s-slow.out" "$c1" 40)
  r2=$(wait_ready "$TMP/$s-silent.out" "$c2" 40)
  ok=0
  t0=$(date +%s.%N)
  for _ in $(seq "$SLOW_REQUESTS"); do
    code=$(curl -s -o /dev/null --max-time 5 -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [ "$code" = 200 ] && ok=$((ok + 1))
  done
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f s", b - a}')
  end_client "$TMP/$s-slow.out" "$c1"
  o1=$OPEN_LINE
  end_client "$TMP/$s-silent.out" "$c2"
  o2=$OPEN_LINE
  if [ "$s" = conc ]; then label="concurrent (1 worker, concurrency $CONCURRENCY)"; else label="classic (max_fork = $SLOW_WORKERS)"; fi
  echo "| $label | $(held "$r1" "$o1") | $(held "$r2" "$o2") | $ok of $SLOW_REQUESTS | $took |"
done
stop_pid "${SPID[slow_classic]}"

log_summary conc classic idle slow_classic
