#!/usr/bin/env bash
# Runs the mesh demo for a while with its sidecars exporting traces over OTLP/gRPC to a local
# receiver (tests/peers/otlp_receiver.py: the OpenTelemetry protobuf definitions + grpcio), then
# draws one trace (one with a retry, when there is one) as a span tree:
#   bash config-examples/mesh-demo/trace.sh [OUT.svg]      (default: docs/demo-trace.svg)
# Needs what run.sh needs plus the Python packages grpcio and opentelemetry-proto.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/docs/demo-trace.svg}
spans=$(mktemp /tmp/weft-demo-spans.XXXXXX)
python3 "$root/tests/peers/otlp_receiver.py" server >"$spans" &
rx=$!
trap 'kill $rx 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s $spans ]] && break; sleep 0.1; done
read -r _ grpc_port _ <"$spans"
echo "OTLP receiver on 127.0.0.1:$grpc_port (gRPC); spans go to $spans"
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$grpc_port OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
  OTEL_BSP_SCHEDULE_DELAY=200 DEMO_SECONDS=${DEMO_SECONDS:-8} bash "$here/run.sh" || true
sleep 1
python3 "$here/render_trace.py" "$spans" "$out"
