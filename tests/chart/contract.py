"""Checks that the rendered chart holds what the project's contract names
(names, ports, flags, webhook selection, RBAC from files/rbac.yaml, the
security settings, the CRDs), for the default values and for
tests/chart/values-nondefault.yaml. Renders with $HELM; run from the
repository root. Exit 1 with every failed expectation listed.
"""

import json
import os
import subprocess
import sys

import yaml

CHART = "charts/weft"
FAILED = []


def expect(cond, what):
    if not cond:
        FAILED.append(what)


def render(namespace, *args):
    out = subprocess.run(
        [os.environ["HELM"], "template", "weft", CHART, "--namespace", namespace, "--include-crds", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    objs = {}
    for doc in yaml.safe_load_all(out):
        if doc:
            key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
            expect(key not in objs, f"{key} rendered twice")
            objs[key] = doc
    return objs


def get(objs, kind, name, namespace=None):
    obj = objs.get((kind, namespace, name))
    expect(obj is not None, f"no {kind} {namespace}/{name}")
    return obj or {}


def args_pairs(args):
    """--flag value pairs of a container's args (after the subcommand)."""
    pairs, i = {}, 1
    while i < len(args):
        if args[i] == "--kubernetes":
            pairs[args[i]] = True
            i += 1
        else:
            pairs[args[i]] = args[i + 1] if i + 1 < len(args) else None
            i += 2
    return pairs


def check_common(objs, ns, values):
    name = "weft-control-plane"
    selector = {"app.kubernetes.io/name": name}
    sa = get(objs, "ServiceAccount", name, ns)
    svc = get(objs, "Service", name, ns)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc.get("spec", {}).get("ports", [])}
    expect(
        ports == {"grpc-config": (15012, 15012), "http-admin": (15014, 15014), "https-webhook": (15017, 15017)},
        f"Service ports {ports}",
    )
    expect(svc.get("spec", {}).get("selector") == selector, "Service selector")

    # RBAC: exactly files/rbac.yaml, bound to the ServiceAccount.
    with open(f"{CHART}/files/rbac.yaml") as f:
        rbac = yaml.safe_load(f)
    expect(get(objs, "ClusterRole", name).get("rules") == rbac["cluster"], "ClusterRole rules = files/rbac.yaml cluster")
    expect(get(objs, "Role", name, ns).get("rules") == rbac["namespace"], "Role rules = files/rbac.yaml namespace")
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    for kind, role_kind, at in (("ClusterRoleBinding", "ClusterRole", None), ("RoleBinding", "Role", ns)):
        b = get(objs, kind, name, at)
        expect(b.get("subjects") == subject, f"{kind} subjects")
        expect(b.get("roleRef", {}).get("kind") == role_kind and b["roleRef"].get("name") == name, f"{kind} roleRef")
    expect(sa.get("metadata", {}).get("name") == name, "ServiceAccount")

    # The Deployment.
    d = get(objs, "Deployment", name, ns)
    spec = d.get("spec", {})
    cp = values["controlPlane"]
    expect(spec.get("replicas") == cp["replicas"], "replicas")
    expect(spec.get("selector", {}).get("matchLabels") == selector, "Deployment selector")
    pod = spec.get("template", {})
    labels = pod.get("metadata", {}).get("labels", {})
    expect(labels.get("app.kubernetes.io/name") == name, "pod label app.kubernetes.io/name")
    expect(labels.get("weft.dev/inject") == "disabled", "the control plane's Pods opt out of injection")
    podspec = pod.get("spec", {})
    expect(podspec.get("serviceAccountName") == name, "serviceAccountName")
    psc = podspec.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True and psc.get("seccompProfile") == {"type": "RuntimeDefault"}, "pod securityContext")
    spread = podspec.get("topologySpreadConstraints", [])
    expect(
        len(spread) == 1
        and spread[0]["topologyKey"] == cp["topologySpread"]["topologyKey"]
        and spread[0]["labelSelector"]["matchLabels"] == selector,
        f"topologySpreadConstraints {spread}",
    )
    (c,) = podspec.get("containers", [{}])
    expect(c.get("command") == ["/usr/local/bin/weft-control-plane"], "command")
    args = c.get("args", [])
    expect(args[:1] == ["serve"], "serve subcommand")
    flags = args_pairs(args[: len(args) - len(cp["extraArgs"])])
    image = f"{values['image']['repository']}:{values['image']['tag'] or '0.1.0'}"
    expect(c.get("image") == image, f"image {c.get('image')} != {image}")
    want = {
        "--kubernetes": True,
        "--listen": "0.0.0.0:15012",
        "--admin": "0.0.0.0:15014",
        "--webhook": "0.0.0.0:15017",
        "--trust-domain": cp["trustDomain"],
        "--cert-ttl": cp["certTTL"],
        "--status-lease": cp["statusLease"],
        "--log-format": cp["logFormat"],
        "--log-level": cp["logLevel"],
        "--proxy-image": values["injector"]["proxy"]["image"] or image,
        "--proxy-cpu": values["injector"]["proxy"]["cpu"],
        "--proxy-memory": values["injector"]["proxy"]["memory"],
    }
    for flag, key in (("--proxy-cpu-limit", "cpuLimit"), ("--proxy-memory-limit", "memoryLimit")):
        if values["injector"]["proxy"][key]:
            want[flag] = values["injector"]["proxy"][key]
    expect(flags == want, f"args {flags} != {want}")
    expect(args[len(args) - len(cp["extraArgs"]) :] == cp["extraArgs"], "extraArgs last")
    env = {e["name"]: e for e in c.get("env", [])}
    expect(env.get("POD_NAME", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.name"}}, "env POD_NAME")
    expect(
        env.get("WEFT_NAMESPACE", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "env WEFT_NAMESPACE",
    )
    cports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    expect(cports == {"grpc-config": 15012, "http-admin": 15014, "https-webhook": 15017}, f"container ports {cports}")
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        expect(c.get(probe, {}).get("httpGet") == {"path": path, "port": "http-admin"}, f"{probe} on {path}")
    sc = c.get("securityContext", {})
    expect(
        sc.get("runAsNonRoot") is True
        and sc.get("readOnlyRootFilesystem") is True
        and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities") == {"drop": ["ALL"]}
        and sc.get("seccompProfile") == {"type": "RuntimeDefault"},
        f"container securityContext {sc}",
    )
    expect(c.get("resources") == cp["resources"], "resources")

    pdb = get(objs, "PodDisruptionBudget", name, ns)
    expect(pdb.get("spec") == {"minAvailable": cp["podDisruptionBudget"]["minAvailable"], "selector": {"matchLabels": selector}}, "PDB")

    # The webhook: two webhooks, the contract's settings, no caBundle.
    wh = get(objs, "MutatingWebhookConfiguration", "weft-sidecar-injector").get("webhooks", [])
    expect([w["name"] for w in wh] == ["namespace.inject.weft.dev", "pod.inject.weft.dev"], "webhook names")
    never = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", ns]}
    selection = {
        "namespace.inject.weft.dev": (
            [{"key": "weft.dev/inject", "operator": "In", "values": ["enabled"]}, never],
            [{"key": "weft.dev/inject", "operator": "NotIn", "values": ["disabled"]}],
        ),
        "pod.inject.weft.dev": (
            [{"key": "weft.dev/inject", "operator": "NotIn", "values": ["enabled", "disabled"]}, never],
            [{"key": "weft.dev/inject", "operator": "In", "values": ["enabled"]}],
        ),
    }
    for w in wh:
        expect(
            w["clientConfig"] == {"service": {"namespace": ns, "name": name, "port": 15017, "path": "/inject"}},
            f"{w['name']} clientConfig (and no caBundle)",
        )
        expect(
            w["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"}],
            f"{w['name']} rules",
        )
        expect(w["admissionReviewVersions"] == ["v1"] and w["sideEffects"] == "None", f"{w['name']} review/sideEffects")
        expect(w["reinvocationPolicy"] == "Never", f"{w['name']} reinvocationPolicy")
        expect(w["failurePolicy"] == values["injector"]["webhook"]["failurePolicy"], f"{w['name']} failurePolicy")
        expect(w["timeoutSeconds"] == values["injector"]["webhook"]["timeoutSeconds"], f"{w['name']} timeoutSeconds")
        ns_sel, obj_sel = selection.get(w["name"], (None, None))
        expect(w["namespaceSelector"] == {"matchExpressions": ns_sel}, f"{w['name']} namespaceSelector")
        expect(w["objectSelector"] == {"matchExpressions": obj_sel}, f"{w['name']} objectSelector")

    # Weft's CRDs (crds/), the Gateway API CRDs (unchanged but for keep).
    crds = {k[2]: o for k, o in objs.items() if k[0] == "CustomResourceDefinition"}
    for plural in ("backends", "trafficpolicies", "authorizationpolicies", "meshconfigs"):
        expect(f"{plural}.weft.dev" in crds, f"CRD {plural}.weft.dev")
    for plural in ("httproutes", "grpcroutes", "referencegrants"):
        crd = crds.get(f"{plural}.gateway.networking.k8s.io")
        if not values["gatewayAPI"]["installCRDs"]:
            expect(crd is None, f"{plural} CRD rendered with gatewayAPI.installCRDs=false")
            continue
        expect(crd is not None, f"CRD {plural}.gateway.networking.k8s.io")
        if crd:
            with open(f"{CHART}/files/gateway-api/gateway.networking.k8s.io_{plural}.yaml") as f:
                upstream = yaml.safe_load(f)
            ann = dict(crd["metadata"]["annotations"])
            expect(ann.pop("helm.sh/resource-policy", None) == "keep", f"{plural} CRD keep annotation")
            expect(ann == upstream["metadata"]["annotations"], f"{plural} CRD annotations")
            expect(crd["spec"] == upstream["spec"], f"{plural} CRD spec differs from upstream")

    # The dashboard, from the JSON file.
    dash = values["dashboard"]
    cm = get(objs, "ConfigMap", "weft-dashboards", dash["namespace"] or ns)
    expect(cm.get("metadata", {}).get("labels", {}).get("grafana_dashboard") == "1", "dashboard label")
    with open(f"{CHART}/dashboards/weft-golden-signals.json") as f:
        expect(json.loads(cm.get("data", {}).get("weft-golden-signals.json", "null")) == json.load(f), "dashboard JSON")

    sm = objs.get(("ServiceMonitor", ns, name))
    expect((sm is not None) == values["metrics"]["serviceMonitor"]["enabled"], "ServiceMonitor present iff enabled")
    if sm:
        expect(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "ServiceMonitor selects the Service")
        expect(sm["spec"]["endpoints"][0]["port"] == "http-admin" and sm["spec"]["endpoints"][0]["path"] == "/metrics", "ServiceMonitor endpoint")


def main():
    with open(f"{CHART}/values.yaml") as f:
        defaults = yaml.safe_load(f)
    check_common(render("weft-system"), "weft-system", defaults)
    cases = 1

    with open("tests/chart/values-nondefault.yaml") as f:
        other = yaml.safe_load(f)
    merged = json.loads(json.dumps(defaults))
    for k, v in other.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, dict) and isinstance(merged[k].get(k2), dict):
                    merged[k][k2].update(v2)
                else:
                    merged[k][k2] = v2
        else:
            merged[k] = v
    objs = render("mesh", "-f", "tests/chart/values-nondefault.yaml")
    check_common(objs, "mesh", merged)
    cases += 1

    no_pdb = render("weft-system", "--set", "controlPlane.podDisruptionBudget.enabled=false", "--set", "dashboard.enabled=false")
    expect(not any(k[0] in ("PodDisruptionBudget", "ConfigMap") for k in no_pdb), "PDB/dashboard off")
    cases += 1

    if FAILED:
        for f in FAILED:
            print(f"FAIL {f}")
        print(f"{len(FAILED)} chart expectations failed")
        return 1
    print(f"chart contract: {cases} renderings hold the contract's names, ports, flags, webhook, RBAC and CRDs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
