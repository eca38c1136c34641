#!/usr/bin/env bash
# HTTP benchmark of moonbridge_http's classic pool against its peers, on loopback, with
# targets evaluated from the same run.
#
# Servers (all pinned to core SERVER_CPU; wrk -t1 is pinned to CLIENT_CPU):
#   - moonbridge: bench/http_app.lua with WORKERS=$WORKERS, a classic pool of WORKERS worker
#     processes (pre_fork = min_fork = WORKERS);
#   - baseline (when BASELINE names another checkout): that checkout's build and its own
#     bench/http_app.lua, with the same WORKERS and its own module paths;
#   - the pre-fork floor, bench/prefork_floor.c (WORKERS forked C processes: one blocking
#     recv and one send per request, no parsing, no Lua), when a C compiler is there; for
#     the keep-alive case in its keep-alive mode, for the Connection: close case in its
#     "close" mode (one request per connection, answered with Connection: close);
#   - the pre-fork floor with a Lua handler, bench/prefork_lua_floor.c (the floor's keep-alive
#     mode, plus per request a request table, a Lua handler and its three C calls: the least
#     any server running a Lua handler per request in a process of its own does), keep-alive
#     only, when a C compiler and Lua 5.4's headers are there;
#   - nginx `return 200` and nginx `content_by_lua_block` (bench/http_nginx.conf, one worker
#     process; nginx-light and libnginx-mod-http-lua are installed when missing).
# Cases (wrk connections in parentheses):
#   - GET keep-alive "/" (KA_CONN);
#   - GET "/" with `Connection: close` (CLOSE_CONN): one request per connection;
#   - GET of a 1 MiB response "/1m" (BIG_CONN);
#   - POST of a 64 KiB body "/post" (BIG_CONN; the wrk script bench/http_post.lua).
# Every case runs ROUNDS times, in each round every server once, one after the other, so
# that noise from other processes on the machine hits every server alike; each measured
# run follows an unmeasured warm-up run of WARMUP seconds against the same server. Reported
# per case and server: req/s (median of the rounds), p50 and p99 latency (of the run whose req/s is
# the median) and the server's CPU time per request (median of the rounds): user + system
# time of the server's whole process tree (master, workers, and reaped children through
# cutime/cstime; for nginx its master and worker) from /proc/PID/stat, read before and after
# each wrk run, divided by the requests wrk completed. In the Connection: close case that is
# also the CPU time per connection. Then moonbridge's ratios to every other server (req/s,
# CPU per request, p99), a table of targets with pass/fail (the ratios they compare with,
# from this run), the command line, and (IO=1) bench/io_bench.lua's comparison of
# moonbridge_io's line reads (and bulk reads) with LuaSocket's, for Lua $LUA.
#
#   bash bench/http.sh                          # defaults below; about 10 minutes
#   DUR=1 ROUNDS=1 IO=0 bash bench/http.sh      # a quick check (about 25 s)
#   KA_CONN=8 WORKERS=8 LUA=5.3 bash bench/http.sh
#   BASELINE=../other-checkout bash bench/http.sh   # also that checkout's build, same run
#
# Env: DUR seconds per wrk run (5); ROUNDS runs per case and server (3); LUA the rock tree,
# .trees/5.3 or .trees/5.4 (5.4); KA_CONN (32), CLOSE_CONN (32), BIG_CONN (8) wrk
# connections of the keep-alive, Connection: close, and 1 MiB and POST cases; WORKERS
# moonbridge's workers and the floor's processes (40); BASELINE another checkout with its
# rock in .trees/$LUA (none); IO=0 skips the io benchmark (1); PEERS=0 runs no nginx and no
# floor and installs nothing (1); SERVER_CPU (0) and CLIENT_CPU (1); WARMUP seconds of an
# unmeasured wrk run before each measured one (1; 0: none).
#
# Prints markdown. Exits non-zero when setup fails; every process it starts is stopped at
# exit (by PID: PIDS and cleanup of bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DUR=${DUR:-5}
ROUNDS=${ROUNDS:-3}
LUA=${LUA:-5.4}
KA_CONN=${KA_CONN:-32}
CLOSE_CONN=${CLOSE_CONN:-32}
BIG_CONN=${BIG_CONN:-8}
WORKERS=${WORKERS:-40}
BASELINE=${BASELINE:-}
IO=${IO:-1}
PEERS=${PEERS:-1}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
COMMAND="DUR=$DUR ROUNDS=$ROUNDS LUA=$LUA KA_CONN=$KA_CONN CLOSE_CONN=$CLOSE_CONN BIG_CONN=$BIG_CONN"
COMMAND+=" WORKERS=$WORKERS${BASELINE:+ BASELINE=$(printf '%q' "$BASELINE")} IO=$IO PEERS=$PEERS"
COMMAND+=" SERVER_CPU=$SERVER_CPU CLIENT_CPU=$CLIENT_CPU WARMUP=${WARMUP:-1} bash bench/http.sh"
for v in DUR ROUNDS KA_CONN CLOSE_CONN BIG_CONN WORKERS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, not '${!v}'" >&2; exit 2; }
done
[[ ${WARMUP:-1} =~ ^[0-9]+$ ]] || { echo "WARMUP must be a whole number of seconds, not '$WARMUP'" >&2; exit 2; }
[ -z "${CONN:-}" ] || echo "CONN is not used any more: KA_CONN, CLOSE_CONN and BIG_CONN set the connections" >&2

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init # wrk, the nginx peers (installed when missing), the rock, TMP, PIDS and cleanup
WRK_ERRORS="$TMP/wrk-errors" # measure writes there what wrk reports of errors

declare -A SPID SPORT LABEL # server key -> master PID (read by measure of bench/lib.sh), port, label

# start_app key checkout: that checkout's moonbridge ($checkout/.trees/$LUA) serving its
# bench/http_app.lua with WORKERS workers, with its module paths (its scripts/env.sh); waits
# until it answers and all its workers are up.
start_app() {
  local port
  port=$(free_port)
  # shellcheck source=/dev/null # the checkout's own scripts/env.sh
  (. "$2/scripts/env.sh" && cd "$2" && PORT=$port WORKERS=$WORKERS exec taskset -c "$SERVER_CPU" \
    "$2/.trees/$LUA/bin/moonbridge" bench/http_app.lua) >"$TMP/$1.log" 2>&1 &
  SPID[$1]=$! # the subshell execs moonbridge: this is its master
  SPORT[$1]=$port
  PIDS+=("$!")
  wait_port "$port"
  wait_workers "${SPID[$1]}" "$WORKERS" && return 0
  echo "$1: $WORKERS workers did not start" >&2
  cat "$TMP/$1.log" >&2
  exit 1
}

SERVERS=(mb)
start_app mb "$ROOT"
LABEL[mb]="moonbridge ($WORKERS workers)"
if [ -n "$BASELINE" ]; then
  BASE=$(cd "$BASELINE" && pwd)
  [ -x "$BASE/.trees/$LUA/bin/moonbridge" ] || { echo "no $BASE/.trees/$LUA/bin/moonbridge" >&2; exit 1; }
  start_app baseline "$BASE"
  SERVERS+=(baseline)
  LABEL[baseline]="baseline moonbridge ($WORKERS workers)"
fi
NGINX_PORT=""
NGINX_LUA=""
if [ "$PEERS" = 1 ]; then
  start_floor "$WORKERS"
  if [ -n "$FLOOR_PORT" ]; then
    SPID[floor]=$FLOOR_PID
    SPORT[floor]=$FLOOR_PORT
    LABEL[floor]="pre-fork floor ($WORKERS processes)"
    start_floor "$WORKERS" close
    SPID[floor-close]=$FLOOR_PID
    SPORT[floor-close]=$FLOOR_PORT
    LABEL[floor-close]="pre-fork floor, close mode ($WORKERS processes)"
    SERVERS+=(floor floor-close)
  fi
  start_lua_floor "$WORKERS"
  if [ -n "$LUA_FLOOR_PORT" ]; then
    SPID[floor-lua]=$LUA_FLOOR_PID
    SPORT[floor-lua]=$LUA_FLOOR_PORT
    LABEL[floor-lua]="pre-fork floor + a Lua handler ($WORKERS processes)"
    SERVERS+=(floor-lua)
  fi
  start_nginx
  if [ -n "$NGINX_PORT" ]; then
    SPID[nginx]=$NGINX_PID
    LABEL[nginx]="nginx \`return 200\` (1 worker)"
    SERVERS+=(nginx)
    if [ -n "$NGINX_LUA" ]; then
      SPID[nginx-lua]=$NGINX_PID
      LABEL[nginx-lua]="nginx \`content_by_lua_block\` (1 worker)"
      SERVERS+=(nginx-lua)
    fi
  fi
fi

url_of() { # server path -> URL
  case $1 in
    mb | baseline) echo "http://127.0.0.1:${SPORT[$1]}$2" ;;
    floor | floor-close | floor-lua) echo "http://127.0.0.1:${SPORT[$1]}/" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT$2" ;;
    nginx-lua) echo "http://127.0.0.1:$NGINX_PORT/lua$2" ;;
  esac
}

# case name | connections | wrk args ("@" stands for a space) | path | which floor runs it
CASES=(
  "GET keep-alive|$KA_CONN||/|floor"
  "GET, Connection: close|$CLOSE_CONN|-H Connection:@close|/|floor-close"
  "GET 1 MiB response|$BIG_CONN||/1m|"
  "POST 64 KiB body|$BIG_CONN|-s $ROOT/bench/http_post.lua|/post|"
)
runs_case() { # server floor-of-the-case -> status 0 when the server runs in that case
  case $1 in
    floor | floor-close) [ "$1" = "$2" ] ;;
    floor-lua) [ "$2" = floor ] ;; # keep-alive only
    *) true ;;
  esac
}

for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for c in "${CASES[@]}"; do
    IFS='|' read -r name CONN args path floor <<<"$c"
    for s in "${SERVERS[@]}"; do
      runs_case "$s" "$floor" || continue
      # shellcheck disable=SC2086 # args are word lists on purpose
      measure "$name" "$s" "$(url_of "$s" "$path")" $args
    done
  done
done

# ratio case a b metric (rps, cpu or p99) -> a's figure / b's, "-" when either is missing
ratio() {
  if [ -z "${RPS[$1|$2]:-}" ] || [ -z "${RPS[$1|$3]:-}" ]; then echo "-"; return; fi
  case $4 in
    rps) div "$(rps_of "$1|$2")" "$(rps_of "$1|$3")" ;;
    cpu) div "$(cpu_of "$1|$2")" "$(cpu_of "$1|$3")" ;;
    p99) div "$(ms "$(p99_of "$1|$2")")" "$(ms "$(p99_of "$1|$3")")" ;;
  esac
}

ms_shown() { # a wrk latency -> "0.25 ms" ("-" when there is none)
  local m
  m=$(ms "$1")
  if [ "$m" = "-" ]; then echo "-"; else awk -v m="$m" 'BEGIN {printf (m < 1 ? "%.3f ms" : "%.2f ms"), m}'; fi
}

echo
echo "## HTTP: moonbridge_http against its peers"
echo
echo "Lua $LUA, Linux $(uname -r), $(nproc) CPUs; ${DUR}s per run, medians of $ROUNDS runs (every server once a round);"
echo "servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU. moonbridge: \`bench/http_app.lua\`, a classic pool of $WORKERS workers"
echo "(pre_fork = min_fork = $WORKERS). nginx \`return 200\` serves /1m as a static file and answers /post with"
echo "\`return 200\` (nginx reads and discards the body). The wrk command of each case (URL: the server's):"
echo
for c in "${CASES[@]}"; do
  IFS='|' read -r name conn args path _ <<<"$c"
  shown=""
  for w in ${args/$ROOT\//}; do # an argument with "@" has a space there: quoted
    if [[ $w == *@* ]]; then shown+="'${w//@/ }' "; else shown+="$w "; fi
  done
  echo "- $name: \`taskset -c $CLIENT_CPU wrk -t1 -c$conn -d${DUR}s --latency ${shown}URL$path\`"
  if [ "$conn" -gt "$WORKERS" ]; then
    echo "  (more connections than moonbridge's $WORKERS workers: the others wait for a free worker)"
  fi
done
echo
echo "req/s: median of the rounds; p50, p99: latency of the run whose req/s is the median; server CPU:"
echo "user + system time of the server's process tree (master, workers, reaped children) during the run,"
echo "divided by the requests completed, median of the rounds (in the Connection: close case one request"
echo "per connection: the CPU time per connection). moonbridge / server: req/s above 1, moonbridge is"
echo "faster; CPU and p99 below 1, moonbridge is cheaper, quicker."
echo
echo "| case | server | req/s | p50 | p99 | server CPU µs/request | moonbridge / server: req/s | CPU | p99 |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in "${CASES[@]}"; do
  IFS='|' read -r name conn _ _ floor <<<"$c"
  for s in "${SERVERS[@]}"; do
    runs_case "$s" "$floor" || continue
    k="$name|$s"
    cpu=$(printf '%.1f' "$(cpu_of "$k")")
    [ "$floor" = floor-close ] && cpu+=" (per request = per connection)"
    ratios="- | - | -"
    [ "$s" = mb ] || ratios="$(ratio "$name" mb "$s" rps) | $(ratio "$name" mb "$s" cpu) | $(ratio "$name" mb "$s" p99)"
    printf '| %s (%s conn.) | %s | %.0f | %s | %s | %s | %s |\n' "$name" "$conn" "${LABEL[$s]}" \
      "$(rps_of "$k")" "$(ms_shown "$(p50_of "$k")")" "$(ms_shown "$(p99_of "$k")")" "$cpu" "$ratios"
  done
done

# target | case | metric | peer | comparison | limit
TARGETS=(
  "keep-alive: server CPU per request <= 1.3x the pre-fork floor's|GET keep-alive|cpu|floor|<=|1.3"
  "keep-alive: p99 <= 3x content_by_lua's|GET keep-alive|p99|nginx-lua|<=|3"
  "keep-alive: req/s >= 0.6x content_by_lua's|GET keep-alive|rps|nginx-lua|>=|0.6"
  "Connection: close: req/s >= 0.9x content_by_lua's|GET, Connection: close|rps|nginx-lua|>=|0.9"
  "Connection: close: p99 <= 3x content_by_lua's|GET, Connection: close|p99|nginx-lua|<=|3"
  "64 KiB POST: req/s >= 0.8x content_by_lua's|POST 64 KiB body|rps|nginx-lua|>=|0.8"
  "1 MiB response: req/s >= 1.0x content_by_lua's|GET 1 MiB response|rps|nginx-lua|>=|1.0"
)
verdict() { # value comparison limit -> pass, fail, or n/a (no figure)
  [ "$1" = "-" ] && { echo "n/a (no peer)"; return; }
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    ok = (op == "<=") ? (v <= l) : (v >= l); print (ok ? "pass" : "**fail**") }'
}
echo
echo "### Targets (ratios from this run)"
echo
header="| target | moonbridge / peer | result |"
rule="|---|---|---|"
[ -n "$BASELINE" ] && header+=" baseline / peer | baseline result |" && rule+="---|---|"
echo "$header"
echo "$rule"
passed=0
for t in "${TARGETS[@]}"; do
  IFS='|' read -r what name metric peer op limit <<<"$t"
  v=$(ratio "$name" mb "$peer" "$metric")
  result=$(verdict "$v" "$op" "$limit")
  [ "$result" = pass ] && passed=$((passed + 1))
  line="| $what | $v | $result |"
  if [ -n "$BASELINE" ]; then
    v=$(ratio "$name" baseline "$peer" "$metric")
    line+=" $v | $(verdict "$v" "$op" "$limit") |"
  fi
  echo "$line"
done
echo
echo "moonbridge meets $passed of ${#TARGETS[@]} targets."
lua_floor=$(ratio "GET keep-alive" floor-lua floor cpu)
if [ "$lua_floor" != "-" ]; then
  echo
  echo "The floor with a Lua handler per request takes ${lua_floor}x the plain floor's CPU per keep-alive"
  echo "request (the least a Lua handler per request adds in this process model; moonbridge: $(ratio "GET keep-alive" mb floor cpu)x)."
fi

if [ -s "$WRK_ERRORS" ]; then
  echo
  echo "wrk reported errors (case, server: what wrk printed):"
  echo
  echo '```'
  cat "$WRK_ERRORS"
  echo '```'
fi

log_summary "${SERVERS[@]}" # mb and baseline: the others log nothing there

echo
echo "Command: \`$COMMAND\`"

if [ "$IO" = 1 ]; then
  echo
  echo "## moonbridge_io line reads against LuaSocket (Lua $LUA)"
  echo
  io_cmd=(bench/io_bench.lua 256 2000000 7) # 256 MiB bulk, 2 M lines, 7 rounds: about 10 s
  if "lua$LUA" -e 'require "socket"' 2>/dev/null; then
    echo "\`lua$LUA ${io_cmd[*]}\` (the method: bench/io_bench.lua's header; the full comparison: bench/io.sh):"
    echo
    timeout 120 "lua$LUA" "${io_cmd[@]}" || echo "(bench/io_bench.lua failed or took more than 120 s: status $?)"
  else
    echo "LuaSocket is not installed for Lua $LUA (Debian package lua-socket): skipped."
  fi
fi
