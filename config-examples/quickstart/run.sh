#!/usr/bin/env bash
# File-mode quickstart: two small upstreams (v1, v2) behind one name, "hello",
# with an 80/20 split and a /v2 route, served by weft-proxy from mesh.yaml.
# Ctrl-C stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
for port in 15000 15001 15006 19081 19082; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done
echo "building weft-proxy..."
cargo build -q -p weft-proxy
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 130' INT TERM

upstream() {  # port name: a tiny HTTP server that says who answered
  python3 - "$1" "$2" <<'PY' &
import http.server, sys
port, name = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = f"hello from {name}: {self.path}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
  pids+=($!)
}
upstream 19081 v1
upstream 19082 v2
target/debug/weft-proxy run --config "$here/mesh.yaml" \
  --outbound 127.0.0.1:15001 --inbound 127.0.0.1:15006 --admin 127.0.0.1:15000 --app 127.0.0.1:19081 &
pids+=($!)
for _ in $(seq 100); do curl -sf http://127.0.0.1:15000/ready >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do curl -sf -x http://127.0.0.1:15001 http://hello:8080/ >/dev/null 2>&1 && break; sleep 0.1; done

echo
echo "== 10 requests to http://hello:8080/ through the proxy (HTTP_PROXY style): 80% v1, 20% v2"
for _ in $(seq 10); do curl -s -x http://127.0.0.1:15001 http://hello:8080/; done
echo "== /v2/anything always goes to v2"
curl -s -x http://127.0.0.1:15001 http://hello:8080/v2/anything
echo "== an unknown name answers 404 and says why"
curl -s -i -x http://127.0.0.1:15001 http://nowhere/ | grep -Ei '^(HTTP|x-weft-error)'
cat <<MSG

weft-proxy is running. Try:
  curl -x http://127.0.0.1:15001 http://hello:8080/          # as an app with HTTP_PROXY would
  curl -H 'Host: hello' http://127.0.0.1:15001/              # by Host header
  curl http://127.0.0.1:15000/endpoints                      # endpoints, load, EWMA latency
  curl http://127.0.0.1:15000/metrics | grep weft_requests   # Prometheus metrics
  curl http://127.0.0.1:15000/config                         # the config in force
Edit $here/mesh.yaml (e.g. change the weights): it reloads within a second.
Ctrl-C to stop.
MSG
wait
