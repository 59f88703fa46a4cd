#!/usr/bin/env bash
# run.sh - benchmark weft-proxy against a direct connection, Envoy and HAProxy, in one run.
#
#   bash tests/bench/run.sh
#
# Builds weft-proxy (release), writes a weft config that forwards 127.0.0.1:18083 to the nginx
# upstream on 127.0.0.1:18080, and runs tests/bench/peers.sh (the shared side-by-side harness)
# with weft as the candidate. peers.sh measures, on loopback and with the load generator pinned
# to one CPU and upstream + proxies to another:
#   (a) req/s at fixed connections (wrk, HTTP/1.1 keep-alive), proxy CPU per request, RSS
#   (b) latency p50/p90/p99/p99.9 at fixed rates (oha, latency-corrected), added over direct
#   (c) h2c prior-knowledge throughput (h2load)
# and prints its table; this script then prints a short "ratios" summary of weft against the peers
# and the project's targets (one worker: req/s >= HAProxy and >= 2x Envoy; added p50 and p99 at
# 1k req/s <= HAProxy's; RSS idle <= 10 MiB).
#
# Environment knobs: everything peers.sh reads (DUR, CONNS, RATES, LAT_DUR, LAT_CONNS, WARMUP, H2,
# H2_DUR, H2_CONNS, H2_STREAMS, PIN, ROUNDS, QUIET_*, INSTALL, OUT_DIR, ENVOY_BIN, OHA_BIN, ...;
# see the head of peers.sh) is passed through unchanged, plus:
#   WEFT_WORKERS_BENCH [1]   --workers of weft-proxy
#   WEFT_LOG_LEVEL_BENCH [warn]
#   BUILD [1]                0 = do not run cargo build (use the existing release binary)
#   WEFT_BIN                 use this weft-proxy binary (implies BUILD=0)
# Results: $OUT_DIR (default: a new /tmp/weft-bench.XXXXXX/peers) holds results.tsv, table.txt,
# ratios.txt, raw tool outputs and logs; weft's config and the candidate log are there too.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/weft-config.sh"
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-1}
WORKERS=${WEFT_WORKERS_BENCH:-1}
LEVEL=${WEFT_LOG_LEVEL_BENCH:-warn}
CANDIDATE_PORT=18083
UPSTREAM=127.0.0.1:18080

log() { printf '[weft-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- build
if [[ -n ${WEFT_BIN:-} ]]; then
  BUILD=0
else
  TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
  [[ $TARGET_DIR == /* ]] || TARGET_DIR=$REPO/$TARGET_DIR
  WEFT_BIN=$TARGET_DIR/release/weft-proxy
fi
if ((BUILD)); then
  log "cargo build --release -p weft-proxy (in $REPO)"
  (cd "$REPO" && cargo build --release -p weft-proxy) || die "cargo build failed"
fi
[[ -x $WEFT_BIN ]] || die "no weft-proxy binary at $WEFT_BIN"

# ---------------------------------------------------------------- config
if [[ -n ${OUT_DIR:-} ]]; then
  mkdir -p "$OUT_DIR" || die "cannot create OUT_DIR $OUT_DIR"
  OUT_DIR=$(cd "$OUT_DIR" && pwd)
  WORK=$OUT_DIR
else
  WORK=$(mktemp -d /tmp/weft-bench.XXXXXX) || die "mktemp failed"
  OUT_DIR=$WORK/peers
fi
export OUT_DIR
CFG=$WORK/weft-bench.yaml
write_weft_config "$CFG" "$UPSTREAM"
"$WEFT_BIN" check "$CFG" >&2 || die "weft config $CFG does not check"

# ---------------------------------------------------------------- run peers.sh
export CANDIDATE_NAME=weft CANDIDATE_H2=1 CANDIDATE_PORT
export CANDIDATE_CMD="exec '$WEFT_BIN' run --config '$CFG' --outbound 127.0.0.1:$CANDIDATE_PORT \
--inbound 127.0.0.1:0 --admin 127.0.0.1:0 --workers $WORKERS --log-level $LEVEL"
log "results will be in $OUT_DIR (weft config: $CFG)"

# peers.sh runs in the background so that INT/TERM sent to this script reach it and it can stop,
# by PID, everything it started.
PEERS_PID=""
on_signal() { [[ -n $PEERS_PID ]] && kill -TERM "$PEERS_PID" 2>/dev/null; wait "$PEERS_PID" 2>/dev/null; exit 130; }
trap on_signal INT TERM
bash "$HERE/peers.sh" &
PEERS_PID=$!
wait "$PEERS_PID"
RC=$?
PEERS_PID=""
trap - INT TERM
[[ -s $OUT_DIR/results.tsv ]] || die "peers.sh (exit $RC) produced no results; see $OUT_DIR"

# ---------------------------------------------------------------- ratios
python3 - "$OUT_DIR/results.tsv" <<'PY' | tee "$OUT_DIR/ratios.txt"
import sys, statistics
from collections import defaultdict
vals = defaultdict(list)
byround = defaultdict(dict)  # (phase, target, metric) -> {round: value}
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        continue
    rnd, ph, t, k, v = parts
    try:
        vals[(ph, t, k)].append(float(v))
        byround[(ph, t, k)][rnd] = float(v)
    except ValueError:
        pass
def g(ph, t, k):
    x = vals.get((ph, t, k))
    return statistics.median(x) if x else None
def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"
def num(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def added(ph, t, p):
    a, d = g(ph, t, p), g(ph, "direct", p)
    return None if a is None or d is None else a - d
W, PEERS = "weft", ("haproxy", "envoy")
checks = []  # (description, ok or None when not measured)
print("\nratios (weft vs peers; medians over rounds)")
w = g("tput", W, "rps")
print(f"  throughput h1  weft {num(w)} req/s = {ratio(w, g('tput', 'direct', 'rps'))} direct, "
      f"{ratio(w, g('tput', 'haproxy', 'rps'))} haproxy ({num(g('tput', 'haproxy', 'rps'))}), "
      f"{ratio(w, g('tput', 'envoy', 'rps'))} envoy ({num(g('tput', 'envoy', 'rps'))})")
print("  cpu ms/10k     " + ", ".join(f"{t} {num(g('tput', t, 'cpu_ms_10k'), '{:.1f}')}" for t in (W,) + PEERS)
      + f"  (weft/haproxy {ratio(g('tput', W, 'cpu_ms_10k'), g('tput', 'haproxy', 'cpu_ms_10k'))})")
hp, ev = g("tput", "haproxy", "rps"), g("tput", "envoy", "rps")
checks.append(("req/s >= HAProxy's", None if w is None or hp is None else w >= hp))
checks.append(("req/s >= 2x Envoy's", None if w is None or ev is None else w >= 2 * ev))
lat_phases = sorted((p for p in {k[0] for k in vals} if p.startswith("lat")), key=lambda p: float(p[3:]))
for ph in lat_phases:
    rate = ph[3:]
    for p in ("p50_us", "p99_us"):
        cells = ", ".join(f"{t} {num(added(ph, t, p), '{:+.0f}')}" for t in (W,) + PEERS)
        print(f"  added {p[:3]:3} @{rate:>5}/s  {cells} us  (direct {num(g(ph, 'direct', p))} us)")
        if float(rate) == 1000:
            a, h = added(ph, W, p), added(ph, "haproxy", p)
            checks.append((f"added {p[:3]} @1k <= HAProxy's", None if a is None or h is None else a <= h))
            # The rounds are interleaved, so each round pairs weft and HAProxy
            # under the same machine noise; the medians above are unpaired.
            wr, hr = byround.get((ph, W, p), {}), byround.get((ph, "haproxy", p), {})
            diffs = [wr[r] - hr[r] for r in sorted(wr, key=int) if r in hr]
            if len(diffs) > 1:
                print(f"    paired by round, weft - haproxy: {', '.join(f'{d:+.0f}' for d in diffs)} us; "
                      f"median {statistics.median(diffs):+.0f}, weft lower in {sum(d < 0 for d in diffs)} of {len(diffs)}")
h2 = g("h2", W, "rps")
if h2 is not None:
    print(f"  throughput h2c weft {num(h2)} req/s = {ratio(h2, g('h2', 'haproxy', 'rps'))} haproxy, "
          f"{ratio(h2, g('h2', 'envoy', 'rps'))} envoy")
mib = lambda v: None if v is None else v / 1024
print("  rss idle MiB   " + ", ".join(f"{t} {num(mib(g('setup', t, 'rss_idle_kb')), '{:.1f}')}" for t in (W,) + PEERS))
print("  rss load MiB   " + ", ".join(f"{t} {num(mib(g('tput', t, 'rss_load_kb')), '{:.1f}')}" for t in (W,) + PEERS))
ri = mib(g("setup", W, "rss_idle_kb"))
checks.append(("RSS idle <= 10 MiB", None if ri is None else ri <= 10))
errs = {ph: g(ph, W, "errors") for ph in ["tput"] + lat_phases + ["h2"] if g(ph, W, "errors")}
if errs:
    print("  WARNING weft errors: " + ", ".join(f"{ph} {v:.0f}" for ph, v in errs.items()))
bgs = [v for (ph, t, k), x in vals.items() if k == "bg_pct" for v in x]
if bgs:
    print(f"  noise: bg% max {max(bgs):.1f}, median {statistics.median(bgs):.1f} over {len(bgs)} runs")
print("targets (one worker):")
for desc, ok in checks:
    print(f"  {'PASS' if ok else ('n/a ' if ok is None else 'FAIL')}  {desc}")
PY
log "results: $OUT_DIR (table.txt, ratios.txt, results.tsv, raw outputs; weft log: candidate.out)"
exit "$RC"
