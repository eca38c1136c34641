#!/usr/bin/env bash
# HTTP benchmark: wrk against moonbridge_http (examples/helloworld.lua, and bench/http_app.lua
# for the 1 MiB response and the 64 KiB POST), with nginx `return 200` and nginx
# `content_by_lua_block` as peers when installed, and (keep-alive only) the floor of the
# pre-forking model, bench/prefork_floor.c, when a C compiler is there. The servers are pinned to core 0, wrk to
# core 1. Every case runs ROUNDS times, servers interleaved, and the median is reported, so
# that noise from other processes on the machine hits every server alike.
#
#   bash bench/http.sh                       # defaults below
#   DUR=10 CONN=8 ROUNDS=5 LUA=5.3 bash bench/http.sh
#   BASELINE=../other-checkout bash bench/http.sh   # also that checkout's build, same run
#
# BASELINE names another checkout with its rock installed in .trees/$LUA (for a before and
# after comparison): its servers run in the same rounds, with its own module paths.
#
# Prints a markdown table (req/s and p99 latency, and moonbridge's ratio to each peer).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DUR=${DUR:-5}          # seconds per wrk run
CONN=${CONN:-8}        # wrk connections (moonbridge gets at least as many workers)
ROUNDS=${ROUNDS:-3}    # runs per case; the median is reported
LUA=${LUA:-5.4}        # which rock tree (.trees/5.3 or .trees/5.4) to benchmark
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

# shellcheck source=bench/lib.sh
. bench/lib.sh
bench_init # wrk, the nginx peers (installed when missing), the rock, TMP, PIDS and cleanup

HELLO_PORT=$(free_port)
APP_PORT=$(free_port)
PORT=$HELLO_PORT taskset -c "$SERVER_CPU" "$MOONBRIDGE" examples/helloworld.lua >"$TMP/hello.log" 2>&1 &
PIDS+=($!)
PORT=$APP_PORT WORKERS=$CONN taskset -c "$SERVER_CPU" "$MOONBRIDGE" bench/http_app.lua >"$TMP/app.log" 2>&1 &
PIDS+=($!)
wait_port "$HELLO_PORT"
wait_port "$APP_PORT"

B_HELLO_PORT=""
if [ -n "${BASELINE:-}" ]; then
  BASE=$(cd "$BASELINE" && pwd)
  [ -x "$BASE/.trees/$LUA/bin/moonbridge" ] || { echo "no $BASE/.trees/$LUA/bin/moonbridge" >&2; exit 1; }
  B_HELLO_PORT=$(free_port)
  B_APP_PORT=$(free_port)
  # The baseline's own module paths (env.sh of that checkout), its own apps.
  (. "$BASE/scripts/env.sh" && cd "$BASE" && PORT=$B_HELLO_PORT exec taskset -c "$SERVER_CPU" \
    "$BASE/.trees/$LUA/bin/moonbridge" examples/helloworld.lua) >"$TMP/b-hello.log" 2>&1 &
  PIDS+=($!)
  (. "$BASE/scripts/env.sh" && cd "$BASE" && PORT=$B_APP_PORT WORKERS=$CONN exec taskset -c "$SERVER_CPU" \
    "$BASE/.trees/$LUA/bin/moonbridge" bench/http_app.lua) >"$TMP/b-app.log" 2>&1 &
  PIDS+=($!)
  wait_port "$B_HELLO_PORT"
  wait_port "$B_APP_PORT"
fi

start_floor "$CONN"
start_nginx

# case name | wrk args | moonbridge url | nginx path | nginx lua path | floor (1 = run it)
CASES=(
  "GET keep-alive||http://127.0.0.1:$HELLO_PORT/|/|/lua/|1"
  "GET, Connection: close|-H Connection:@close|http://127.0.0.1:$HELLO_PORT/|/|/lua/|"
  "GET 1 MiB response||http://127.0.0.1:$APP_PORT/1m|/1m|/lua/1m|"
  "POST 64 KiB body|-s $ROOT/bench/http_post.lua|http://127.0.0.1:$APP_PORT/post|/post|/lua/post|"
)

declare -A RPS P99
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  for c in "${CASES[@]}"; do
    IFS='|' read -r name args mb_url ngx_path lua_path floor <<<"$c"
    # shellcheck disable=SC2086 # args are word lists on purpose
    read -r r p _ < <(run_wrk "$mb_url" $args)
    RPS["$name|mb"]+="$r "
    P99["$name|mb"]+="$p "
    if [ -n "$B_HELLO_PORT" ]; then
      b_url=${mb_url/:$HELLO_PORT\//:$B_HELLO_PORT\/}
      b_url=${b_url/:$APP_PORT\//:$B_APP_PORT\/}
      # shellcheck disable=SC2086
      read -r r p _ < <(run_wrk "$b_url" $args)
      RPS["$name|base"]+="$r "
      P99["$name|base"]+="$p "
    fi
    if [ -n "$NGINX_PORT" ]; then
      # shellcheck disable=SC2086
      read -r r p _ < <(run_wrk "http://127.0.0.1:$NGINX_PORT$ngx_path" $args)
      RPS["$name|ngx"]+="$r "
      P99["$name|ngx"]+="$p "
    fi
    if [ -n "$NGINX_LUA" ]; then
      # shellcheck disable=SC2086
      read -r r p _ < <(run_wrk "http://127.0.0.1:$NGINX_PORT$lua_path" $args)
      RPS["$name|lua"]+="$r "
      P99["$name|lua"]+="$p "
    fi
    if [ -n "$FLOOR_PORT" ] && [ -n "$floor" ]; then
      # shellcheck disable=SC2086
      read -r r p _ < <(run_wrk "http://127.0.0.1:$FLOOR_PORT/" $args)
      RPS["$name|floor"]+="$r "
      P99["$name|floor"]+="$p "
    fi
  done
done

# p99 of the run whose req/s is the median
pick() { # key
  local -a r p
  read -ra r <<<"${RPS[$1]}"
  read -ra p <<<"${P99[$1]}"
  local m
  m=$(median "${r[@]}")
  for i in "${!r[@]}"; do
    if [ "${r[$i]}" = "$m" ]; then
      printf '%.0f (%s)' "$m" "${p[$i]}"
      return
    fi
  done
}
ratio() { # key_a key_b
  local -a a b
  read -ra a <<<"${RPS[$1]}"
  read -ra b <<<"${RPS[$2]}"
  awk -v x="$(median "${a[@]}")" -v y="$(median "${b[@]}")" 'BEGIN {printf "%.2f", (y > 0 ? x / y : 0)}'
}

echo
echo "moonbridge_http (Lua $LUA), $CONN connections, ${DUR}s per run, median of $ROUNDS;"
echo "servers on CPU $SERVER_CPU, wrk on CPU $CLIENT_CPU: \`taskset -c $CLIENT_CPU wrk -t1 -c$CONN -d${DUR}s --latency [args] URL\`"
echo
header="| case | wrk args | moonbridge req/s (p99) |"
rule="|---|---|---|"
[ -n "$B_HELLO_PORT" ] && header+=" baseline req/s (p99) | moonbridge / baseline |" && rule+="---|---|"
[ -n "$NGINX_PORT" ] && header+=" nginx \`return 200\` | moonbridge / nginx |" && rule+="---|---|"
[ -n "$NGINX_LUA" ] && header+=" nginx \`content_by_lua_block\` | moonbridge / lua |" && rule+="---|---|"
[ -n "$FLOOR_PORT" ] && header+=" pre-fork floor | moonbridge / floor |" && rule+="---|---|"
echo "$header"
echo "$rule"
for c in "${CASES[@]}"; do
  IFS='|' read -r name args _ _ _ _ <<<"$c"
  args=${args/$ROOT\//}
  args=${args//@/ }
  line="| $name | \`${args:--}\` | $(pick "$name|mb") |"
  [ -n "$B_HELLO_PORT" ] && line+=" $(pick "$name|base") | $(ratio "$name|mb" "$name|base") |"
  [ -n "$NGINX_PORT" ] && line+=" $(pick "$name|ngx") | $(ratio "$name|mb" "$name|ngx") |"
  [ -n "$NGINX_LUA" ] && line+=" $(pick "$name|lua") | $(ratio "$name|mb" "$name|lua") |"
  if [ -n "$FLOOR_PORT" ]; then
    if [ -n "${RPS[$name|floor]:-}" ]; then
      line+=" $(pick "$name|floor") | $(ratio "$name|mb" "$name|floor") |"
    else
      line+=" - | - |"
    fi
  fi
  echo "$line"
done
