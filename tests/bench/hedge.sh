#!/usr/bin/env bash
# hedge.sh - what hedging buys and costs: p50/p99 with and without `hedge`, and the extra upstream load.
#
#   bash tests/bench/hedge.sh
#
# Three HTTP/1.1 upstreams, one of which answers SLOW_MS late SLOW_PCT % of the time, behind two
# release weft-proxy processes whose configs differ only in the TrafficPolicy's `hedge` block. A
# fixed request rate (open loop, latency from each request's scheduled send time) goes through one
# proxy, then the other, ROUNDS times (interleaved, so a noisy machine weighs on both alike). The
# driver is tests/src/bin/hedge_bench.rs (its header lists the knobs: RATE, PHASE, ROUNDS, SLOW_MS,
# SLOW_PCT, HEDGE, LB, WORKERS); it prints one row per proxy: requests, errors, p50/p90/p99/p99.9/
# max in ms, and upstream requests per client request.
#
#   BUILD [1]   0 = use the existing target/release/weft-proxy
#   WEFT_BIN    use this weft-proxy binary (implies BUILD=0)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$REPO/$TARGET_DIR
BUILD=${BUILD:-1}
if [[ -n ${WEFT_BIN:-} ]]; then BUILD=0; fi
WEFT_BIN=${WEFT_BIN:-$TARGET_DIR/release/weft-proxy}

cd "$REPO"
if ((BUILD)); then
  cargo build --release -p weft-proxy
fi
[[ -x $WEFT_BIN ]] || { echo "no weft-proxy binary at $WEFT_BIN" >&2; exit 1; }
# The driver's own latency is the same for both proxies; it is built without optimisations to
# spare a release build of the test crate.
cargo build -p weft-tests --bin hedge_bench
WEFT_PROXY_BIN=$WEFT_BIN exec "$TARGET_DIR/debug/hedge_bench"
