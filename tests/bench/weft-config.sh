# weft-config.sh - sourced by the benchmark scripts.
# write_weft_config FILE UPSTREAM: the benchmark's weft config, one route from the clients'
# Host (127.0.0.1, any port: weft strips the port when looking up the route) to UPSTREAM.
write_weft_config() {
  cat >"$1" <<EOF2
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: upstream}
spec:
  protocol: http
  endpoints: [{address: "$2"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench}
spec:
  parentRefs: [{name: bench}]
  hostnames: ["127.0.0.1"]
  rules:
    - backendRefs: [{name: upstream}]
EOF2
}
