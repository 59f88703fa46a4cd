//! Fault injection (TrafficPolicy `fault`) end to end, with real clients
//! and upstreams: an injected abort never reaches the upstream and is
//! never retried; shares land where the binomial law says; a delay delays;
//! the header gate confines a fault to the requests that ask for it; a gRPC
//! client gets the configured gRPC status; the access log carries FI/DI;
//! and the same policy works when streamed by the control plane.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_tests::wire::run_peer_client;
use weft_tests::*;

/// Backend `name` at `addr`, with a TrafficPolicy of `policy` (YAML lines
/// under `spec:`) when given.
fn backend(name: &str, addr: SocketAddr, policy: &str) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{address: \"{addr}\"}}]\n---\n"
    );
    if !policy.is_empty() {
        y.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}---\n"
        ));
    }
    y
}

async fn faults(p: &Proxy, backend: &str, kind: &str) -> f64 {
    let b = format!("backend=\"default/{backend}\"");
    let k = format!("kind=\"{kind}\"");
    p.metric("weft_faults_total", &[&b, &k]).await
}

/// One request on a kept-alive connection, with extra headers.
async fn send(conn: &mut Conn, host: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = http::Request::get("/f").header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(http_body_util::Full::default()).unwrap();
    conn.send(req).await.expect("request through the proxy")
}

#[tokio::test]
async fn an_abort_never_reaches_the_upstream_and_is_not_retried() {
    let up = Faulty::start("reviews").await;
    // A retry policy that would retry a 503 (and a budget that allows it).
    let policy = "  retry: {attempts: 3, retryOn: [5xx], backoff: {baseInterval: 1ms, maxInterval: 2ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}\n  fault:\n    abort: {httpStatus: 503}\n";
    let p = Proxy::builder(backend("reviews", up.addr, policy))
        .arg("--access-log")
        .arg("on")
        .start();
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for _ in 0..20 {
        let r = send(&mut conn, "reviews", &[]).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
    }
    assert_eq!(up.requests(), 0, "an injected abort reached the upstream");
    assert_eq!(faults(&p, "reviews", "abort").await, 20.0);
    assert_eq!(faults(&p, "reviews", "delay").await, 0.0);
    assert_eq!(
        p.metric("weft_retries_total", &["default/reviews"]).await,
        0.0,
        "an injected abort was retried"
    );
    // The proxy did not connect upstream at all.
    assert_eq!(
        p.metric("weft_upstream_connects_total", &["result=\"ok\""])
            .await,
        0.0
    );
    // The access log says it was injected.
    let line = eventually("an access line", Duration::from_secs(5), || {
        let found = p
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["target"] == "weft::access" && v["authority"] == "reviews");
        async move { found }
    })
    .await;
    assert_eq!(line["flags"], "FI", "{line}");
    assert_eq!(line["status"], 503, "{line}");
}

#[tokio::test]
async fn an_abort_share_lands_in_the_binomial_range() {
    let up = Upstream::start("reviews").await;
    let policy = "  fault:\n    abort: {httpStatus: 418, percent: 50}\n";
    let p = Proxy::start(backend("reviews", up.addr, policy));
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let n = 1000;
    let mut aborted = 0;
    for _ in 0..n {
        let r = send(&mut conn, "reviews", &[]).await;
        match r.status {
            418 => {
                assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
                aborted += 1;
            }
            200 => assert_eq!(r.header("x-upstream"), Some("reviews")),
            s => panic!("status {s}: {}", r.text()),
        }
    }
    // Binomial(1000, 0.5): sd = 15.8; 400..=600 is 6.3 sd either side, so
    // a correct proxy fails this with probability about 3e-10.
    assert!((400..=600).contains(&aborted), "{aborted} of {n} aborted");
    assert_eq!(up.requests(), n - aborted);
    assert_eq!(faults(&p, "reviews", "abort").await, aborted as f64);
}

#[tokio::test]
async fn a_header_gated_delay_delays_only_the_requests_that_ask() {
    let up = Upstream::start("reviews").await;
    let policy = "  fault:\n    delay: {fixedDelay: 200ms}\n    headers: [{name: x-weft-fault, value: \"on\"}]\n";
    let p = Proxy::builder(backend("reviews", up.addr, policy))
        .arg("--access-log")
        .arg("on")
        .start();
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let r = send(&mut conn, "reviews", &[("x-weft-fault", "on")]).await;
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(took >= Duration::from_millis(200), "delayed only {took:?}");
    }
    // Without the header, or with another value: no fault at all.
    for h in [vec![], vec![("x-weft-fault", "off")]] {
        for _ in 0..5 {
            let r = send(&mut conn, "reviews", &h).await;
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(faults(&p, "reviews", "delay").await, 3.0);
    assert_eq!(up.requests(), 13);
    let flags: Vec<String> = eventually("13 access lines", Duration::from_secs(5), || {
        let lines: Vec<String> = p
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "weft::access")
            .map(|v| v["flags"].as_str().unwrap_or("").to_owned())
            .collect();
        async move { (lines.len() == 13).then_some(lines) }
    })
    .await;
    assert_eq!(flags.iter().filter(|f| *f == "DI").count(), 3, "{flags:?}");
    assert_eq!(flags.iter().filter(|f| *f == "-").count(), 10, "{flags:?}");
}

#[tokio::test]
async fn a_delay_then_an_abort_shows_both_flags() {
    let up = Upstream::start("reviews").await;
    let policy = "  fault:\n    delay: {fixedDelay: 200ms}\n    abort: {httpStatus: 500}\n";
    let p = Proxy::builder(backend("reviews", up.addr, policy))
        .arg("--access-log")
        .arg("on")
        .start();
    let t = Instant::now();
    let r = get(&p.url("/f"), &[("host", "reviews")]).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
    assert_eq!(up.requests(), 0);
    let line = eventually("an access line", Duration::from_secs(5), || {
        let found = p
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["target"] == "weft::access");
        async move { found }
    })
    .await;
    assert_eq!(line["flags"], "DI,FI", "{line}");
}

#[tokio::test]
async fn a_grpc_client_gets_the_configured_grpc_status() {
    if !require_python_module("grpc") {
        return;
    }
    let server = weft_tests::wire::start_peer("grpc_route_peer.py").await;
    let at = SocketAddr::from(([127, 0, 0, 1], server.port));
    let grpc = |name: &str, policy: &str| {
        let mut y = weft_tests::wire::backend(name, "grpc", 50051, at);
        y.push_str(&format!(
            "---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}---\n"
        ));
        y
    };
    let mut yaml = grpc("cart", "  fault:\n    abort: {grpcStatus: 8}\n");
    yaml.push_str(&grpc("stock", "  fault:\n    abort: {httpStatus: 503}\n"));
    let p = Proxy::start(yaml);
    let call = |authority: &'static str| {
        let addr = p.outbound.to_string();
        async move {
            let calls = json!([{"path": "/shop.Cart/Get"}]).to_string();
            let out = run_peer_client("grpc_route_peer.py", &[&addr, authority, &calls]).await;
            out[0][0].clone()
        }
    };
    let o = call("cart:50051").await;
    assert_eq!(o["code"], "RESOURCE_EXHAUSTED", "{o}");
    assert_eq!(o["metadata"]["x-weft-error"], "fault-abort", "{o}");
    // An HTTP status, mapped per gRPC's table: 503 is UNAVAILABLE.
    let o = call("stock:50051").await;
    assert_eq!(o["code"], "UNAVAILABLE", "{o}");
    assert_eq!(o["metadata"]["x-weft-error"], "fault-abort", "{o}");
    assert_eq!(faults(&p, "cart", "abort").await, 1.0);
    // A non-gRPC request aborted with a gRPC status gets 500.
    let r = get(&p.url("/x"), &[("host", "cart:50051")]).await.unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
}

#[tokio::test]
async fn a_fault_streamed_by_the_control_plane_applies_in_mesh_mode() {
    let up = Faulty::start("reviews").await;
    let policy = "  fault:\n    abort: {httpStatus: 503}\n    headers: [{name: x-weft-fault}]\n";
    let cp = ControlPlane::start(&backend("reviews", up.addr, policy), &[]);
    let builder = cp.sidecar("default", "productpage");
    let p = builder.start();
    eventually("the sidecar is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let r = send(&mut conn, "reviews", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests(), 1);
    let r = send(&mut conn, "reviews", &[("x-weft-fault", "1")]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
    assert_eq!(up.requests(), 1, "the aborted request reached the upstream");
    assert_eq!(faults(&p, "reviews", "abort").await, 1.0);
    let (_, config) = p.admin_get("/config").await;
    assert!(config.contains("fault:"), "{config}");
}

#[tokio::test]
async fn the_crd_accepts_a_fault_and_refuses_one_out_of_range() {
    use bytes::Bytes;
    use weft_tests::kube_fake::{Credentials, KubeFake};
    let fake = KubeFake::builder().weft_crds().start().await;
    fake.create_namespace("shop", json!({})).await;
    let c = fake.client(Credentials::Admin);
    let path = "/apis/weft.dev/v1alpha1/namespaces/shop/trafficpolicies";
    let policy = |name: &str, fault: Value| {
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
               "metadata": {"name": name, "namespace": "shop"},
               "spec": {"targetRef": {"kind": "Service", "name": "ratings"}, "fault": fault}})
    };
    let post = |body: Value| {
        let c = &c;
        async move {
            let h = [("content-type", "application/json")];
            let r = c
                .send("POST", path, &h, Bytes::from(body.to_string()))
                .await
                .unwrap();
            (r.status, r.json())
        }
    };
    let good = json!({"abort": {"grpcStatus": 14, "percent": 12.5},
                      "delay": {"fixedDelay": "200ms"},
                      "headers": [{"name": "x-weft-fault", "value": "on"}]});
    let (code, body) = post(policy("ok", good.clone())).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["fault"], good);
    let (code, body) = post(policy("bad", json!({"abort": {"httpStatus": 99}}))).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.to_string().contains("spec.fault.abort.httpStatus"),
        "{body}"
    );
    let (code, body) = post(policy("late", json!({"delay": {"fixedDelay": "soon"}}))).await;
    assert_eq!(code, 422, "{body}");
}

/// The names of a span's events.
fn event_names(s: &Value) -> Vec<String> {
    s["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn injected_faults_and_skipped_mirrors_are_span_events() {
    use weft_tests::otlp::{receiver_available, request, with_env, Receiver};
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let up = Upstream::start("reviews").await;
    let shadow = Upstream::start("shadow").await;
    let policy = "  fault:\n    delay: {fixedDelay: 10ms}\n    abort: {httpStatus: 503}\n    headers: [{name: x-weft-fault}]\n";
    let mut yaml = backend("reviews", up.addr, policy);
    yaml.push_str(&backend("shadow", shadow.addr, ""));
    yaml.push_str("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: reviews}]\n  rules:\n    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}]\n      backendRefs: [{name: reviews}]\n");
    let p = with_env(Proxy::builder(yaml), &rx.env("grpc")).start();
    let mut c = Conn::open(p.outbound).await.unwrap();
    let r = c
        .send(request("reviews", "/faulted", &[("x-weft-fault", "1")]))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    let s = rx
        .span("the faulted request's span", |s| {
            s["attributes"]["url.full"] == "http://reviews/faulted"
        })
        .await;
    assert_eq!(event_names(&s), ["fault.delay", "fault.abort"], "{s}");
    // A body over the mirror's bound: the copy is skipped, and says so.
    // (`/upload` reads the whole body: an upstream that answers without
    // reading it closes on unread data, and the reset may beat its answer.)
    let big = http::Request::post("http://reviews/upload")
        .header("host", "reviews")
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'u';
            70_000
        ])))
        .unwrap();
    let r = c.send(big).await.unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"70000"[..]));
    let s = rx
        .span("the big request's span", |s| {
            s["attributes"]["url.full"] == "http://reviews/upload"
        })
        .await;
    assert_eq!(event_names(&s), ["mirror.skipped"], "{s}");
    assert_eq!(
        s["events"][0]["attributes"]["weft.mirror.skipped"], "body",
        "{s}"
    );
    assert_eq!(shadow.requests(), 0);
}
