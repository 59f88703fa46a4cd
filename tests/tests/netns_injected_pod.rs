//! The injector and the proxy agree: a Pod created through the fake API
//! server in a namespace labelled `weft.dev/inject=enabled` comes back
//! injected by the real `weft-control-plane serve --kubernetes --webhook`
//! (held to the chart's RBAC), and a stand-in kubelet
//! (`weft_tests::kubelet`) runs that stored Pod in a network namespace as
//! it is written: `weft-init` with its own args to completion as root with
//! only NET_ADMIN and NET_RAW, the `weft-proxy` native sidecar with its
//! own args, env (fieldRefs resolved from the Pod, the control plane's CA
//! as PEM text, `WEFT_INBOUND_MODE=strict` from the annotation), projected
//! token mount and securityContext (uid 1337), its startup probe passing
//! before the app starts (a Python server under uid 1000 standing in for
//! the app image). The kubelet then calls the app's rewritten liveness
//! (named port) and readiness (with a header) probes as stored and gets the
//! app's own answers; plaintext to the app's port from outside is refused;
//! the app's request to a Service's ClusterIP goes out through the sidecar.
//!
//! The control plane's address in the sidecar's env is its Service name;
//! the Pod's `/etc/hosts` resolves it (standing in for cluster DNS) to the
//! Pod's loopback, where a relay reaches the control plane on this host.
//!
//! Needs root, `ip`, `iptables`, `ip6tables`, `python3` and `setpriv`
//! (skips without them, fails under CI), and the built `weft-proxy` and
//! `weft-control-plane`.

use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;
use weft_tests::inject_cluster::{
    ca_root, create_pod, injector_cluster, injector_control_plane, wait_bundles,
};
use weft_tests::kube_cluster::{control_plane_rbac, endpoint_slice};
use weft_tests::kubelet::Kubelet;
use weft_tests::netns::{sibling_binary, skip};
use weft_tests::pod_net::{probe_app_py, PodNet};
use weft_tests::{eventually, get};

const TEST: &str = "netns injected pod test";
const IMAGE: &str = "weft.test/weft:e2e";
const LIMIT: Duration = Duration::from_secs(20);
/// The app's uid: not the proxy's.
const APP_UID: u32 = 1000;

/// The Pod as a Deployment would create it: liveness on a named port,
/// readiness with a header, Strict inbound by annotation.
fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reviews-0", "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "reviews"},
            "annotations": {"weft.dev/inbound-mode": "strict"}},
        "spec": {"serviceAccountName": "reviews", "containers": [{
            "name": "reviews", "image": "example.com/reviews:1",
            "ports": [{"name": "http", "containerPort": 9080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                              "periodSeconds": 10},
            "readinessProbe": {"httpGet": {"path": "/broken", "port": 9080,
                                           "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]},
                               "timeoutSeconds": 2}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_runs_the_injected_pod_as_stored_and_its_probes_get_the_apps_answers() {
    let Some(mut net) = PodNet::new(TEST) else {
        return;
    };
    let Some(python) = net.sandbox().python_for_anyone() else {
        return skip(TEST, "no python3 that an unprivileged uid may run");
    };
    let python = python.to_string_lossy().into_owned();
    let pod_ip = net.pod_ip();
    let proxy = net.sandbox().install(&sibling_binary("weft-proxy"));

    // The cluster: the injector serving, a labelled namespace, the Pod.
    let (fake, kubeconfig) = injector_cluster(control_plane_rbac(), true).await;
    fake.create_namespace("shop", json!({"weft.dev/inject": "enabled"}))
        .await;
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "reviews", "namespace": "shop"}}))
        .await;
    let cp = injector_control_plane(&fake, &kubeconfig, &["--proxy-image", IMAGE]);
    let root = ca_root(&fake).await;
    wait_bundles(&fake, &root).await;
    let (code, body) = create_pod(&fake, &pod()).await;
    assert_eq!(code, 201, "{body}");
    let stored = fake
        .get("v1", "Pod", Some("shop"), "reviews-0")
        .await
        .expect("the Pod");
    let init: Vec<&str> = stored["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(init, ["weft-init", "weft-proxy"], "not injected: {stored}");
    let app = &stored["spec"]["containers"][0];
    for kind in ["livenessProbe", "readinessProbe"] {
        assert_eq!(app[kind]["httpGet"]["port"], 15020, "{kind}: {app}");
    }

    // The kubelet: the projected token, the control plane's Service name
    // resolved to the Pod's loopback and relayed from there.
    // The token the kubelet asks for: the volume's audience and expiry,
    // bound to the Pod.
    let issue = |audience: &str, ttl: Duration| {
        let audiences: Vec<&str> = [audience].into_iter().filter(|a| !a.is_empty()).collect();
        fake.service_account_token("shop", "reviews", &audiences, ttl, Some("reviews-0"))
    };
    let ns = net.ns().to_string();
    let mut kubelet = Kubelet::new(
        stored,
        &net.sandbox().tools,
        &ns,
        pod_ip,
        &issue,
        &[(IMAGE, Path::new(&proxy))],
    )
    .expect("the kubelet takes the Pod");
    kubelet.host("weft-control-plane.weft-system.svc", "127.0.0.1");
    net.expose_at(Ipv4Addr::LOCALHOST, 15012, cp.listen);
    kubelet
        .run_init_containers()
        .await
        .unwrap_or_else(|e| panic!("{e}\ncontrol plane:\n{}", cp.logs()));
    // The sidecar is up and has its certificate: its readiness probe says so.
    let ready = kubelet
        .probe("weft-proxy", "readinessProbe")
        .await
        .expect("the sidecar's readiness probe");
    assert_eq!(ready.status, 200, "{}", ready.text());

    // The app starts only now, and each rewritten probe gets its answer.
    kubelet
        .start("reviews", APP_UID, &[&python, "-c", &probe_app_py(9080)])
        .expect("the app starts");
    let live = eventually("the app answers its liveness probe", LIMIT, || async {
        let r = kubelet.probe("reviews", "livenessProbe").await.ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!((live.status, live.text()), (200, "healthy".to_string()));
    let ready = kubelet
        .probe("reviews", "readinessProbe")
        .await
        .expect("the readiness probe");
    assert_eq!(
        (ready.status, ready.text()),
        (500, "broken, X-Probe=kubelet".to_string())
    );

    // Strict: the app's port refuses plaintext from outside the Pod.
    let direct = get(&format!("http://{pod_ip}:9080/healthz"), &[]).await;
    assert!(
        direct.as_ref().map_or(true, |r| r.status != 200),
        "plaintext reached the app past Strict mode: {direct:?}"
    );

    // Outbound: the app's request to a Service's ClusterIP (assigned
    // nowhere; routed onto the link only so `connect` can start) goes
    // through the sidecar to the Service's endpoint.
    let ratings = net.upstream("ratings").await;
    let port = ratings.addr.port();
    let svc = fake
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "ratings", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}}))
        .await;
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    fake.create(endpoint_slice(
        "shop",
        "ratings-1",
        "ratings",
        port,
        &[(&ratings.addr.ip().to_string(), true)],
    ))
    .await;
    let [a, b, c, _] = pod_ip.octets();
    net.sandbox()
        .ip(&ns, &format!("route add {cluster_ip}/32 via {a}.{b}.{c}.1"));
    let sb = net.sandbox();
    let body = eventually(
        "the app reaches ratings by its ClusterIP",
        LIMIT,
        || async {
            let (code, body) =
                sb.curl_as(Some(APP_UID), &ns, &[], &format!("http://{cluster_ip}/"));
            (code == 200).then_some(body)
        },
    )
    .await;
    assert!(body.contains("ratings"), "{body}");
    assert!(ratings.requests() >= 1);
    let metrics = sb.curl(&ns, &[], "http://127.0.0.1:15000/metrics").1;
    let outbound: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weft_requests_total") && l.contains("direction=\"outbound\""))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(
        outbound >= 1.0,
        "the sidecar counted no outbound request:\n{metrics}"
    );
    kubelet.check_running().unwrap_or_else(|e| panic!("{e}"));
}
