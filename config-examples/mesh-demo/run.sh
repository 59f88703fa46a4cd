#!/usr/bin/env bash
# A complete Weft mesh on loopback, one command, no Kubernetes:
#   weft-control-plane (CA + config stream) serving mesh.yaml,
#   frontend, reviews-v1 and reviews-v2, each behind its own weft-proxy
#   sidecar with a certificate from the control plane (mTLS, Strict inbound),
#   a 90/10 canary with retries, and traffic flowing from frontend.
# Prints where to look, then one live summary line a second. Ctrl-C stops all.
#
# DEMO_SECONDS=N stops it after N seconds. The sidecars read the OpenTelemetry
# environment: OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 (or :4317 with
# OTEL_EXPORTER_OTLP_PROTOCOL=grpc) sends every hop's span there; trace.sh
# does that with a local receiver and draws one trace.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
ports="15012 15014 15100 15101 15106 15200 15201 15206 15300 15301 15306 19201 19301"
for port in $ports; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done
echo "building weft-proxy and weft-control-plane..."
cargo build -q -p weft-proxy -p weft-control-plane
work=$(mktemp -d /tmp/weft-mesh-demo.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "stopped; logs were in $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp_bin=target/debug/weft-control-plane
proxy_bin=target/debug/weft-proxy
$cp_bin serve --config "$here/mesh.yaml" --ca-dir "$work/ca" \
  --listen 127.0.0.1:15012 --admin 127.0.0.1:15014 >"$work/control-plane.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:15014/ready >/dev/null 2>&1 && break; sleep 0.1; done

app() {  # port name fail-percent: a tiny HTTP service
  python3 - "$1" "$2" "$3" <<'PY' >"$work/$2.log" 2>&1 &
import http.server, random, sys
port, name, fail = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = 503 if random.randrange(100) < fail else 200
        body = f"{name}: {'unavailable' if code == 503 else 'ok'} (caller {self.headers.get('x-weft-peer-identity')})\n".encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
  pids+=($!)
}
sidecar() {  # name admin-port app-port
  local name=$1 base=$2 app=$3
  local token
  token=$($cp_bin token --ca-dir "$work/ca" --namespace default --service-account "$name")
  $proxy_bin run --control-plane https://127.0.0.1:15012 --control-plane-ca "$work/ca/ca.pem" \
    --bootstrap-token "$token" --service "${name%-v[0-9]}" --service-account "$name" \
    --admin "127.0.0.1:$base" --outbound "127.0.0.1:$((base + 1))" --inbound "127.0.0.1:$((base + 6))" \
    --app "127.0.0.1:$app" --proxy-name "$name" >"$work/$name.sidecar.log" 2>&1 &
  pids+=($!)
}
app 19201 reviews-v1 0
app 19301 reviews-v2 20
for port in 19201 19301; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done
sidecar frontend 15100 19101
sidecar reviews-v1 15200 19201
sidecar reviews-v2 15300 19301
for a in 15100 15200 15300; do
  for _ in $(seq 150); do curl -sf "http://127.0.0.1:$a/ready" >/dev/null 2>&1 && break; sleep 0.1; done
done

echo
echo "== frontend -> reviews through its sidecar (mTLS to the reviews sidecars; the app sees the caller):"
for _ in $(seq 5); do curl -s -x http://127.0.0.1:15101 http://reviews/; done
echo "== a caller without the frontend identity is refused by the reviews sidecar (Strict mTLS):"
curl -s -o /dev/null -w "plaintext to reviews-v1's sidecar: %{http_code} (connection closed = 000)\n" http://127.0.0.1:15206/ || true

# The frontend "app": steady traffic to reviews through its sidecar.
python3 - <<'PY' >"$work/traffic.log" 2>&1 &
import concurrent.futures, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:15101"}))
def one(_):
    try:
        opener.open("http://reviews/", timeout=5).read()
    except Exception:
        pass
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    while True:
        t = time.time()
        list(pool.map(one, range(20)))
        time.sleep(max(0, 0.1 - (time.time() - t)))
PY
pids+=($!)

cat <<MSG

The mesh is up (files in $work). Look at:
  curl http://127.0.0.1:15014/proxies     # control plane: every sidecar, its identity and config version
  curl http://127.0.0.1:15100/endpoints   # frontend sidecar: endpoints, health, ejections, EWMA latency
  curl http://127.0.0.1:15100/metrics     # Prometheus metrics (requests, latency, retries, certificates)
  curl -x http://127.0.0.1:15101 http://reviews/   # call reviews as frontend does
Edit $here/mesh.yaml (e.g. the 90/10 weights): the control plane pushes it to every sidecar.
Ctrl-C stops everything.

MSG
# One live line a second from the frontend sidecar's metrics.
python3 - <<'PY'
import re, time, urllib.request
def scrape():
    text = urllib.request.urlopen("http://127.0.0.1:15100/metrics", timeout=2).read().decode()
    req, ok, retries, ejected, buckets = 0.0, 0.0, 0.0, 0.0, {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        v = float(value)
        if name.startswith("weft_requests_total{") and 'direction="outbound"' in name:
            req += v
            if 'code_class="2xx"' in name:
                ok += v
        elif name.startswith("weft_retries_total{") and 'result="sent"' in name:
            retries += v
        elif name.startswith("weft_ejected_endpoints{"):
            ejected += v
        elif name.startswith("weft_request_duration_seconds_bucket{") and 'direction="outbound"' in name:
            le = re.search(r'le="([^"]+)"', name).group(1)
            buckets[le] = buckets.get(le, 0.0) + v
    return req, ok, retries, ejected, buckets
def p99(now, before):
    rows = sorted(((float("inf") if le == "+Inf" else float(le)), now[le] - before.get(le, 0.0)) for le in now)
    total = rows[-1][1] if rows else 0
    if total <= 0:
        return None
    for le, n in rows:
        if n >= 0.99 * total:
            return le
    return None
import os
stop = time.time() + float(os.environ.get("DEMO_SECONDS") or "inf")
prev, t0 = scrape(), time.time()
while time.time() < stop:
    time.sleep(1)
    cur, t1 = scrape(), time.time()
    dt = t1 - t0
    n = cur[0] - prev[0]
    rate = n / dt
    success = 100.0 * (cur[1] - prev[1]) / n if n else 100.0
    q = p99(cur[4], prev[4])
    p = "-" if q is None else ("> max" if q == float("inf") else f"<= {q * 1000:.1f} ms")
    print(f"\rreviews via frontend: {rate:6.1f} req/s  success {success:5.1f}%  p99 {p:>10}  retries {cur[2] - prev[2]:3.0f}/s  ejected endpoints {cur[3]:.0f}   ", end="", flush=True)
    prev, t0 = cur, t1
PY
