//! The kubelet's view of an injected pod with Strict mTLS: the pod is a
//! network namespace with the init container's rules (the real `weft-proxy
//! iptables`), the sidecar as uid 1337 in mesh mode with the environment
//! the injector writes (the mesh CA as PEM text, `WEFT_INBOUND_MODE=strict`,
//! `WEFT_PROBES` on the pod IP, `WEFT_APP_PROBES` holding the app's
//! original probes), and the app as another uid. This test, in the host
//! namespace, plays the kubelet: it calls each rewritten probe at
//! `podIP:15020` and gets the app's own answer (200, and 500 with the
//! probe's header seen; over IPv4 and IPv6), `/ready` is 503 until the sidecar has its
//! certificate and 200 after, unlisted paths are 404, and the app's port
//! itself refuses the kubelet's plaintext (Strict mode on 15006).
//!
//! Needs root, `ip`, `iptables`, `ip6tables`, `curl`, `python3` and
//! `setpriv` (skips without them, fails under CI), and the built
//! `weft-proxy` and `weft-control-plane`.

use std::net::Ipv4Addr;
use std::time::Duration;
use weft_tests::netns::{sibling_binary, skip};
use weft_tests::pod_net::{probe_app_py, PodNet};
use weft_tests::{eventually, get, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_probes_a_strict_pod_through_the_probe_listener() {
    let Some(mut net) = PodNet::new("netns kubelet test") else {
        return;
    };
    let Some(python) = net.sandbox().python_for_anyone() else {
        return skip(
            "netns kubelet test",
            "no python3 that an unprivileged uid may run",
        );
    };
    let python = python.to_string_lossy().into_owned();
    let pod_ip = net.pod_ip();
    let pod_ip6 = net.ipv6();
    let ns = net.ns().to_string();
    let proxy = net.sandbox().install(&sibling_binary("weft-proxy"));
    let cp = ControlPlane::start("", &[]);
    let ca_pem = std::fs::read_to_string(cp.ca_file()).expect("CA file");
    let cp_port = cp.listen.port();

    // The init container.
    #[rustfmt::skip]
    net.sandbox().exec(&ns, &[
        &proxy, "iptables", "--proxy-uid", "1337", "--proxy-gid", "1337",
        "--outbound-port", "15001", "--inbound-port", "15006",
    ]);
    // The app's own probes, as the injector moves them into the env.
    let app_probes = serde_json::json!({
        "/app-health/web/livez": {"port": 8080, "path": "/healthz", "scheme": "HTTP", "timeoutSeconds": 1},
        "/app-health/web/readyz": {"port": 8080, "path": "/broken", "scheme": "HTTP",
            "headers": [{"name": "X-Probe", "value": "kubelet"}], "timeoutSeconds": 2},
    })
    .to_string();
    let token = cp.token("default", "web");
    let control_plane = format!("https://127.0.0.1:{cp_port}");
    net.sandbox().spawn_as(
        "weft-proxy",
        &ns,
        1337,
        &[
            ("WEFT_CONTROL_PLANE", &control_plane),
            ("WEFT_CONTROL_PLANE_CA_PEM", &ca_pem),
            ("WEFT_BOOTSTRAP_TOKEN", &token),
            ("WEFT_NAMESPACE", "default"),
            ("WEFT_SERVICE_ACCOUNT", "web"),
            ("WEFT_PROXY_NAME", "web-1"),
            ("WEFT_SERVICE", "web"),
            ("WEFT_INBOUND_MODE", "strict"),
            ("WEFT_PROBES", "0.0.0.0:15020"),
            ("WEFT_APP_PROBES", &app_probes),
            ("WEFT_OUTBOUND", "127.0.0.1:15001"),
            ("WEFT_INBOUND", "0.0.0.0:15006"),
        ],
        &[&proxy, "run"],
    );
    net.sandbox()
        .spawn_as("app", &ns, 1000, &[], &[&python, "-c", &probe_app_py(8080)]);

    let probe = |path: &str| format!("http://{pod_ip}:15020{path}");
    let kubelet = [("user-agent", "kube-probe/1.36")];
    // The control plane is not reachable from the pod yet: no certificate,
    // not ready.
    let first = eventually("the probe listener", Duration::from_secs(10), || async {
        get(&probe("/ready"), &kubelet).await.ok()
    })
    .await;
    assert_eq!(
        (first.status, first.text()),
        (503, "not ready: no mesh certificate yet\n".to_string())
    );
    // Now it is (through a socket in the pod's loopback): ready.
    net.expose_at(Ipv4Addr::LOCALHOST, cp_port, cp.listen);
    eventually("the sidecar is ready", Duration::from_secs(20), || async {
        let r = get(&probe("/ready"), &kubelet).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    // Each rewritten probe: the app's own answer.
    let live = eventually("the app is up", Duration::from_secs(10), || async {
        let r = get(&probe("/app-health/web/livez"), &kubelet).await.ok()?;
        (r.status != 503).then_some(r)
    })
    .await;
    assert_eq!((live.status, live.text()), (200, "healthy".to_string()));
    // A pod probed at its IPv6 address (dual-stack, IPv6 first) answers the same.
    let live6 = get(
        &format!("http://[{pod_ip6}]:15020/app-health/web/livez"),
        &kubelet,
    )
    .await
    .expect("the probe listener over IPv6");
    assert_eq!((live6.status, live6.text()), (200, "healthy".to_string()));
    let ready = get(&probe("/app-health/web/readyz"), &kubelet)
        .await
        .expect("readyz");
    assert_eq!(
        (ready.status, ready.text()),
        (500, "broken, X-Probe=kubelet".to_string())
    );
    for path in [
        "/app-health/web/startupz",
        "/app-health/web",
        "/metrics",
        "/config",
        "/live",
    ] {
        let r = get(&probe(path), &kubelet).await.expect("probe listener");
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }

    // The app's port itself is intercepted and Strict: plaintext refused.
    let direct = get(&format!("http://{pod_ip}:8080/healthz"), &kubelet).await;
    assert!(
        direct.as_ref().map_or(true, |r| r.status != 200),
        "plaintext reached the app past Strict mode: {direct:?}"
    );
    let sb = net.sandbox();
    let metrics = sb.curl(&ns, &[], "http://127.0.0.1:15000/metrics").1;
    let plaintext: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weft_inbound_rejected_total") && l.contains("plaintext"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(plaintext >= 1.0, "no plaintext refusal counted:\n{metrics}");
    sb.check_children();
}
