#!/usr/bin/env bash
# Fuzzing at depth: every cargo-fuzz target for RUNS inputs (default 10 000 000), JOBS targets
# at a time (default 2), each starting from the committed corpus `fuzz/seeds/<target>` plus
# whatever `fuzz/corpus/<target>` holds from earlier runs. A target that panics (or leaks past
# 1 GiB of RSS, or hangs past its time limit) fails the run; its input is in
# `fuzz/artifacts/<target>/`. With SAVE=1 (the default), each target's corpus is minimized
# afterwards (`cargo fuzz cmin`) into `fuzz/seeds/<target>`, the corpus `cargo test` replays
# (tests/fuzz_replay.rs): commit it to keep what the run found.
#
#   bash fuzz/deep.sh                        # 10 M inputs per target; 15-40 min on 2 cores
#   RUNS=100000000 JOBS=1 bash fuzz/deep.sh  # longer
#   TARGETS="conn head" RUNS=1000000 bash fuzz/deep.sh
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and RUSTC_BOOTSTRAP=1 or a nightly toolchain
# (see fuzz/README.md). Prints one line per target (inputs run, speed, corpus size) and a
# summary line; exits non-zero when any target failed.
set -uo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
JOBS=${JOBS:-2}
SAVE=${SAVE:-1}
TARGETS=${TARGETS:-$(sed -n 's/^name = "\([a-z]*\)"$/\1/p' Cargo.toml | grep -v moonbridge-fuzz)}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is required: cargo install cargo-fuzz" >&2; exit 1; }
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT
# the targets' build, once (the runs below would race for it)
cargo fuzz build >"$LOG/build.out" 2>&1 || { tail -30 "$LOG/build.out"; exit 1; }

one() { # target: runs it, writes $LOG/<target>.rc
  local t=$1
  mkdir -p "corpus/$t" "seeds/$t"
  # at most a day per target: a hang is a failure, not a wait for ever
  timeout 86400 cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -runs="$RUNS" -rss_limit_mb=1024 \
    -max_len=4096 -timeout=10 -print_final_stats=1 >"$LOG/$t.out" 2>&1
  echo $? >"$LOG/$t.rc"
}

running=0
for t in $TARGETS; do
  one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
for t in $TARGETS; do
  rc=$(cat "$LOG/$t.rc" 2>/dev/null || echo 1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$LOG/$t.out" | tail -1)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG/$t.out" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG/$t.out" | tail -1)
  if [ "$rc" = 0 ] && [ -n "$runs" ] && [ "$runs" -ge "$RUNS" ]; then
    if [ "$SAVE" = 1 ]; then
      # minimized into a fresh directory, then swapped in: seeds/ only ever holds a whole corpus
      rm -rf "seeds/$t.new" && mkdir -p "seeds/$t.new"
      if cargo fuzz cmin "$t" "corpus/$t" -- "seeds/$t.new" >"$LOG/$t.cmin" 2>&1 ||
         cargo fuzz run "$t" "seeds/$t.new" "corpus/$t" -- -merge=1 >>"$LOG/$t.cmin" 2>&1; then
        rm -rf "seeds/$t" && mv "seeds/$t.new" "seeds/$t"
      else
        rm -rf "seeds/$t.new"
        echo "$t: minimizing the corpus failed (kept the old seeds)" >&2
      fi
    fi
    echo "$t: ok, $runs inputs, $speed/s, no panic; $(echo "$done_line" | sed 's/.*DONE *//; s/ *lim:.*//'); seeds: $(ls "seeds/$t" | wc -l) files"
  else
    failed=$((failed + 1))
    echo "$t: FAILED (exit $rc, ${runs:-0} of $RUNS inputs)"
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$LOG/$t.out" | head -10
  fi
done
echo "fuzz at depth: $(($(echo "$TARGETS" | wc -w) - failed)) targets passed, $failed failed ($RUNS inputs each)"
[ "$failed" -eq 0 ]
