#!/usr/bin/env bash
# ab.sh - does one weft-proxy build run slower than another? A/B of two release binaries.
#
#   bash tests/bench/ab.sh OLD_BIN NEW_BIN
#
# (1) Throughput, interleaved. Same method as tracing.sh/peers.sh: one nginx upstream (one worker)
#     and weft (--workers 1) share CPU 1, wrk (HTTP/1.1 keep-alive, -t1 -c$CONNS) runs on CPU 0
#     with this script. Every round measures both binaries, each started fresh with the same
#     config (weft-config.sh), 2 s of unmeasured load, then wrk --latency for $DUR. The order
#     alternates between rounds (OLD NEW, NEW OLD, ...) so a drift of the machine's speed during
#     the run does not land on one side. Per run: req/s, wrk's p50/p99 (closed loop at saturation,
#     so mostly queueing: read them as a cross-check, not as added latency), weft's CPU ms per 10k
#     requests (/proc utime+stime) and bg% (CPU used by anything else on the machine + steal, % of
#     all CPU: distrust rounds where it is high). The summary pairs the two runs of each round:
#     ratio NEW/OLD per round and its median, which cancels noise common to a round.
# (2) Instructions per request, callgrind. weft runs under valgrind --tool=callgrind (one worker,
#     same config, on CPU 1), a Python client sends CG_N1 sequential keep-alive GETs over one
#     connection (checking each is 200 "ok"), weft is stopped with SIGTERM and the total
#     instruction count Ir of the process (all threads, user space; the "summary:" line of the
#     callgrind output, which callgrind_annotate prints as PROGRAM TOTALS) is read. The same again
#     with CG_N2 requests; (Ir(N2) - Ir(N1)) / (N2 - N1) is the steady-state cost of one proxied
#     request, with start-up, config load, the readiness probe and shutdown subtracted out. The
#     request count is checked against weft_requests_total from /metrics. Runs alternate between
#     the binaries.
#
# Knobs: ROUNDS [5] (0 = callgrind only), DUR [10s], CONNS [32], WARMUP [2s], CG [1] (0 = skip callgrind),
#        CG_N1 [5000], CG_N2 [25000], CG_BODY [0] (callgrind requests are POSTs with a body of this
#        many bytes instead of GETs: hyper's server and client, not the fast path), QUIET_PCT [10], QUIET_WAIT_S [30] (before each measured run
#        wait up to this long for other CPU load to fall to QUIET_PCT % of the machine; 0 = never
#        wait), OUT_DIR [mktemp].
# Results in OUT_DIR: results.tsv (round, order, side, metric, value), callgrind.tsv, summary.txt,
# raw wrk outputs, callgrind.out.* files, logs. Everything started here is stopped by PID on exit.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=weft-config.sh
. "$HERE/weft-config.sh"
ROUNDS=${ROUNDS:-5}
DUR=${DUR:-10s}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-2s}
CG=${CG:-1}
CG_N1=${CG_N1:-5000}
CG_N2=${CG_N2:-25000}
CG_BODY=${CG_BODY:-0}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT_S=${QUIET_WAIT_S:-30}
PORT=18083
UP=18080
ADMIN=18087
HOST=127.0.0.1

log() { printf '[ab-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
(($# == 2)) || die "usage: bash tests/bench/ab.sh OLD_BIN NEW_BIN"
OLD_BIN=$(realpath "$1") NEW_BIN=$(realpath "$2")
for b in "$OLD_BIN" "$NEW_BIN"; do [[ -x $b ]] || die "not an executable: $b"; done
for t in nginx wrk taskset curl python3; do command -v $t >/dev/null || die "$t is not installed"; done
if ((CG)); then
  command -v valgrind >/dev/null || die "valgrind is not installed (or CG=0)"
  ((CG_N2 > CG_N1)) || die "CG_N2 must be larger than CG_N1"
fi

WORK=${OUT_DIR:-$(mktemp -d /tmp/weft-ab-bench.XXXXXX)}
mkdir -p "$WORK"/nginx || die "cannot create $WORK"
WORK=$(cd "$WORK" && pwd)
RES=$WORK/results.tsv
: >"$RES"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/px;
  fastcgi_temp_path $WORK/nginx/fc; uwsgi_temp_path $WORK/nginx/uw; scgi_temp_path $WORK/nginx/sc;
  server { listen $HOST:$UP; location / { default_type text/plain; return 200 "ok"; } }
}
EOF
write_weft_config "$WORK/weft.yaml" "$HOST:$UP"
for b in "$OLD_BIN" "$NEW_BIN"; do "$b" check "$WORK/weft.yaml" >/dev/null 2>&1 || die "$b check $WORK/weft.yaml fails"; done

# CPUs: the first two this script may use (respects an outer taskset/cpuset), as peers.sh does.
read -r -a CPUS <<<"$(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')"
((${#CPUS[@]} >= 2)) || die "needs 2 usable CPUs (load generator apart from upstream + proxy)"
LG_CPU=${CPUS[0]} SRV_CPU=${CPUS[1]}
taskset -pc "$LG_CPU" $$ >/dev/null  # this script, wrk, curl and the callgrind client
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null

# ---------------------------------------------------------------- processes (stopped by PID)
PIDS=()
FG_PID=""
cleanup() {
  local p
  [[ -n $FG_PID ]] && kill -TERM "$FG_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  wait 2>/dev/null
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget() { local p keep=(); for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
stop() {  # pid: SIGTERM, wait up to 30 s (callgrind writes its output on exit), then SIGKILL
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  forget "$1"
}
run_fg() {  # command...: in the background + wait, so INT/TERM stop it at once
  "$@" &
  FG_PID=$!
  wait "$FG_PID"
  local rc=$?
  FG_PID=""
  return $rc
}
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for p in $UP $PORT $ADMIN; do port_busy "$p" && die "port $HOST:$p already in use; stop whatever listens there first"; done

# ---------------------------------------------------------------- noise (as peers.sh's bg%)
ticks() {  # utime+stime of the given PIDs, clock ticks
  local t=0 p s f
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -r -a f <<<"${s##*) }"  # f[0] is field 3 (state): utime is f[11], stime f[12]
    t=$((t + f[11] + f[12]))
  done
  echo "$t"
}
ours() {  # this script + its reaped children (wrk, curl, clients) + the given server PIDs
  local s f
  s=$(cat /proc/$$/stat)
  read -r -a f <<<"${s##*) }"  # + cutime f[13], cstime f[14]
  echo $((f[11] + f[12] + f[13] + f[14] + $(ticks "$@")))
}
noise_snap() {  # "busy steal total ours" now; args: server PIDs
  echo "$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $2 + $3 + $4, $9, t; exit }' /proc/stat) $(ours "$@")"
}
bg_pct() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[3] - x[3]
    other = (y[1] - x[1]) - (y[4] - x[4]); if (other < 0) other = 0
    printf "%.1f", (d > 0) ? (other + y[2] - x[2]) * 100 / d : 0 }'
}
QUIET_SPENT=0
wait_quiet() {  # args: server PIDs; bounded wait for the rest of the machine to be quiet
  ((QUIET_WAIT_S > 0)) || return 0
  local t0=$SECONDS a b pct
  while :; do
    a=$(noise_snap "$@"); sleep 1; b=$(noise_snap "$@")
    pct=$(bg_pct "$a" "$b")
    awk -v p="$pct" -v m="$QUIET_PCT" 'BEGIN { exit !(p <= m) }' && break
    if ((SECONDS - t0 >= QUIET_WAIT_S)); then
      log "machine still busy (${pct}% CPU used by others); measuring anyway (see bg%)"
      break
    fi
    ((SECONDS - t0 < 2)) && log "waiting for other load to drop below ${QUIET_PCT}% (now ${pct}%)"
    sleep 2
  done
  QUIET_SPENT=$((QUIET_SPENT + SECONDS - t0))
}

to_us() {  # wrk latency token (85.00us 1.20ms 1.01s) -> microseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) f = 1; else if (v ~ /ms$/) f = 1000;
    else if (v ~ /m$/) f = 60000000; else if (v ~ /s$/) f = 1000000; else f = 1; printf "%.0f", n * f }'
}
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RES"; }  # round order side metric value

# ---------------------------------------------------------------- upstream
log "output in $WORK; cpus: load generator $LG_CPU, upstream + weft $SRV_CPU"
{
  echo "old: $OLD_BIN sha256 $(sha256sum "$OLD_BIN" | cut -c1-16) $("$OLD_BIN" --version 2>&1)"
  echo "new: $NEW_BIN sha256 $(sha256sum "$NEW_BIN" | cut -c1-16) $("$NEW_BIN" --version 2>&1)"
  echo "nginx $(nginx -v 2>&1 | awk -F/ '{ print $2 }'), $(wrk -v 2>&1 | awk 'NR == 1 { print $1, $2 }'), $(valgrind --version 2>/dev/null)"
  echo "kernel $(uname -r), $(getconf _NPROCESSORS_ONLN) cpus, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$WORK/versions.txt" >&2
nginx -t -q -c "$WORK/nginx.conf" >"$WORK/nginx-t.log" 2>&1 || die "nginx config invalid: $(cat "$WORK/nginx-t.log")"
taskset -c "$SRV_CPU" nginx -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 </dev/null &
NGINX=$!
PIDS+=("$NGINX")
for _ in $(seq 50); do [[ $(curl -fs "http://$HOST:$UP/") == ok ]] && break; sleep 0.1; done
[[ $(curl -fs "http://$HOST:$UP/") == ok ]] || die "nginx upstream did not come up, see $WORK/nginx.out"
read -r -a NGINX_KIDS <<<"$(ps -e -o pid=,ppid= | awk -v p="$NGINX" '$2 == p { printf "%s ", $1 }')"

start_weft() {  # bin log [wrapper...] -> WEFT_PID; weft on the servers' CPU
  local bin=$1 out=$2; shift 2
  taskset -c "$SRV_CPU" "$@" "$bin" run --config "$WORK/weft.yaml" --outbound "$HOST:$PORT" \
    --inbound "$HOST:0" --admin "$HOST:$ADMIN" --workers 1 --log-level warn >"$out" 2>&1 </dev/null &
  WEFT_PID=$!
  PIDS+=("$WEFT_PID")
}
wait_ready() {  # pid timeout_s [poll_s]
  local t0=$SECONDS
  until curl -fs "http://$HOST:$ADMIN/ready" >/dev/null 2>&1; do
    kill -0 "$1" 2>/dev/null || return 1
    ((SECONDS - t0 > $2)) && return 1
    sleep "${3:-0.1}"
  done
}
metric() { curl -fs "http://$HOST:$ADMIN/metrics" | awk -v n="$1" 'index($0, n) == 1 { s += $NF } END { printf "%d", s }'; }

# ---------------------------------------------------------------- (1) throughput rounds
tput_run() {  # round order side bin
  local r=$1 o=$2 side=$3 bin=$4 raw s0 s1 c0 c1 n rps
  raw=$WORK/r$r-$side.wrk.txt
  start_weft "$bin" "$WORK/r$r-$side.weft.out"
  wait_ready "$WEFT_PID" 30 || die "$side weft did not become ready, see $WORK/r$r-$side.weft.out"
  wait_quiet "$WEFT_PID" "$NGINX" "${NGINX_KIDS[@]}"
  run_fg timeout 60 taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"$WARMUP" "http://$HOST:$PORT/" >/dev/null 2>&1
  s0=$(noise_snap "$WEFT_PID" "$NGINX" "${NGINX_KIDS[@]}"); c0=$(ticks "$WEFT_PID")
  run_fg timeout 600 taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://$HOST:$PORT/" >"$raw" 2>&1
  c1=$(ticks "$WEFT_PID"); s1=$(noise_snap "$WEFT_PID" "$NGINX" "${NGINX_KIDS[@]}")
  stop "$WEFT_PID"
  n=$(awk '/requests in/ { print $1 }' "$raw")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$raw")
  [[ -n $n && -n $rps ]] || die "wrk failed against $side, see $raw"
  rec "$r" "$o" "$side" rps "$rps"
  rec "$r" "$o" "$side" requests "$n"
  rec "$r" "$o" "$side" p50_us "$(to_us "$(awk '$1 == "50%" { print $2 }' "$raw")")"
  rec "$r" "$o" "$side" p99_us "$(to_us "$(awk '$1 == "99%" { print $2 }' "$raw")")"
  rec "$r" "$o" "$side" errors "$(awk '/Non-2xx/ { e += $NF } /Socket errors/ { gsub(",", ""); e += $4 + $6 + $8 + $10 } END { print e + 0 }' "$raw")"
  rec "$r" "$o" "$side" cpu_ms_10k "$(awk -v d=$((c1 - c0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", d / hz * 1000 / n * 10000 }')"
  rec "$r" "$o" "$side" bg_pct "$(bg_pct "$s0" "$s1")"
  log "round $r: $side $rps req/s"
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then
    tput_run "$r" 1 old "$OLD_BIN"; tput_run "$r" 2 new "$NEW_BIN"
  else
    tput_run "$r" 1 new "$NEW_BIN"; tput_run "$r" 2 old "$OLD_BIN"
  fi
done

# ---------------------------------------------------------------- (2) callgrind
CGRES=$WORK/callgrind.tsv
: >"$CGRES"
cg_client() {  # n: n sequential requests over one keep-alive connection; exits 1 unless all are 200 "ok"
  python3 - "$HOST" "$PORT" "$1" "$CG_BODY" <<'PY'
import socket, sys
host, port, n, body = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port), timeout=60)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if body:
    req = f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {body}\r\n\r\n".encode() + b"x" * body
else:
    req = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
buf, bad = b"", 0
for _ in range(n):
    s.sendall(req)
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed by weft")
        buf += d
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    hdr = {k.strip().lower(): v.strip() for k, _, v in (l.partition(b":") for l in lines[1:])}
    if b"content-length" not in hdr:
        sys.exit(f"response without content-length: {head!r}")
    clen = int(hdr[b"content-length"])
    while len(buf) < clen:
        d = s.recv(65536)
        if not d:
            sys.exit("connection closed by weft")
        buf += d
    body, buf = buf[:clen], buf[clen:]
    bad += status != 200 or body != b"ok"
s.close()
print(f"{n} requests, {bad} not 200 ok", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}
cg_run() {  # side bin n
  local side=$1 bin=$2 n=$3 out got ir
  out=$WORK/callgrind.out.$side.$n
  start_weft "$bin" "$WORK/callgrind-$side-$n.log" valgrind --tool=callgrind --callgrind-out-file="$out"
  wait_ready "$WEFT_PID" 120 0.5 || die "$side weft under callgrind did not become ready, see $WORK/callgrind-$side-$n.log"
  run_fg cg_client "$n" 2>>"$WORK/callgrind-$side-$n.log" || die "callgrind client failed against $side, see $WORK/callgrind-$side-$n.log"
  got=$(metric weft_requests_total)
  stop "$WEFT_PID"
  ir=$(awk '/^summary:/ { print $2 }' "$out")
  [[ -n $ir ]] || die "no instruction total in $out"
  [[ $got == "$n" ]] || log "WARNING: $side sent $n requests but weft_requests_total is $got"
  printf '%s\t%s\t%s\t%s\n' "$side" "$n" "$ir" "$got" >>"$CGRES"
  log "callgrind $side N=$n: Ir $ir (weft_requests_total $got)"
}
if ((CG)); then
  cg_run old "$OLD_BIN" "$CG_N1"
  cg_run new "$NEW_BIN" "$CG_N1"
  cg_run new "$NEW_BIN" "$CG_N2"
  cg_run old "$OLD_BIN" "$CG_N2"
fi
stop "$NGINX"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK/versions.txt"

# ---------------------------------------------------------------- summary
python3 - "$RES" "$CGRES" "$DUR" "$CONNS" "$LG_CPU" "$SRV_CPU" "$QUIET_SPENT" "$CG_BODY" <<'PY' | tee "$WORK/summary.txt"
import statistics, sys
from collections import defaultdict
res, cgres, dur, conns, lg, srv, quiet, cg_body = sys.argv[1:]
v = defaultdict(dict)  # (side, metric) -> {round: value}
order = {}
for line in open(res):
    r, o, side, k, x = line.rstrip("\n").split("\t")
    v[(side, k)][int(r)] = float(x)
    if o == "1":
        order[int(r)] = side
rounds = sorted(v[("old", "rps")])
med = lambda xs: statistics.median(xs) if xs else float("nan")
if rounds:  # ROUNDS=0: callgrind only
    print(f"\nthroughput: wrk -t1 -c{conns} -d{dur} --latency, HTTP/1.1 keep-alive; wrk on cpu{lg}, nginx + weft "
          f"(--workers 1) on cpu{srv}; {len(rounds)} rounds, order alternating")
    hdr = ("round", "first", "old req/s", "new req/s", "new/old", "old p50", "new p50", "old p99", "new p99",
           "old cpu", "new cpu", "old bg%", "new bg%")
    w = (5, 5, 10, 10, 7, 7, 7, 7, 7, 7, 7, 7, 7)
    row = lambda cells: "  ".join(str(c).rjust(n) for c, n in zip(cells, w))
    print("latency in us (wrk, closed loop); cpu = weft CPU ms per 10k requests; bg% = other load on the machine")
    print(row(hdr))
    ratios = []
    for r in rounds:
        g = lambda s, k, f="{:.0f}": f.format(v[(s, k)][r]) if r in v[(s, k)] else "-"
        ratio = v[("new", "rps")][r] / v[("old", "rps")][r]
        ratios.append(ratio)
        print(row((r, order.get(r, "?"), g("old", "rps"), g("new", "rps"), f"{ratio:.3f}", g("old", "p50_us"),
                   g("new", "p50_us"), g("old", "p99_us"), g("new", "p99_us"), g("old", "cpu_ms_10k", "{:.1f}"),
                   g("new", "cpu_ms_10k", "{:.1f}"), g("old", "bg_pct", "{:.1f}"), g("new", "bg_pct", "{:.1f}"))))
    m = lambda s, k: med(list(v[(s, k)].values()))
    mr = med(ratios)
    print(row(("median", "", f"{m('old', 'rps'):.0f}", f"{m('new', 'rps'):.0f}", f"{mr:.3f}", f"{m('old', 'p50_us'):.0f}",
               f"{m('new', 'p50_us'):.0f}", f"{m('old', 'p99_us'):.0f}", f"{m('new', 'p99_us'):.0f}",
               f"{m('old', 'cpu_ms_10k'):.1f}", f"{m('new', 'cpu_ms_10k'):.1f}", f"{m('old', 'bg_pct'):.1f}",
               f"{m('new', 'bg_pct'):.1f}")))
    errs = sum(sum(v[(s, "errors")].values()) for s in ("old", "new"))
    if errs:
        print(f"WARNING: {errs:.0f} wrk errors (non-2xx or socket errors), see the raw wrk outputs")
    spread = lambda s: (max(v[(s, "rps")].values()) / min(v[(s, "rps")].values()) - 1) * 100
    print(f"paired ratio new/old: median {mr:.3f} ({(mr - 1) * 100:+.1f}%), range {min(ratios):.3f}..{max(ratios):.3f}; "
          f"new faster in {sum(x > 1 for x in ratios)} of {len(ratios)} rounds")
    print(f"noise: round-to-round spread of req/s (max/min - 1) old {spread('old'):.1f}%, new {spread('new'):.1f}%; "
          f"median ratio of medians {m('new', 'rps') / m('old', 'rps'):.3f}; waited {quiet} s for a quiet machine")
cg = defaultdict(dict)
for line in open(cgres):
    side, n, ir, got = line.split()
    cg[side][int(n)] = (int(ir), int(got))
if cg:
    print("\ninstructions per proxied request (callgrind, user space, all threads; one keep-alive connection, "
          f"sequential {'GETs' if cg_body == '0' else f'POSTs of {cg_body} bytes'}): (Ir(N2) - Ir(N1)) / (N2 - N1)")
    per = {}
    for side in ("old", "new"):
        (n1, (i1, g1)), (n2, (i2, g2)) = sorted(cg[side].items())
        per[side] = (i2 - i1) / (n2 - n1)
        print(f"  {side}: Ir {i1:,} at N={n1}, {i2:,} at N={n2} (weft_requests_total {g1}, {g2}) -> "
              f"{per[side]:,.0f} Ir/request; start-up etc. (Ir(N1) - N1 x that) {i1 - n1 * per[side]:,.0f}")
    print(f"  new/old {per['new'] / per['old']:.4f} ({(per['new'] / per['old'] - 1) * 100:+.2f}%)")
PY
log "results in $WORK (summary.txt, results.tsv, callgrind.tsv, raw wrk outputs, callgrind.out.*)"
