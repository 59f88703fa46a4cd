#!/usr/bin/env bash
# Runs every fuzz target, one at a time, for SECONDS_PER_TARGET (default
# 30), each from a fresh copy of its seeds (fuzz/seeds/<target>) in
# fuzz/corpus/<target>, which is scratch and not kept. Prints executions and
# crashes per target, the seconds it ran and its average executions per
# second; exits non-zero if any target crashed or failed.
#
#   fuzz/run.sh [SECONDS_PER_TARGET [MAX_EXECUTIONS]]
#
# MAX_EXECUTIONS stops a target early once it has run that many inputs.
# TARGETS="h1_guard detect" picks targets (default: all of them). A crash
# leaves its input in fuzz/artifacts/<target>/ and the run's output in
# fuzz/corpus/<target>.log.
set -euo pipefail

secs=${1:-30}
runs=${2:-}
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# One build of every target; `cargo fuzz run` below then finds them built.
cargo +nightly fuzz build
targets=${TARGETS:-$(cargo +nightly fuzz list)}

limits=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
if [[ -n $runs ]]; then
    limits+=(-runs="$runs")
fi

failed=0
printf '%-18s %12s %8s %6s %8s\n' target executions crashes secs execs/s
for t in $targets; do
    corpus=corpus/$t
    rm -rf "$corpus"
    mkdir -p "$corpus" "artifacts/$t"
    cp seeds/"$t"/* "$corpus"/
    before=$(find "artifacts/$t" -type f | sort)
    start=$SECONDS
    status=0
    cargo +nightly fuzz run "$t" "$corpus" -- "${limits[@]}" >"$corpus.log" 2>&1 || status=$?
    took=$((SECONDS - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$corpus.log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$corpus.log" | tail -n 1)
    new=$(comm -13 <(echo "$before") <(find "artifacts/$t" -type f | sort) | sed '/^$/d')
    crashes=$(echo -n "$new" | grep -c . || true)
    printf '%-18s %12s %8s %6s %8s\n' "$t" "${execs:-?}" "$crashes" "$took" "${rate:-?}"
    if ((status != 0 || crashes > 0)); then
        failed=1
        echo "  $t failed (exit $status); see fuzz/$corpus.log" >&2
        for a in $new; do
            echo "  input: fuzz/$a" >&2
        done
    fi
done
exit "$failed"
