#!/usr/bin/env bash
# tracing.sh - what OpenTelemetry tracing at 100% sampling costs weft-proxy in throughput.
#
#   bash tests/bench/tracing.sh
#
# Same method as run.sh/peers.sh: nginx as the upstream and weft (one worker) share CPU 1, wrk
# (HTTP/1.1 keep-alive, -c32) runs on CPU 0. Rounds alternate weft with tracing off and on; "on"
# is OTEL_TRACES_SAMPLER=always_on exporting OTLP/HTTP (protobuf) to a sink (an nginx location
# that answers 200 to POST /v1/traces, on CPU 0 with the load generator, as a collector would be
# elsewhere). Each "on" round also reads weft_trace_spans_exported_total / _dropped_total so the
# figure is known to include real export, not spans dropped on a full queue.
#
# Knobs: ROUNDS [3], DUR [10s], CONNS [32], BUILD [1], WEFT_BIN, OUT_DIR.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/weft-config.sh"
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-3}
DUR=${DUR:-10s}
CONNS=${CONNS:-32}
BUILD=${BUILD:-1}
PORT=18083
UP=18080
SINK=18086
ADMIN=18087

log() { printf '[tracing-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
for t in nginx wrk taskset curl python3; do command -v $t >/dev/null || die "$t is not installed"; done

if [[ -z ${WEFT_BIN:-} ]]; then
  WEFT_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/weft-proxy
  if ((BUILD)); then
    (cd "$REPO" && cargo build --release -p weft-proxy) || die "cargo build failed"
  fi
fi
[[ -x $WEFT_BIN ]] || die "no weft-proxy binary at $WEFT_BIN"

WORK=${OUT_DIR:-$(mktemp -d /tmp/weft-tracing-bench.XXXXXX)}
mkdir -p "$WORK"/nginx
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/px;
  fastcgi_temp_path $WORK/nginx/fc; uwsgi_temp_path $WORK/nginx/uw; scgi_temp_path $WORK/nginx/sc;
  client_max_body_size 64m;
  server { listen 127.0.0.1:$UP; location / { default_type text/plain; return 200 "ok"; } }
  server { listen 127.0.0.1:$SINK; location = /v1/traces { return 200; } }
}
EOF
write_weft_config "$WORK/weft.yaml" "127.0.0.1:$UP"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
# The upstream server block runs on CPU 1 with weft; nginx has one worker, so the sink shares it.
taskset -c 1 nginx -c "$WORK/nginx.conf" >"$WORK/nginx.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$UP/" >/dev/null && break; sleep 0.1; done

metric() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk -v n="$1" 'index($0, n) == 1 {s += $NF} END {printf "%d", s}'; }

run_weft() { # $1 = off|on; prints req/s
  local mode=$1 pid rps
  if [[ $mode == on ]]; then
    env OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
      OTEL_TRACES_SAMPLER=always_on OTEL_SERVICE_NAME=bench \
      taskset -c 1 "$WEFT_BIN" run --config "$WORK/weft.yaml" --outbound 127.0.0.1:$PORT \
      --inbound 127.0.0.1:0 --admin 127.0.0.1:$ADMIN --workers 1 --log-level warn >"$WORK/weft-$mode.out" 2>&1 &
  else
    taskset -c 1 "$WEFT_BIN" run --config "$WORK/weft.yaml" --outbound 127.0.0.1:$PORT \
      --inbound 127.0.0.1:0 --admin 127.0.0.1:$ADMIN --workers 1 --log-level warn >"$WORK/weft-$mode.out" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$ADMIN/ready" >/dev/null && break; sleep 0.1; done
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$PORT/" >/dev/null
  rps=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print $2}')
  if [[ $mode == on ]]; then
    sleep 6 # let the last batches go out (schedule delay 5 s)
    log "  on: exported $(metric weft_trace_spans_exported_total) spans, dropped $(metric weft_trace_spans_dropped_total)"
  fi
  kill "$pid"; wait "$pid" 2>/dev/null
  echo "$rps"
}

OFF=() ON=()
for r in $(seq "$ROUNDS"); do
  off=$(run_weft off); on=$(run_weft on)
  log "round $r: tracing off $off req/s, on $on req/s"
  OFF+=("$off") ON+=("$on")
done
python3 - "${OFF[*]}" "${ON[*]}" <<'PY'
import statistics, sys
off = [float(x) for x in sys.argv[1].split()]
on = [float(x) for x in sys.argv[2].split()]
mo, mn = statistics.median(off), statistics.median(on)
print(f"tracing at 100% sampling: {mn:.0f} req/s vs {mo:.0f} off (medians of {len(off)} rounds) = "
      f"{mn / mo:.3f}x, cost {100 * (1 - mn / mo):.1f}%  (target: under 10%)")
PY
