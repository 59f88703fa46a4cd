//! `/failures` on the admin endpoint: each kind of failure the proxy meets
//! (connect refused, timeout, reset, overloaded, retry budget exhausted,
//! endpoint ejected, no route), produced through a real sidecar by real
//! clients and upstreams, and read back as JSON: the cause line, flags,
//! each try with its outcome and wait, route/backend/endpoint, status and
//! trace id. Also the debug response headers (`MeshConfig.spec.debugHeaders`).

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_tests::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn backend(name: &str, addrs: &[SocketAddr], policy: &str) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{}]\n---\n",
        eps.join(", ")
    );
    if !policy.is_empty() {
        y.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}---\n"
        ));
    }
    y
}

/// A port nothing listens on.
fn closed_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `/failures` with `query`, parsed.
async fn failures(p: &Proxy, query: &str) -> Value {
    let (status, body) = p.admin_get(&format!("/failures{query}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The newest entry for `backend`.
async fn newest(p: &Proxy, backend: &str) -> Value {
    let v = failures(p, &format!("?backend={backend}&limit=1")).await;
    println!("{backend}: {v:#}");
    v["failures"][0].clone()
}

fn outcomes(e: &Value) -> Vec<String> {
    e["tries"]
        .as_array()
        .unwrap_or_else(|| panic!("no tries in {e}"))
        .iter()
        .map(|t| t["outcome"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn connect_refused_retried_to_the_end_with_route_rule_waits_and_trace_id() {
    let live = Upstream::start("live").await;
    let dead = closed_addr();
    let mut yaml = backend("live", &[live.addr], "");
    yaml.push_str(&backend(
        "dead",
        &[dead],
        "  retry: {attempts: 2, retryOn: [connect-failure], backoff: {baseInterval: 20ms, maxInterval: 40ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}\n",
    ));
    yaml.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop}\nspec:\n  parentRefs: [{name: live}]\n  rules:\n    - backendRefs: [{name: live}]\n    - matches: [{path: {type: PathPrefix, value: /broken}}]\n      backendRefs: [{name: dead}]\n",
    );
    let p = Proxy::start(yaml);

    // A request that simply succeeds leaves nothing.
    let r = get(&p.url("/ok"), &[("host", "live")]).await.unwrap();
    assert_eq!(r.status, 200);
    let v = failures(&p, "").await;
    assert_eq!(v["kept"], 256, "{v}");
    assert_eq!(v["failures"], serde_json::json!([]), "{v}");

    let r = get(
        &p.url("/broken/x"),
        &[("host", "live"), ("traceparent", TRACEPARENT)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let e = newest(&p, "default/dead").await;
    assert_eq!(e["direction"], "outbound");
    assert_eq!(e["authority"], "live");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/broken/x");
    assert_eq!(e["route"], "default/shop");
    assert_eq!(e["rule"], 1);
    assert_eq!(e["backend"], "default/dead");
    assert_eq!(e["endpoint"], dead.to_string());
    assert_eq!(e["status"], 502);
    assert_eq!(e["flags"], "UF,URX");
    assert_eq!(e["error"], "connect-failed");
    assert_eq!(e["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(outcomes(&e), ["connect refused"; 3]);
    let waits: Vec<f64> = e["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["waitedMs"].as_f64().unwrap())
        .collect();
    assert_eq!(waits[0], 0.0, "nothing is waited before the first try: {e}");
    // Full-jitter backoff: up to baseInterval·2^n, capped at maxInterval.
    assert!(waits[1] <= 20.0 && waits[2] <= 40.0, "{e}");
    assert!(waits[1] + waits[2] > 0.0, "{e}");
    assert_eq!(
        e["cause"],
        format!("3 tries: 3 connect refused by {dead}, then out of retries")
    );
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");

    // No route: the authority nobody configured.
    let r = get(&p.url("/"), &[("host", "unknown.example")])
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let v = failures(&p, "?flag=NR").await;
    let e = &v["failures"][0];
    assert_eq!(v["failures"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(e["authority"], "unknown.example");
    assert_eq!(e["status"], 404);
    assert_eq!(e["route"], Value::Null);
    assert_eq!(e["tries"], serde_json::json!([]));
    assert_eq!(e["traceId"], Value::Null);
    assert_eq!(e["cause"], "no route for authority \"unknown.example\"");

    // Newest first; filters by backend, flag and count.
    let all = failures(&p, "").await;
    let list = all["failures"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{all}");
    assert_eq!(list[0]["flags"], "NR");
    assert_eq!(list[1]["flags"], "UF,URX");
    assert_eq!(
        failures(&p, "?flag=URX").await["failures"][0]["backend"],
        "default/dead"
    );
    assert_eq!(
        failures(&p, "?backend=default/live").await["failures"],
        serde_json::json!([])
    );
    assert_eq!(
        failures(&p, "?limit=1").await["failures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, body) = p.admin_get("/failures?limit=many").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn timeout_and_reset() {
    let hang = Faulty::start("hang").await;
    hang.set(Mode::Hang);
    let reset = Faulty::start("reset").await;
    reset.set(Mode::Reset);
    let mut yaml = backend("hang", &[hang.addr], "");
    yaml.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: slow}\nspec:\n  parentRefs: [{name: hang}]\n  rules:\n    - backendRefs: [{name: hang}]\n      timeouts: {request: 200ms}\n---\n",
    );
    yaml.push_str(&backend(
        "reset",
        &[reset.addr],
        "  retry: {attempts: 1, retryOn: [reset], backoff: {baseInterval: 1ms, maxInterval: 2ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}\n",
    ));
    let p = Proxy::start(yaml);

    let r = get(&p.url("/"), &[("host", "hang")]).await.unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    let e = newest(&p, "default/hang").await;
    assert_eq!(e["status"], 504);
    assert_eq!(e["flags"], "UT");
    assert_eq!(e["route"], "default/slow");
    assert_eq!(e["rule"], 0);
    assert_eq!(outcomes(&e), ["timeout"]);
    assert_eq!(
        e["cause"],
        format!("timeout after 200ms waiting for {}", hang.addr)
    );

    let r = get(&p.url("/"), &[("host", "reset")]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let e = newest(&p, "default/reset").await;
    assert_eq!(e["flags"], "UR,URX");
    assert_eq!(e["error"], "upstream-reset");
    assert_eq!(outcomes(&e), ["reset", "reset"]);
    assert_eq!(reset.requests(), 2, "both tries reached the upstream");
    assert_eq!(
        e["cause"],
        format!(
            "2 tries: 2 connections reset by {}, then out of retries",
            reset.addr
        )
    );
}

#[tokio::test]
async fn overloaded_by_the_circuit_breaker() {
    let hang = Faulty::start("held").await;
    hang.set(Mode::Hang);
    let yaml = backend("held", &[hang.addr], "  circuitBreaker: {maxRequests: 1}\n");
    let p = Proxy::start(yaml);
    let url = p.url("/");
    let held = tokio::spawn(async move { get(&url, &[("host", "held")]).await });
    eventually(
        "the first request to reach the upstream",
        Duration::from_secs(5),
        || {
            let n = hang.requests();
            async move { (n == 1).then_some(()) }
        },
    )
    .await;
    let r = get(&p.url("/second"), &[("host", "held")]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-weft-overloaded"), Some("true"));
    let e = newest(&p, "default/held").await;
    assert_eq!(e["path"], "/second");
    assert_eq!(e["status"], 503);
    assert_eq!(e["flags"], "UO");
    assert_eq!(e["tries"], serde_json::json!([]));
    assert_eq!(
        e["cause"],
        "overloaded: backend default/held is at its limit of concurrent requests"
    );
    held.abort();
}

#[tokio::test]
async fn retry_budget_exhausted() {
    let failing = Faulty::start("failing").await;
    failing.set(Mode::Status(503, None));
    let yaml = backend(
        "failing",
        &[failing.addr],
        "  retry: {attempts: 3, retryOn: [5xx], budget: {percent: 0, minRetriesPerSecond: 0}}\n",
    );
    let p = Proxy::start(yaml);
    let r = get(&p.url("/"), &[("host", "failing")]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(failing.requests(), 1, "the budget allowed no retry");
    let e = newest(&p, "default/failing").await;
    assert_eq!(e["status"], 503);
    assert_eq!(e["flags"], "URX");
    assert_eq!(e["error"], Value::Null, "the upstream's own answer");
    assert_eq!(outcomes(&e), ["503"]);
    assert_eq!(
        e["cause"],
        format!("503 from {}, then retry budget exhausted", failing.addr)
    );
}

#[tokio::test]
async fn endpoint_ejected_and_no_endpoint_at_all() {
    let failing = Faulty::start("ejected").await;
    failing.set(Mode::Status(503, None));
    let mut yaml = backend(
        "ej",
        &[failing.addr],
        "  retry: {attempts: 0}\n  outlierDetection: {consecutiveFailures: 1, maxEjectionPercent: 100, baseEjectionTime: 30s}\n",
    );
    yaml.push_str(&backend("empty", &[], ""));
    let p = Proxy::start(yaml);
    let r = get(&p.url("/first"), &[("host", "ej")]).await.unwrap();
    assert_eq!(r.status, 503);
    let e = newest(&p, "default/ej").await;
    assert_eq!(e["tries"][0]["ejected"], false);
    assert_eq!(
        e["cause"],
        format!("503 from {0}; {0} ejected", failing.addr)
    );
    assert_eq!(
        p.metric("weft_ejections_total", &["default/ej"]).await,
        1.0,
        "ejected by this request"
    );
    // With every endpoint out, the next request still goes to the ejected
    // one (an early probe, or the balancer's fallback), and says so.
    let r = get(&p.url("/later"), &[("host", "ej")]).await.unwrap();
    assert_eq!(r.status, 503);
    let e = newest(&p, "default/ej").await;
    assert_eq!(e["path"], "/later");
    assert_eq!(e["tries"][0]["ejected"], true, "{e}");
    assert_eq!(
        e["cause"],
        format!("503 from {} (an ejected endpoint)", failing.addr)
    );

    let r = get(&p.url("/"), &[("host", "empty")]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-weft-error"), Some("no-endpoints"));
    let e = newest(&p, "default/empty").await;
    assert_eq!(e["flags"], "UH");
    assert_eq!(e["endpoint"], Value::Null);
    assert_eq!(
        e["cause"],
        "no healthy endpoint for default/empty: it has no endpoints"
    );
}

#[tokio::test]
async fn inbound_failures_and_off() {
    let dead = closed_addr();
    let p = Proxy::builder(backend("x", &[dead], "")).app(dead).start();
    let url = format!("http://{}/in", p.inbound);
    let r = get(&url, &[("host", "me.local")]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let e = newest(&p, "app").await;
    assert_eq!(e["direction"], "inbound");
    assert_eq!(e["endpoint"], dead.to_string());
    assert_eq!(e["flags"], "UF");
    assert_eq!(outcomes(&e), ["connect refused"]);
    assert_eq!(e["cause"], format!("connect refused by {dead}"));

    // Refused by an AuthorizationPolicy: the inbound answer is a failure too.
    let app = Upstream::start("reviews").await;
    let guarded = Proxy::builder(format!(
        "{}apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: only-frontend}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  action: Allow\n  rules:\n    - from: {{identities: [\"spiffe://weft.local/ns/default/sa/frontend\"]}}\n",
        backend("x", &[dead], "")
    ))
    .app(app.addr)
    .arg("--service")
    .arg("reviews")
    .start();
    let url = format!("http://{}/secret", guarded.inbound);
    let r = get(&url, &[("host", "reviews"), ("traceparent", TRACEPARENT)])
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(app.requests(), 0);
    let e = failures(&guarded, "").await["failures"][0].clone();
    assert_eq!(e["direction"], "inbound");
    assert_eq!(e["path"], "/secret");
    assert_eq!(e["status"], 403);
    assert_eq!(e["error"], "forbidden");
    assert_eq!(e["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e["cause"], "forbidden by AuthorizationPolicy");

    let off = Proxy::builder(backend("x", &[dead], ""))
        .app(dead)
        .arg("--failures-kept")
        .arg("0")
        .start();
    let r = get(&off.url("/"), &[("host", "nowhere")]).await.unwrap();
    assert_eq!(r.status, 404);
    let v = failures(&off, "").await;
    assert_eq!(v, serde_json::json!({"kept": 0, "failures": []}));
}

/// An upstream that answers 503 to every other request (the first
/// included) and 200 to the rest, and sends forged debug headers.
async fn every_other_fails() -> (SocketAddr, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let i = count.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let status = if i.is_multiple_of(2) { 503 } else { 200 };
                        http::Response::builder()
                            .status(status)
                            .header("x-weft-route", "forged")
                            .header("x-weft-tries", "99")
                            .body(http_body_util::Full::new(bytes::Bytes::from("hi\n")))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, n)
}

const DEBUG_ON: &str = "apiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  debugHeaders: {enabled: true}\n---\n";

#[tokio::test]
async fn debug_headers_say_route_backend_endpoint_and_tries() {
    let (addr, n) = every_other_fails().await;
    let mut yaml = backend(
        "flaky",
        &[addr],
        "  retry: {attempts: 1, retryOn: [5xx], backoff: {baseInterval: 1ms, maxInterval: 2ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}\n",
    );
    yaml.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web}\nspec:\n  parentRefs: [{name: flaky}]\n  rules:\n    - matches: [{path: {type: PathPrefix, value: /never}}]\n      backendRefs: [{name: flaky}]\n    - backendRefs: [{name: flaky}]\n---\n",
    );
    // Off by default: the upstream's headers pass untouched.
    let p = Proxy::start(yaml.clone());
    let r = get(&p.url("/a"), &[("host", "flaky")]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-weft-route"), Some("forged"));
    assert_eq!(r.header("x-weft-backend"), None);
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // The retried request is kept in /failures as degraded.
    let e = newest(&p, "default/flaky").await;
    assert_eq!(e["status"], 200);
    assert_eq!(outcomes(&e), ["503", "200"]);
    assert_eq!(e["flags"], "-");
    assert_eq!(
        e["cause"],
        format!("2 tries: 503 from {addr}, then 200 from {addr}")
    );

    // The MeshConfig turns them on, on a hot reload.
    p.reload(&format!("{DEBUG_ON}{yaml}")).await;
    let r = get(&p.url("/b"), &[("host", "flaky")]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    println!("{:?}", r.headers);
    assert_eq!(r.header("x-weft-route"), Some("default/web#1"));
    assert_eq!(r.header("x-weft-backend"), Some("default/flaky"));
    assert_eq!(r.header("x-weft-endpoint"), Some(addr.to_string().as_str()));
    assert_eq!(r.header("x-weft-tries"), Some("2"));
    assert_eq!(r.headers.get_all("x-weft-tries").iter().count(), 1);

    // A Backend's implicit route has no name; a proxy-made answer still
    // says where it was going.
    let dead = closed_addr();
    let mut yaml2 = format!("{DEBUG_ON}{yaml}");
    yaml2.push_str(&backend("dead", &[dead], "  retry: {attempts: 0}\n"));
    p.reload(&yaml2).await;
    let r = get(&p.url("/"), &[("host", "dead")]).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weft-route"), None);
    assert_eq!(r.header("x-weft-backend"), Some("default/dead"));
    assert_eq!(r.header("x-weft-endpoint"), Some(dead.to_string().as_str()));
    assert_eq!(r.header("x-weft-tries"), Some("1"));
}

#[tokio::test]
async fn mesh_mode_debug_headers_and_failures() {
    let app = Upstream::start("svc").await;
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh, namespace: weft-system}}\nspec:\n  debugHeaders: {{enabled: true}}\n",
        app.addr
    );
    let cp = ControlPlane::start(&yaml, &[]);
    let b = cp.sidecar("default", "client");
    let p = b.start();
    eventually("the proxy is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let r = get(&p.url("/"), &[("host", "svc")]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-weft-backend"), Some("default/svc"));
    assert_eq!(
        r.header("x-weft-endpoint"),
        Some(app.addr.to_string().as_str())
    );
    assert_eq!(r.header("x-weft-tries"), Some("1"));

    let r = get(&p.url("/"), &[("host", "nothing.here")]).await.unwrap();
    assert_eq!(r.status, 404);
    let e = failures(&p, "?flag=NR").await["failures"][0].clone();
    assert_eq!(e["authority"], "nothing.here");
    assert_eq!(e["cause"], "no route for authority \"nothing.here\"");
}

/// From a Kubernetes source: the MeshConfig custom resource (checked
/// against the regenerated CRD by the fake API server) turns the debug
/// headers on for a sidecar in mesh mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_mesh_config_turns_debug_headers_on() {
    use serde_json::json;
    use weft_tests::kube_cluster::control_plane_rbac;
    let app = Upstream::start("legacy").await;
    let fake = weft_tests::route_cluster::fake_with(control_plane_rbac(), true).await;
    fake.create(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {"port": 80, "endpoints": [{"address": app.addr.to_string()}]}}))
        .await;
    fake.create(
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "MeshConfig",
        "metadata": {"name": "mesh", "namespace": "weft-system"},
        "spec": {"debugHeaders": {"enabled": true}}}),
    )
    .await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let b = cp.sidecar("shop", "client");
    let p = b.start();
    let r = eventually(
        "debug headers on a routed answer",
        Duration::from_secs(20),
        || async {
            let r = get(&p.url("/"), &[("host", "legacy")]).await.ok()?;
            (r.status == 200 && r.header("x-weft-backend").is_some()).then_some(r)
        },
    )
    .await;
    assert_eq!(r.header("x-weft-backend"), Some("shop/legacy"));
    assert_eq!(
        r.header("x-weft-endpoint"),
        Some(app.addr.to_string().as_str())
    );
    assert_eq!(r.header("x-weft-tries"), Some("1"));
}

/// With tracing on, a request that came without a trace gets the id of the
/// span the sidecar started; one that came with a trace keeps its id.
#[tokio::test]
async fn the_trace_id_is_the_spans_when_tracing_is_on() {
    let dead = closed_addr();
    let collector = closed_addr();
    let p = Proxy::builder(backend("dead", &[dead], "  retry: {attempts: 0}\n"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .start();
    let r = get(&p.url("/"), &[("host", "dead")]).await.unwrap();
    assert_eq!(r.status, 502);
    let e = newest(&p, "default/dead").await;
    let id = e["traceId"]
        .as_str()
        .unwrap_or_else(|| panic!("no trace id: {e}"));
    assert_eq!(id.len(), 32, "{e}");
    assert!(
        id.chars().all(|c| c.is_ascii_hexdigit()) && id != "0".repeat(32),
        "{e}"
    );
    assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");

    let r = get(
        &p.url("/"),
        &[("host", "dead"), ("traceparent", TRACEPARENT)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    let e = newest(&p, "default/dead").await;
    assert_eq!(e["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
}
