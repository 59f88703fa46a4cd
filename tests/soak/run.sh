#!/usr/bin/env bash
# Soak test: a client calls an app through two meshed sidecars for
# SOAK_MINUTES at SOAK_RPS while the mesh is disturbed on a fixed beat:
#
#   load (soak load) -> sidecar "client" (outbound) -> mTLS -> sidecar "app-1"
#                       or "app-2" (inbound, Strict) -> app instance 1 or 2
#
#   every  5 s  the config changes (weft-control-plane watches the file and
#               pushes it): the route's x-soak-generation header, the
#               endpoint weights and an authorization rule;
#   every 10 s  one app instance is SIGKILLed (the two take turns) and
#               started again SOAK_DOWN_SECONDS later;
#   every 60 s  each sidecar's certificate is renewed (certificateLifetime
#               2m, rotationPercent [50, 50]).
#
# The TrafficPolicy retries connect failures, resets and gateway errors,
# POST included (nonIdempotent), so no request should fail. Prints a
# per-minute Markdown report (also written to SOAK_OUT) ending in a
# verdict; exits 0 on PASS. See docs/SOAK.md.
#
# Knobs: SOAK_MINUTES [30], SOAK_RPS [2000], SOAK_OUT
# [/tmp/weft-soak/report.md], SOAK_CONNS [64], SOAK_POST_PERCENT [50],
# SOAK_BODY_BYTES [512], SOAK_DOWN_SECONDS [2] (1..4), SOAK_APP_DELAY_MS [5]
# (each app answers that long after a request, so a kill finds requests in
# flight), SOAK_EJECTION [short] (ejections of 3-5 s, shorter than the flap
# period; "default": the proxy's 30 s and up, see docs/SOAK.md), SOAK_BUILD
# [1] (0: use the release binaries already built), CARGO_TARGET_DIR.
# The growth checks: SOAK_WARMUP_MINUTES [2] (left out), SOAK_RSS_PCT [10]
# and SOAK_RSS_MIB [2] (RSS may grow by the larger), SOAK_FD_SLACK [20],
# SOAK_TASK_PCT [20] (tasks may grow by that % or by 20, the larger).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

minutes=${SOAK_MINUTES:-30}
rps=${SOAK_RPS:-2000}
out=${SOAK_OUT:-/tmp/weft-soak/report.md}
conns=${SOAK_CONNS:-64}
post_percent=${SOAK_POST_PERCENT:-50}
body_bytes=${SOAK_BODY_BYTES:-512}
down=${SOAK_DOWN_SECONDS:-2}
app_delay=${SOAK_APP_DELAY_MS:-5}
ejection=${SOAK_EJECTION:-short}
if ! ((down >= 1 && down <= 4)); then
  echo "SOAK_DOWN_SECONDS must be 1..4 (the ejection times below assume it)" >&2
  exit 2
fi
case $ejection in
  short)
    outlier="  outlierDetection: {consecutiveFailures: 5, interval: 10s, baseEjectionTime: 3s, maxEjectionTime: 5s, maxEjectionPercent: 50}" ;;
  default) outlier="" ;;
  *) echo "SOAK_EJECTION must be short or default" >&2; exit 2 ;;
esac

# control plane: listen, admin; per sidecar: admin, outbound, inbound; apps.
cp_port=17012 cp_admin=17014
client_admin=17100 client_out=17101 client_in=17106
app_admin=(0 17200 17300) app_out=(0 17201 17301) app_in=(0 17206 17306)
app_port=(0 17280 17380)
for port in $cp_port $cp_admin $client_admin $client_out $client_in \
  "${app_admin[@]:1}" "${app_out[@]:1}" "${app_in[@]:1}" "${app_port[@]:1}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port 127.0.0.1:$port is already in use; stop whatever listens there first" >&2
    exit 1
  fi
done

target=${CARGO_TARGET_DIR:-$root/target}
[[ $target == /* ]] || target=$root/$target
if [[ ${SOAK_BUILD:-1} != 0 ]]; then
  echo "building weft-proxy, weft-control-plane and the soak generator (release)..." >&2
  cargo build -q --release -p weft-proxy -p weft-control-plane
  cargo build -q --release -p weft-tests --bin soak
fi
cp_bin=$target/release/weft-control-plane
proxy_bin=$target/release/weft-proxy
soak_bin=$target/release/soak

work=$(mktemp -d /tmp/weft-soak.XXXXXX)
mkdir -p "$(dirname "$out")"
pids=()          # control plane, sidecars, load generator
app_pid=(0 0 0)  # the app instances (they change as they are restarted)
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  for p in "${app_pid[@]:1}" "${pids[@]}"; do
    if ((p > 0)); then kill "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  echo "stopped; logs are in $work" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
event() { echo "$(now_ms) $*" >>"$work/events"; }

# The mesh's resources; generation N changes the route's header, the
# endpoint weights and an authorization rule, so every write is a new config
# for every sidecar.
write_config() {
  local gen=$1 w1=1 w2=1
  if ((gen % 2)); then w1=2; fi
  cat >"$work/mesh.yaml.next" <<YAML
apiVersion: weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh, namespace: weft-system}
spec:
  defaultInboundMode: Strict
  certificateLifetime: 2m
  rotationPercent: [50, 50]
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: app}
spec:
  endpoints:
    - {address: "127.0.0.1:${app_in[1]}", weight: $w1, identity: "spiffe://weft.local/ns/default/sa/app"}
    - {address: "127.0.0.1:${app_in[2]}", weight: $w2, identity: "spiffe://weft.local/ns/default/sa/app"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{kind: Service, name: app}]
  hostnames: [app]
  rules:
    - backendRefs: [{name: app}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-soak-generation, value: "$gen"}]
      timeouts: {request: 5s}
---
# What the soak promises to hide: a refused connection (the app is down),
# a reset or a 502 from the app's sidecar (the app died mid-request), for
# every method: POST needs nonIdempotent to be sent again after the
# upstream may have seen it. A retry goes to the other endpoint only if it
# is in the balancer, so an ejection ends (by a probe) before the other
# instance is killed: at most 5 s, and the app is back after SOAK_DOWN_SECONDS.
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: app}
spec:
  targetRef: {kind: Backend, name: app}
  connectTimeout: 1s
  retry:
    attempts: 2
    retryOn: [connect-failure, refused-stream, reset, gateway-error]
    nonIdempotent: true
$outlier
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: app-callers}
spec:
  targetRef: {kind: Service, name: app}
  action: Allow
  rules:
    - from:
        identities: ["spiffe://weft.local/ns/default/sa/client"]
    # Changes with every write, so the app sidecars get a new config too.
    - from:
        identities: ["spiffe://weft.local/ns/default/sa/auditor-$gen"]
      to:
        methods: [GET]
YAML
  mv "$work/mesh.yaml.next" "$work/mesh.yaml"
}

start_app() {  # instance number
  "$soak_bin" app "127.0.0.1:${app_port[$1]}" "app-$1" "$app_delay" >>"$work/app-$1.log" 2>&1 &
  app_pid[$1]=$!
}

sidecar() {  # name service admin outbound inbound app-port
  local token
  token=$("$cp_bin" token --ca-dir "$work/ca" --namespace default --service-account "$2")
  "$proxy_bin" run --control-plane "https://127.0.0.1:$cp_port" --control-plane-ca "$work/ca/ca.pem" \
    --bootstrap-token "$token" --service "$2" --service-account "$2" --proxy-name "$1" \
    --admin "127.0.0.1:$3" --outbound "127.0.0.1:$4" --inbound "127.0.0.1:$5" \
    --app "127.0.0.1:$6" >"$work/$1.sidecar.log" 2>&1 &
  pids+=($!)
}

write_config 0
"$cp_bin" serve --config "$work/mesh.yaml" --ca-dir "$work/ca" --cert-ttl 2m \
  --listen "127.0.0.1:$cp_port" --admin "127.0.0.1:$cp_admin" >"$work/control-plane.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$cp_admin/ready" >/dev/null 2>&1 && break; sleep 0.1; done

start_app 1
start_app 2
sidecar client client $client_admin $client_out $client_in 17180  # no app of its own
client_pid=${pids[-1]}
sidecar app-1 app "${app_admin[1]}" "${app_out[1]}" "${app_in[1]}" "${app_port[1]}"
app1_sidecar=${pids[-1]}
sidecar app-2 app "${app_admin[2]}" "${app_out[2]}" "${app_in[2]}" "${app_port[2]}"
app2_sidecar=${pids[-1]}
for a in $client_admin "${app_admin[@]:1}"; do
  ready=0
  for _ in $(seq 150); do
    if curl -sf "http://127.0.0.1:$a/ready" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
  done
  if ((!ready)); then
    echo "the sidecar with admin port $a is not ready; see $work/*.sidecar.log" >&2
    exit 1
  fi
done
# One GET and one POST through the mesh before the load starts.
curl -sf -H 'host: app' "http://127.0.0.1:$client_out/headers" >"$work/first-get.json" || {
  echo "GET through the mesh failed; see $work" >&2
  exit 1
}
grep -q 'spiffe://weft.local/ns/default/sa/client' "$work/first-get.json" || {
  echo "the app did not see the caller's mesh identity: $(cat "$work/first-get.json")" >&2
  exit 1
}
[[ $(curl -sf -H 'host: app' --data-binary 'soak' "http://127.0.0.1:$client_out/upload") == 4 ]] || {
  echo "POST through the mesh failed; see $work" >&2
  exit 1
}

echo "soak: ${minutes} min at ${rps} req/s; logs in $work; report to $out" >&2
: >"$work/events"
"$soak_bin" load --target "127.0.0.1:$client_out" --host app --rps "$rps" --minutes "$minutes" \
  --conns "$conns" --post-percent "$post_percent" --body "$body_bytes" \
  --identity spiffe://weft.local/ns/default/sa/client \
  --sidecar "client=$client_pid@127.0.0.1:$client_admin" \
  --sidecar "app-1=$app1_sidecar@127.0.0.1:${app_admin[1]}" \
  --sidecar "app-2=$app2_sidecar@127.0.0.1:${app_admin[2]}" \
  --events "$work/events" --report "$out" --jsonl "$work/minutes.jsonl" \
  --failures "$work/failures.log" --warmup "${SOAK_WARMUP_MINUTES:-2}" \
  --rss-pct "${SOAK_RSS_PCT:-10}" --rss-mib "${SOAK_RSS_MIB:-2}" \
  --fd-slack "${SOAK_FD_SLACK:-20}" --task-pct "${SOAK_TASK_PCT:-20}" \
  --note "Started $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) CPUs (load average $(cut -d' ' -f1-3 /proc/loadavg)); weft $(git rev-parse --short HEAD 2>/dev/null || echo '?')." \
  --note "Config written every 5 s; app-1 and app-2 SIGKILLed in turn every 10 s, back after ${down} s; certificates renewed every 60 s; app answers after ${app_delay} ms; ejection: ${ejection}." &
gen=$!
pids+=("$gen")

# The beat: one tick a second on an absolute schedule (no drift).
start=$(now_ms)
tick=0 victim=2 gen_no=0
while kill -0 "$gen" 2>/dev/null; do
  tick=$((tick + 1))
  wait_ms=$((start + 1000 * tick - $(now_ms)))
  if ((wait_ms > 0)); then sleep "$((wait_ms / 1000)).$(printf %03d $((wait_ms % 1000)))"; fi
  kill -0 "$gen" 2>/dev/null || break
  if ((tick % 5 == 0)); then
    gen_no=$((gen_no + 1))
    write_config "$gen_no"
    event config "$gen_no"
  fi
  if ((tick % 10 == 0)); then
    victim=$((3 - victim))
    kill -KILL "${app_pid[$victim]}" 2>/dev/null || true
    wait "${app_pid[$victim]}" 2>/dev/null || true
    app_pid[victim]=0
    event kill "app-$victim"
  fi
  if ((tick % 10 == down)) && ((app_pid[victim] == 0)); then
    start_app "$victim"
    event start "app-$victim"
  fi
done
rc=0
wait "$gen" || rc=$?
if [[ -s $work/failures.log ]]; then
  echo "failed requests (the first 500, one a line): $work/failures.log" >&2
fi
exit "$rc"
