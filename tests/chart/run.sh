#!/usr/bin/env bash
# The chart's offline checks: helm lint --strict, helm template of the
# default and non-default values validated against every Kubernetes 1.29–1.34
# schema kubernetes-validate ships (strict), the contract's names in the
# rendered objects, the supported Kubernetes range, and values the schema
# (or a template's guard) must refuse. Tools come from tests/chart/tools.sh
# (cached in .tools/). Ends with "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/chart/tools.sh
chart=charts/weft
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
# run NAME CMD...: the command must succeed; its output is shown on failure.
run() {
  local name=$1
  shift
  if "$@" >"$out/log" 2>&1; then ok "$name"; else bad "$name"; sed 's/^/     /' "$out/log"; fi
}
# refuse NAME WANT CMD...: the command must fail, saying WANT.
refuse() {
  local name=$1 want=$2
  shift 2
  if "$@" >"$out/log" 2>&1; then
    bad "$name: accepted"
  elif grep -qF -- "$want" "$out/log"; then
    ok "$name: $(grep -F -m1 -- "$want" "$out/log" | sed 's/^[- ]*//')"
  else
    bad "$name: refused without saying \"$want\""
    sed 's/^/     /' "$out/log"
  fi
}

workspace=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
app=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' $chart/Chart.yaml)
if [[ -n "$workspace" && "$app" == "$workspace" ]]; then ok "Chart appVersion $app = workspace version"; else bad "Chart appVersion '$app' != workspace version '$workspace'"; fi

run "helm lint --strict (defaults)" "$HELM" lint --strict $chart
run "helm lint --strict (ServiceMonitor on, Gateway API CRDs off)" \
  "$HELM" lint --strict $chart --set metrics.serviceMonitor.enabled=true --set gatewayAPI.installCRDs=false
run "helm lint --strict (values-nondefault.yaml)" "$HELM" lint --strict $chart -f tests/chart/values-nondefault.yaml

# Render; the chart's CRDs (crds/) too, so that they are validated.
render() { "$HELM" template weft $chart --include-crds "${@:2}" >"$out/$1.yaml"; }
run "helm template (defaults)" render default -n weft-system
run "helm template (values-nondefault.yaml, namespace mesh)" render nondefault -n mesh -f tests/chart/values-nondefault.yaml

validate() { "$(dirname "$KUBERNETES_VALIDATE")/python" tests/chart/validate.py --from 1.29 --to 1.34 "$@"; }
# The validator refuses what the API server would (it can fail).
run "kubernetes-validate refuses broken objects" validate --self-test "$out/default.yaml"
# Every object against every version; the ServiceMonitor is a custom
# resource with no schema here: listed as not validated, not passed.
for f in default nondefault; do
  if validate --custom monitoring.coreos.com/v1/ServiceMonitor "$out/$f.yaml" >"$out/log" 2>&1; then
    ok "$f: $(tail -n1 "$out/log")"
    grep '^NOT VALIDATED' "$out/log" | sed 's/^/     /' || true
  else
    bad "$f: schema validation"
    sed 's/^/     /' "$out/log"
  fi
done

run "contract names in the rendered chart" env HELM="$HELM" "$(dirname "$KUBERNETES_VALIDATE")/python" tests/chart/contract.py

# Supported Kubernetes: 1.30 to 1.36.
for v in 1.30.0 1.36.9; do
  run "renders for Kubernetes $v" render "k$v" -n weft-system --kube-version $v
done
for v in 1.29.9 1.37.0; do
  refuse "Kubernetes $v refused" "chart requires kubeVersion" "$HELM" template weft $chart -n weft-system --kube-version $v
done

# Bad values: each file says on its first line what the refusal must say.
for f in tests/chart/bad-values/*.yaml; do
  want=$(sed -n '1s/^# expect: //p' "$f")
  refuse "bad values $(basename "$f")" "$want" "$HELM" template weft $chart -n weft-system -f "$f"
done
refuse "helm lint --strict refuses bad values too" "additional properties" \
  "$HELM" lint --strict $chart -f tests/chart/bad-values/unknown-key.yaml

echo "chart: $passed passed, $failed failed"
((failed == 0))
