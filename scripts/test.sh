#!/usr/bin/env bash
# Runs every test layer and ends with one line "N passed, N failed".
#   static: cargo fmt --check, cargo clippy (both Lua versions)
#   core:   cargo test (both Lua versions; unit, table-driven and property tests), and
#           one run of the parser benchmark (benches/parsers.rs), which checks its results
#   fuzz:   every cargo-fuzz target for FUZZ_SECONDS (default 15) each; 0 skips this layer
#   lua:    busted specs against the installed rocks, under lua5.3 and lua5.4, and the
#           HTTP specs again in concurrent pools
#   hardening: bench/hardening.sh in its short form (COUNT=2000 STREAM_MIB=64, Lua 5.4,
#           about a minute), each row of its table one test; HARDENING=0 skips it
# Exits non-zero if anything failed. Installs and builds first (scripts/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
passed=0
failed=0

count() { # name, passed, failed
  passed=$((passed + $2)); failed=$((failed + $3))
  printf '%-28s %5d passed, %d failed\n' "$1" "$2" "$3"
}

check() { # name, command...: a check that counts as one test
  local name=$1; shift
  if "$@" >"$LOG/check.out" 2>&1; then count "$name" 1 0
  else cat "$LOG/check.out"; count "$name" 0 1; fi
}

bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

check "cargo fmt --check" cargo fmt --check
check "luarocks lint" luarocks lint moonbridge-scm-1.rockspec
for f in lua53 lua54; do
  check "cargo clippy ($f)" cargo clippy --locked --all-targets --features "$f" -- -D warnings
done

for f in lua53 lua54; do
  cargo test --locked --release --features "$f" >"$LOG/cargo.out" 2>&1
  rc=$?
  p=$(grep -Eo '^test result: .* ([0-9]+) passed' "$LOG/cargo.out" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
  n=$(grep -Eo '[0-9]+ failed' "$LOG/cargo.out" | awk '{s+=$1} END {print s+0}')
  if [ $rc -ne 0 ] && [ "$n" -eq 0 ]; then n=1; tail -40 "$LOG/cargo.out"; fi
  [ "$n" -gt 0 ] && grep -E -A15 '^failures:|panicked' "$LOG/cargo.out" | head -60
  count "cargo test ($f)" "$p" "$n"
done

# The parser benchmark checks every result it times: run it once so that it keeps working.
check "cargo bench parsers (results checked)" cargo bench --locked --features lua54 --bench parsers

# Fuzzing needs libFuzzer's unstable compiler flags: stable rustc allows them with
# RUSTC_BOOTSTRAP=1 (always set, or cargo caches a failed probe in fuzz/target).
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
if [ "$FUZZ_SECONDS" -gt 0 ]; then
  if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked cargo-fuzz >"$LOG/fuzz-install.out" 2>&1 || { tail -20 "$LOG/fuzz-install.out"; count "cargo-fuzz install" 0 1; }
  fi
  if command -v cargo-fuzz >/dev/null; then
    for t in $(sed -n 's/^name = "\([a-z]*\)"$/\1/p' fuzz/Cargo.toml | grep -v moonbridge-fuzz); do
      if (cd fuzz && RUSTC_BOOTSTRAP=1 timeout $((FUZZ_SECONDS + 300)) cargo fuzz run "$t" -- \
            -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024) >"$LOG/fuzz-$t.out" 2>&1; then
        count "fuzz $t (${FUZZ_SECONDS}s)" 1 0
      else
        tail -30 "$LOG/fuzz-$t.out"; count "fuzz $t (${FUZZ_SECONDS}s)" 0 1
      fi
    done
  fi
fi

busted_layer() { # name, lua version, busted arguments...: one TAP run counted as a layer
  local name=$1 v=$2 out="$LOG/busted.tap"; shift 2
  timeout 1200 "lua$v" /usr/bin/busted -o TAP "$@" >"$out" 2>"$LOG/busted.err"
  local rc=$? p n
  p=$(grep -c '^ok ' "$out")
  n=$(grep -c '^not ok ' "$out")
  if [ $rc -ne 0 ] && [ "$n" -eq 0 ]; then n=1; cat "$LOG/busted.err"; tail -20 "$out"; fi
  [ "$n" -gt 0 ] && grep -A12 '^not ok ' "$out" | head -80
  count "$name" "$p" "$n"
}

# shellcheck source=scripts/env.sh
. scripts/env.sh
for v in 5.3 5.4; do
  busted_layer "busted (lua$v)" "$v" "$@"
done

# The HTTP specs once more with every pool concurrent (16 handlers per worker), so that
# moonbridge_http's cooperative waits run through the same cases as its blocking ones.
if [ $# -eq 0 ]; then
  for v in 5.3 5.4; do
    MOONBRIDGE_SPEC_CONCURRENCY=16 busted_layer "http, concurrent (lua$v)" "$v" spec/http_*_spec.lua
  done
fi

# The hardening table (floods, faults, drain, misuse, slow clients, streams), short form.
if [ $# -eq 0 ] && [ "${HARDENING:-1}" != 0 ]; then
  COUNT=2000 STREAM_MIB=64 LUA=5.4 PEERS=0 timeout 900 bash bench/hardening.sh >"$LOG/hardening.out" 2>&1
  p=$(grep -c '| yes |$' "$LOG/hardening.out")
  n=$(grep -c '| no |$' "$LOG/hardening.out")
  if [ "$p" -eq 0 ] || [ "$n" -gt 0 ]; then cat "$LOG/hardening.out"; [ "$n" -gt 0 ] || n=1; fi
  count "hardening (short, lua5.4)" "$p" "$n"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
