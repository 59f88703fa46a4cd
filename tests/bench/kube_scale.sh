#!/usr/bin/env bash
# The Kubernetes control plane at scale (see tests/src/bin/kube_scale.rs):
# 1,000 Services × 10 endpoints in the fake API server, 100 sidecars.
#   bash tests/bench/kube_scale.sh
#   SERVICES=200 PROXIES=20 CHANGES=5 bash tests/bench/kube_scale.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p weft-proxy -p weft-control-plane
cargo build --release -q -p weft-tests --bin kube_scale
exec target/release/kube_scale
