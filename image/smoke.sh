#!/usr/bin/env bash
# Runs the built image for real with podman: the control plane (files mode,
# CA in a mounted directory) and a sidecar in mesh mode that gets its
# certificate and config from it over TLS, both from the image, as the
# image's user, on a read-only root filesystem. Passes when both answer
# /ready 200 and run as UID 1337. Host network, loopback ports only. Then
# the injected init container as the injector writes it (root, only
# NET_ADMIN and NET_RAW, read-only root with a tmpfs /run) installs its
# IPv4 and IPv6 rules in a network namespace made for it, read back from
# the host. Needs root and `ip` for that part.
# Usage: image/smoke.sh IMAGE
# PODMAN_FLAGS adds podman global flags (e.g. "--runtime runc
# --cgroup-manager cgroupfs" where crun cannot run), RUN_FLAGS run flags
# (e.g. "--ulimit nofile=1024:1024 --ulimit nproc=4096:4096" where raising
# limits is not permitted).
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:?usage: image/smoke.sh IMAGE}
read -r -a pflags <<<"${PODMAN_FLAGS:-}"
read -r -a rflags <<<"${RUN_FLAGS:-}"
pm() { podman "${pflags[@]}" "$@"; }
work=$(mktemp -d)
cp=weft-smoke-cp-$$ px=weft-smoke-proxy-$$ netns=weft-smoke-$$
names=("$cp" "$px")
cleanup() {
  for n in "${names[@]}"; do pm rm -f "$n" >/dev/null 2>&1 || true; done
  ip netns del "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listen=$(free_port) cp_admin=$(free_port) px_admin=$(free_port) outbound=$(free_port) inbound=$(free_port)
mkdir -p "$work/ca" && chmod 0777 "$work/ca"
cp config-examples/quickstart/mesh.yaml "$work/mesh.yaml" && chmod 0644 "$work/mesh.yaml"

run() { # NAME ARGS...: a detached container from the image
  local name=$1
  shift
  pm run -d --name "$name" --network host --read-only "${rflags[@]}" \
    -v "$work/ca:/ca" -v "$work/mesh.yaml:/etc/weft/mesh.yaml:ro" "$image" "$@" >/dev/null
}
wait_ready() { # NAME PORT: /ready 200 within 30 s
  local deadline=$((SECONDS + 30))
  until [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$2/ready")" == 200 ]]; do
    if ((SECONDS > deadline)) || [[ "$(pm inspect -f '{{.State.Running}}' "$1")" != true ]]; then
      echo "smoke: $1 not ready on :$2; its log:" >&2
      pm logs "$1" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}
uid_of() { awk '/^Uid:/ {print $2}' "/proc/$(pm inspect -f '{{.State.Pid}}' "$1")/status"; }

run "$cp" weft-control-plane serve --config /etc/weft/mesh.yaml --ca-dir /ca \
  --listen "127.0.0.1:$listen" --admin "127.0.0.1:$cp_admin"
wait_ready "$cp" "$cp_admin"
token=$(pm run --rm --network none --read-only "${rflags[@]}" -v "$work/ca:/ca:ro" "$image" \
  weft-control-plane token --ca-dir /ca --namespace default --service-account smoke)
run "$px" weft-proxy run --control-plane "https://127.0.0.1:$listen" --control-plane-ca /ca/ca.pem \
  --bootstrap-token "$token" --service-account smoke --proxy-name smoke \
  --admin "127.0.0.1:$px_admin" --outbound "127.0.0.1:$outbound" --inbound "127.0.0.1:$inbound"
wait_ready "$px" "$px_admin"
for c in "$cp" "$px"; do
  uid=$(uid_of "$c")
  [[ "$uid" == 1337 ]] || { echo "smoke: $c runs as UID $uid, not 1337" >&2; exit 1; }
done
curl -s "http://127.0.0.1:$cp_admin/proxies" | grep -q smoke ||
  { echo "smoke: the control plane does not list the sidecar" >&2; exit 1; }
echo "smoke: control plane and sidecar from $image ready as UID 1337 on a read-only root; the sidecar holds a certificate and config from the control plane"

# The init container, as injected (control-plane/src/inject/patch.rs).
ip netns add "$netns"
ip -n "$netns" link set lo up
pm run --rm --network "ns:/run/netns/$netns" --read-only --tmpfs /run --user 0:0 \
  --cap-drop ALL --cap-add NET_ADMIN,NET_RAW "${rflags[@]}" "$image" \
  weft-proxy iptables --proxy-uid 1337 --proxy-gid 1337 --outbound-port 15001 --inbound-port 15006
for t in iptables ip6tables; do
  rules=$(ip netns exec "$netns" "$t" -t nat -S WEFT_OUTPUT)
  grep -q -- "--uid-owner 1337" <<<"$rules" ||
    { echo "smoke: no $t rule exempting UID 1337 in the init container's namespace:" >&2; echo "$rules" >&2; exit 1; }
  ip netns exec "$netns" "$t" -t nat -S WEFT_REDIRECT | grep -q -- "--to-ports 15001" ||
    { echo "smoke: no $t redirect to 15001" >&2; exit 1; }
done
echo "smoke: the init container from $image installed IPv4 and IPv6 interception rules as root with only NET_ADMIN and NET_RAW on a read-only root"
