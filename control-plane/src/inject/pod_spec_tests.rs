//! The injected Pod as the kubelet will read it, field by field (no
//! kubelet runs in the tests): the patch of two golden inputs applied,
//! then what native sidecars, probes, security and the token need.

use super::golden_tests::{apply, decoded_answer, fixtures};
use serde_json::Value;

fn injected(case: &str) -> Value {
    let path = fixtures().join(format!("inject/{case}.review.json"));
    let review: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let answer = decoded_answer(&review);
    apply(&review["request"]["object"], &answer["patch"]).expect("the patch applies")
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn the_kubelet_gets_a_native_sidecar_that_starts_before_the_app_and_its_own_init_containers() {
    let pod = injected("own-init-containers");
    let spec = &pod["spec"];
    // Init containers run in order: interception, then the proxy (a
    // native sidecar, started and ready before the next), then theirs.
    assert_eq!(
        names(&spec["initContainers"]),
        ["weft-init", "weft-proxy", "migrate"]
    );
    assert_eq!(names(&spec["containers"]), ["orders"]);
    let init = &spec["initContainers"][0];
    let proxy = &spec["initContainers"][1];
    // restartPolicy Always only on the sidecar: weft-init must run to
    // completion, and the user's containers are untouched.
    assert_eq!(proxy["restartPolicy"], "Always");
    for c in [init, &spec["initContainers"][2], &spec["containers"][0]] {
        assert!(c.get("restartPolicy").is_none(), "{}", c["name"]);
    }
    // The app starts only after the startup probe passes.
    let startup = &proxy["startupProbe"];
    assert_eq!(startup["httpGet"]["port"], 15020);
    assert_eq!(startup["httpGet"]["path"], "/ready");
    assert_eq!(startup["periodSeconds"], 1);
    assert_eq!(startup["failureThreshold"], 600);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15020);
    assert_eq!(proxy["ports"][0]["containerPort"], 15020);
    assert_eq!(proxy["ports"][0]["name"], "weft-probes");
    // Security: the proxy as 1337, non-root, nothing extra; the init
    // container as root with NET_ADMIN and NET_RAW only.
    let sc = &proxy["securityContext"];
    assert_eq!(
        (&sc["runAsUser"], &sc["runAsGroup"]),
        (&1337.into(), &1337.into())
    );
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    let sc = &init["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // A read-only root, but iptables-legacy writes /run/xtables.lock: an
    // in-memory volume there.
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(init["volumeMounts"][0]["name"], "weft-run");
    assert_eq!(init["volumeMounts"][0]["mountPath"], "/run");
    assert_eq!(spec["volumes"][2]["emptyDir"]["medium"], "Memory");
    assert_eq!(init["command"], serde_json::json!(["weft-proxy"]));
    assert_eq!(init["args"][0], "iptables");
    assert_eq!(proxy["args"], serde_json::json!(["run"]));
    // The token: the volume, projected with audience weft, mounted
    // read-only where WEFT_TOKEN_FILE points.
    assert_eq!(
        names(&spec["volumes"]),
        ["config", "weft-token", "weft-run"]
    );
    let token = &spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "weft");
    assert_eq!(token["path"], "token");
    let mount = &proxy["volumeMounts"][0];
    assert_eq!(mount["name"], "weft-token");
    assert_eq!(mount["readOnly"], true);
    let file = format!("{}/token", mount["mountPath"].as_str().unwrap());
    assert_eq!(
        env(proxy, "WEFT_TOKEN_FILE").unwrap()["value"],
        file.as_str()
    );
    // The environment the proxy reads (every flag reads WEFT_<FLAG>).
    let env_names: Vec<&str> = names(&proxy["env"]);
    assert_eq!(
        env_names,
        [
            "WEFT_CONTROL_PLANE",
            "WEFT_CONTROL_PLANE_CA_PEM",
            "WEFT_TOKEN_FILE",
            "WEFT_TRUST_DOMAIN",
            "WEFT_NAMESPACE",
            "WEFT_PROXY_NAME",
            "WEFT_SERVICE_ACCOUNT",
            "WEFT_SERVICE",
            "WEFT_PROBES",
            "WEFT_OUTBOUND",
            "WEFT_INBOUND",
        ]
    );
    for (name, path) in [
        ("WEFT_NAMESPACE", "metadata.namespace"),
        ("WEFT_PROXY_NAME", "metadata.name"),
        ("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ] {
        assert_eq!(
            env(proxy, name).unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
            path
        );
    }
    assert!(env(proxy, "WEFT_CONTROL_PLANE_CA_PEM").unwrap()["value"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn the_apps_http_probes_go_to_the_probe_listener_and_keep_their_timing() {
    let pod = injected("labelled-namespace-http-probes");
    let web = &pod["spec"]["containers"][0];
    let readiness = &web["readinessProbe"];
    assert_eq!(readiness["httpGet"]["port"], 15020);
    assert_eq!(readiness["httpGet"]["path"], "/app-health/web/readyz");
    assert_eq!(readiness["httpGet"]["scheme"], "HTTP");
    assert!(readiness["httpGet"].get("httpHeaders").is_none());
    assert_eq!(
        (&readiness["timeoutSeconds"], &readiness["periodSeconds"]),
        (&2.into(), &5.into())
    );
    assert_eq!(
        web["livenessProbe"]["httpGet"]["path"],
        "/app-health/web/livez"
    );
    assert_eq!(web["livenessProbe"]["initialDelaySeconds"], 10);
    // A TCP startup probe and a gRPC liveness probe are left alone.
    assert_eq!(web["startupProbe"]["tcpSocket"]["port"], 8080);
    assert_eq!(
        pod["spec"]["containers"][1]["livenessProbe"]["grpc"]["port"],
        9102
    );
    // Every rewritten path is in WEFT_APP_PROBES with where it was going.
    let proxy = &pod["spec"]["initContainers"][1];
    let probes: Value = serde_json::from_str(
        env(proxy, "WEFT_APP_PROBES").unwrap()["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let readyz = &probes["/app-health/web/readyz"];
    assert_eq!(readyz["port"], 8080, "the named port http resolved");
    assert_eq!(readyz["path"], "/healthz");
    assert_eq!(readyz["headers"][0]["name"], "X-A");
    assert_eq!(readyz["timeoutSeconds"], 2);
    assert_eq!(probes["/app-health/web/livez"]["scheme"], "HTTPS");
    assert_eq!(probes["/app-health/metrics/readyz"]["port"], 9102);
    let record: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["weft.dev/injected"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let recorded: Vec<&str> = record["rewrittenProbes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let mut listed: Vec<&str> = probes
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    listed.sort();
    let mut sorted = recorded.clone();
    sorted.sort();
    assert_eq!(sorted, listed);
}
