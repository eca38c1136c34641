# Helpers shared by bench/http.sh, bench/concurrent.sh and bench/memory.sh; sourced
# (`. bench/lib.sh`) from the checkout's root after the script has set LUA, SERVER_CPU and
# CLIENT_CPU (and DUR and CONN for run_wrk).
# shellcheck shell=bash disable=SC2034 # the variables set here are used by the sourcing scripts

# bench_init: checks for wrk, installs the nginx peers (nginx with its Lua module, Debian's
# OpenResty component) when missing and PEERS is 1 (the default), builds the rock when
# .trees/$LUA has none, sources scripts/env.sh. Sets MOONBRIDGE, TMP (removed at exit) and
# PIDS: every process whose PID is added there is stopped at exit (TERM, then KILL).
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
  . scripts/env.sh
  MOONBRIDGE="$(pwd)/.trees/$LUA/bin/moonbridge"
  TMP=$(mktemp -d)
  chmod 755 "$TMP" # nginx workers run as another user
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

# start_floor WORKERS: the pre-fork floor (bench/prefork_floor.c) on core SERVER_CPU when a
# C compiler is there; sets FLOOR_PORT and FLOOR_PID (both empty without a compiler).
start_floor() {
  FLOOR_PORT=""
  FLOOR_PID=""
  if command -v cc >/dev/null && cc -O2 -o "$TMP/floor" bench/prefork_floor.c 2>/dev/null; then
    FLOOR_PORT=$(free_port)
    taskset -c "$SERVER_CPU" "$TMP/floor" "$FLOOR_PORT" "$1" &
    FLOOR_PID=$!
    PIDS+=("$FLOOR_PID")
    wait_port "$FLOOR_PORT"
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

# run_wrk url [extra wrk args...] -> "req/s p99 requests" (requests: how many wrk completed);
# "@" in an argument stands for a space. Errors wrk reports go to stderr.
run_wrk() {
  local url=$1
  shift
  local args=()
  for a in "$@"; do args+=("${a//@/ }"); done
  set -- "${args[@]}"
  local out
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONN" -d"${DUR}s" --latency "$@" "$url" 2>&1)
  local rps p99 n errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  n=$(awk '/ requests in / {print $1}' <<<"$out")
  errors=$(grep -Eo 'Non-2xx or 3xx responses: [0-9]+|Socket errors:.*' <<<"$out" || true)
  [ -n "$errors" ] && echo "  ($url: $errors)" >&2
  echo "${rps:-0} ${p99:--} ${n:-0}"
}

median() { # values... -> median
  printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}
