# Helpers shared by bench/http.sh, bench/concurrent.sh and bench/memory.sh; sourced
# (`. bench/lib.sh`) from the checkout's root after the script has set LUA, SERVER_CPU and
# CLIENT_CPU (and DUR and CONN for wrk_stats and measure).
# shellcheck shell=bash disable=SC2034 # the variables set here are used by the sourcing scripts

# bench_init: checks for wrk, installs the nginx peers (nginx with its Lua module, Debian's
# OpenResty component) when missing and PEERS is 1 (the default), builds the rock when
# .trees/$LUA has none, sources scripts/env.sh. Sets MOONBRIDGE, TMP (removed at exit), TCK
# (clock ticks per second) and PIDS: every process whose PID is added there is stopped at
# exit (TERM, then KILL).
bench_init() {
  command -v wrk >/dev/null || { echo "wrk is required (Debian package wrk)" >&2; exit 1; }
  if [ "${PEERS:-1}" = 1 ] && ! [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nginx-light libnginx-mod-http-lua >/dev/null 2>&1 \
      || echo "could not install nginx-light libnginx-mod-http-lua; running without peers" >&2
  fi
  [ -x ".trees/$LUA/bin/moonbridge" ] || bash scripts/setup.sh >/dev/null
  # shellcheck source=scripts/env.sh
  # shellcheck source=scripts/env.sh
  . scripts/env.sh
  MOONBRIDGE="$(pwd)/.trees/$LUA/bin/moonbridge"
  TMP=$(mktemp -d)
  chmod 755 "$TMP" # nginx workers run as another user
  TCK=$(getconf CLK_TCK)
  PIDS=()
  trap cleanup EXIT
}

cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}

free_port() {
  "lua$LUA" -e 'local m = require "moonbridge_io"; local l = m.tcplisten("127.0.0.1", 0)
    io.write(l.local_tcpport); l:close()'
}

wait_port() { # port
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  exit 1
}

# workers_of master -> PIDs of its children titled "moonbridge: worker ..." (none: empty,
# and a zero status, also under `set -e -o pipefail`)
workers_of() {
  ps -o pid=,args= --ppid "$1" | awk '$2 == "moonbridge:" && $3 == "worker" {print $1}' || true
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# start_server app.lua: moonbridge serving it on core SERVER_CPU, logging to
# $TMP/server.log; sets MASTER (stopped at exit)
start_server() {
  taskset -c "$SERVER_CPU" "$MOONBRIDGE" "$1" >"$TMP/server.log" 2>&1 &
  MASTER=$!
  PIDS+=("$MASTER")
}

# stop_pid pid: TERM, up to 10 s, then KILL; removes it from PIDS
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# wait_ready file pid seconds: waits for a bench/idle_client.lua's "ready" line and prints
# it; empty output if the client exited or the time passed
wait_ready() {
  for _ in $(seq $(($3 * 10))); do
    if grep -q '^ready ' "$1" 2>/dev/null; then grep '^ready ' "$1"; return 0; fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  grep '^ready ' "$1" 2>/dev/null || true
}

# wait_workers master n: waits up to 10 s until the moonbridge master has n workers;
# non-zero status if it does not.
wait_workers() {
  for _ in $(seq 100); do
    [ "$(workers_of "$1" | wc -l)" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# tree_ticks pid -> CPU clock ticks (user + system) used by the process and all its
# descendants: utime + stime of the live ones, and cutime + cstime for those already reaped.
# The fields are counted after the ")" that ends the command name, which may hold spaces
# (a worker's is "moonbridge: wor").
tree_ticks() {
  local sum=0 p line t queue=("$1") f kids
  while [ ${#queue[@]} -gt 0 ]; do
    p=${queue[0]}
    queue=("${queue[@]:1}")
    line=""
    read -r line 2>/dev/null <"/proc/$p/stat" || continue
    read -r -a f <<<"${line##*) }"
    sum=$((sum + f[11] + f[12] + f[13] + f[14]))
    for t in /proc/"$p"/task/*/children; do
      kids=()
      read -r -a kids 2>/dev/null <"$t" || true
      queue+=("${kids[@]}")
    done
  done
  echo "$sum"
}

# start_floor WORKERS [close]: the pre-fork floor (bench/prefork_floor.c; with "close", its
# one-request-per-connection mode) on core SERVER_CPU when a C compiler is there; sets
# FLOOR_PORT and FLOOR_PID (both empty without a compiler).
start_floor() {
  FLOOR_PORT=""
  FLOOR_PID=""
  if command -v cc >/dev/null && { [ -x "$TMP/floor" ] || cc -O2 -o "$TMP/floor" bench/prefork_floor.c 2>/dev/null; }; then
    FLOOR_PORT=$(free_port)
    taskset -c "$SERVER_CPU" "$TMP/floor" "$FLOOR_PORT" "$1" ${2:+"$2"} &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    wait_port "$FLOOR_PORT"
  fi
}

# start_lua_floor WORKERS: the pre-fork floor with a Lua handler per request
# (bench/prefork_lua_floor.c, keep-alive only) on core SERVER_CPU when a C compiler and Lua
# 5.4's headers are there; sets LUA_FLOOR_PORT and LUA_FLOOR_PID (both empty otherwise).
start_lua_floor() {
  LUA_FLOOR_PORT=""
  LUA_FLOOR_PID=""
  if command -v cc >/dev/null && { [ -x "$TMP/lua_floor" ] || cc -O2 -I/usr/include/lua5.4 \
    -o "$TMP/lua_floor" bench/prefork_lua_floor.c -llua5.4 2>/dev/null; }; then
    LUA_FLOOR_PORT=$(free_port)
    taskset -c "$SERVER_CPU" "$TMP/lua_floor" "$LUA_FLOOR_PORT" "$1" &
    LUA_FLOOR_PID=$!
    PIDS+=("$LUA_FLOOR_PID")
    wait_port "$LUA_FLOOR_PORT"
  fi
}

# start_nginx: nginx from bench/http_nginx.conf (one worker process) on core SERVER_CPU when
# installed; sets NGINX_PORT and NGINX_PID (empty without nginx), and NGINX_LUA to 1 when
# its Lua module serves the /lua/ locations.
start_nginx() {
  NGINX_PORT=""
  NGINX_PID=""
  NGINX_LUA=""
  command -v nginx >/dev/null || return 0
  NGINX_PORT=$(free_port)
  mkdir -p "$TMP/ngx/www" "$TMP/ngx/body"
  head -c 1048576 /dev/zero | tr '\0' 'x' >"$TMP/ngx/www/1m"
  local lua_mark="# "
  if [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then lua_mark=""; fi
  sed -e "s|@DIR@|$TMP/ngx|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@LUA@|$lua_mark|g" \
    bench/http_nginx.conf >"$TMP/ngx/nginx.conf"
  if nginx -t -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx" >/dev/null 2>&1; then
    taskset -c "$SERVER_CPU" nginx -c "$TMP/ngx/nginx.conf" -p "$TMP/ngx" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_port "$NGINX_PORT"
    if [ -z "$lua_mark" ] && [ "$(curl -s "http://127.0.0.1:$NGINX_PORT/lua/")" = "Hello World!" ]; then
      NGINX_LUA=1
    fi
  else
    echo "nginx does not start with the benchmark configuration; skipping the peers" >&2
    NGINX_PORT=""
  fi
}

# wrk_stats url [extra wrk args...] -> "req/s p50 p99 requests [errors...]" (requests: how
# many wrk completed; errors: what wrk reported of non-2xx responses and socket errors, on
# one line, nothing when there were none) of one run of taskset -c CLIENT_CPU wrk -t1
# -cCONN -dDUR --latency; "@" in an argument stands for a space.
wrk_stats() {
  local url=$1
  shift
  local args=()
  for a in "$@"; do args+=("${a//@/ }"); done
  set -- "${args[@]}"
  local out
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONN" -d"${DUR}s" --latency "$@" "$url" 2>&1)
  local rps p50 p99 n errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  n=$(awk '/ requests in / {print $1}' <<<"$out")
  errors=$(grep -Eo 'Non-2xx or 3xx responses: [0-9]+|Socket errors:.*' <<<"$out" | tr '\n' ' ' || true)
  echo "${rps:-0} ${p50:--} ${p99:--} ${n:-0} $errors"
}

median() { # values... -> median
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}

# Results of measure, keyed "case|server": each a list of values, one per run.
declare -A SPID RPS P50 P99 CPU

# measure case server url [wrk args...]: one wrk_stats run against the server whose master
# PID is SPID[server], with that process tree's CPU time (tree_ticks) read before and after;
# appends req/s, p50, p99 and the server's CPU µs per completed request to RPS, P50, P99
# and CPU. What wrk reports of errors goes to stderr and, when WRK_ERRORS names a file, there.
# A run of WARMUP seconds (default 1; 0: none) with the same arguments comes first, not
# measured: a server whose processes slept through the other servers' runs otherwise
# starts cold, and the first server of every round measured several per cent slower than
# the same build later in the round.
measure() {
  local key="$1|$2" pid=${SPID[$2]} url=$3 t0 t1 r p50 p99 n errors
  shift 3
  if [ "${WARMUP:-1}" != 0 ]; then
    local w=()
    for a in "$@"; do w+=("${a//@/ }"); done
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONN" -d"${WARMUP:-1}s" "${w[@]}" "$url" >/dev/null 2>&1 || true
  fi
  t0=$(tree_ticks "$pid")
  read -r r p50 p99 n errors < <(wrk_stats "$url" "$@")
  t1=$(tree_ticks "$pid")
  RPS[$key]+="$r "
  P50[$key]+="$p50 "
  P99[$key]+="$p99 "
  CPU[$key]+="$(awk -v d=$((t1 - t0)) -v t="$TCK" -v n="$n" 'BEGIN {printf "%.2f", (n > 0 ? d / t * 1e6 / n : 0)}') "
  if [ -n "$errors" ]; then
    echo "  ($1, $2: $errors)" >&2
    [ -z "${WRK_ERRORS:-}" ] || echo "$1, $2: $errors" >>"$WRK_ERRORS"
  fi
}

# Figures of key ("case|server") from measure's runs: req/s and CPU/request are medians of
# the runs, p50 and p99 those of the run whose req/s is the median (median_run: its index).
median_run() {
  local -a r
  read -ra r <<<"${RPS[$1]}"
  local m i
  m=$(median "${r[@]}")
  for i in "${!r[@]}"; do
    [ "${r[$i]}" = "$m" ] && { echo "$i"; return; }
  done
}
rps_of() { local -a r; read -ra r <<<"${RPS[$1]}"; median "${r[@]}"; }
p50_of() { local -a p; read -ra p <<<"${P50[$1]}"; echo "${p[$(median_run "$1")]}"; }
p99_of() { local -a p; read -ra p <<<"${P99[$1]}"; echo "${p[$(median_run "$1")]}"; }
cpu_of() { local -a c; read -ra c <<<"${CPU[$1]}"; median "${c[@]}"; }

ms() { # a wrk latency ("812.00us", "1.23ms", "1.01s", "2.00m") -> milliseconds
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) print "-"; else print n * f }'
}
div() { # a b -> a / b with two decimals, "-" when either is missing or b is 0
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# log_summary key...: what the moonbridge servers logged in $TMP/KEY.log beyond their start
# and shutdown, counted by message (tracebacks left out), as a markdown paragraph and code
# block; nothing when they logged nothing else. (wrk ends its runs with responses in
# flight, so a few "Could not send data to client" handler errors at the end of a run are
# expected.)
log_summary() {
  local summary="" lines s
  for s in "$@"; do
    lines=$(sed -e 's/^[0-9-]* [0-9:]* UTC: //' -e 's/^\[Pool #[0-9]*, PID [0-9]*\] //' "$TMP/$s.log" 2>/dev/null \
      | grep -v -e '^Loading "' -e '^Adding TCP listener' -e '^Received SIGTERM' -e '^Waiting for' \
        -e '^Shutdown complete' -e '^stack traceback:' -e $'^\t' \
      | sed -e 's/PID [0-9]*/PID N/g' | sort | uniq -c | sort -rn | head -10 || true)
    [ -n "$lines" ] && summary+="$s:"$'\n'"$lines"$'\n'
  done
  if [ -n "$summary" ]; then
    echo
    echo "Server log messages (count, message; tracebacks left out):"
    echo
    echo '```'
    printf '%s' "$summary"
    echo '```'
  fi
  return 0
}
