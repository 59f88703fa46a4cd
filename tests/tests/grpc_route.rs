//! GRPCRoute end to end with real gRPC clients and servers (Python grpcio):
//! service/method and header matches reach different backends, weights
//! split calls, header filters reach the server and the client, a mirror
//! gets a whole copy of each call, and what
//! the proxy answers itself reaches the client as a gRPC status
//! (UNIMPLEMENTED, UNAVAILABLE, DEADLINE_EXCEEDED, PERMISSION_DENIED), not
//! as an HTTP error. Once from config files, once from the control plane
//! (the sidecar asks for the name and is sent the GRPCRoute).
//!
//! The binaries must be built first (`cargo build -p weft-proxy -p
//! weft-control-plane`). Without the Python module `grpc` the tests skip
//! locally and fail under CI (env `CI`).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use weft_tests::wire::*;
use weft_tests::*;

const PEER: &str = "grpc_route_peer.py";

fn grpc_backend(name: &str, endpoint: SocketAddr) -> String {
    backend(name, "grpc", 50051, endpoint)
}

/// The route under test: `cart` (a Backend clients address as
/// `cart:50051`) taken over by a GRPCRoute.
const ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart}
spec:
  parentRefs: [{kind: Backend, name: cart}]
  rules:
    - matches: [{method: {service: shop.Cart, method: Get}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-route, value: get}]
            remove: [x-remove-me]
      backendRefs: [{name: cart-b}]
    - matches:
        - method: {service: shop.Cart}
          headers: [{name: x-canary, value: "1"}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: canary}]}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {add: [{name: x-answered-by, value: canary}]}
      backendRefs: [{name: cart-b}]
    - matches: [{method: {service: shop.Cart}}]
      backendRefs: [{name: cart-a}]
    - matches: [{method: {type: RegularExpression, service: 'shop\.Split(V[0-9])?'}}]
      backendRefs: [{name: cart-a, weight: 3}, {name: cart-b, weight: 1}]
    - matches: [{method: {service: shop.Dead}}]
      backendRefs: [{name: dead}]
    - matches: [{method: {service: shop.Slow}}]
      backendRefs: [{name: slow}]
    - matches: [{method: {service: shop.Mirror}}]
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: cart-mirror}}
      backendRefs: [{name: cart-a}]
"#;

/// Two grpcio servers and the config routing to them.
struct Servers {
    a: Peer,
    b: Peer,
    yaml: String,
}

async fn servers() -> Servers {
    let a = start_peer(PEER).await;
    let b = start_peer(PEER).await;
    let at = |p: &Peer| SocketAddr::from(([127, 0, 0, 1], p.port));
    // A port nothing listens on: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind");
    let yaml = config(&[
        grpc_backend("cart", at(&a)),
        grpc_backend("cart-a", at(&a)),
        grpc_backend("cart-b", at(&b)),
        grpc_backend("dead", closed),
        grpc_backend("slow", at(&a)),
        grpc_backend("cart-mirror", at(&b)),
        "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: slow}\nspec:\n  targetRef: {kind: Backend, name: slow}\n  retry: {attempts: 0, perTryTimeout: 300ms}\n".to_string(),
        ROUTE.to_string(),
    ]);
    Servers { a, b, yaml }
}

/// Makes `calls` (see the peer's doc) through `addr` as `authority`.
async fn call(addr: SocketAddr, authority: &str, calls: Value) -> Vec<Vec<Value>> {
    let out = run_peer_client(PEER, &[&addr.to_string(), authority, &calls.to_string()]).await;
    serde_json::from_value(out).expect("a list of lists")
}

/// Which server answered each outcome.
fn port_of(o: &Value) -> u64 {
    assert_eq!(o["code"], "OK", "{o}");
    o["reply"]["port"].as_u64().expect("port")
}

/// The routing checks both modes share: `addr` routes `cart:50051`.
async fn routes_by_service_method_and_headers(s: &Servers, addr: SocketAddr) {
    let (a, b) = (s.a.port as u64, s.b.port as u64);
    let out = call(
        addr,
        "cart:50051",
        json!([
            {"path": "/shop.Cart/Get", "metadata": [["x-remove-me", "1"]]},
            {"path": "/shop.Cart/Put"},
            {"path": "/shop.Cart/Put", "metadata": [["x-canary", "1"]]},
            {"path": "/shop.Cart/Get", "metadata": [["x-canary", "1"]]},
            {"path": "/shop.Cart/Put", "metadata": [["x-canary", "2"]]},
        ]),
    )
    .await;
    // Service and method: the exact match goes to B, with its request
    // header filter applied (x-route set, x-remove-me removed).
    let get = &out[0][0];
    assert_eq!(port_of(get), b, "{get}");
    assert_eq!(get["reply"]["path"], "/shop.Cart/Get");
    assert_eq!(get["reply"]["x-route"], "get", "{get}");
    assert!(get["reply"].get("x-remove-me").is_none(), "{get}");
    // Service only: any other method of shop.Cart goes to A, unfiltered.
    let put = &out[1][0];
    assert_eq!(port_of(put), a, "{put}");
    assert!(put["reply"].get("x-route").is_none(), "{put}");
    // A header match: the canary goes to B, and its response filter
    // reaches the client as metadata.
    let canary = &out[2][0];
    assert_eq!(port_of(canary), b, "{canary}");
    assert_eq!(canary["reply"]["x-route"], "canary", "{canary}");
    assert_eq!(canary["metadata"]["x-answered-by"], "canary", "{canary}");
    // Service + method outranks service + header (more characters matched).
    assert_eq!(out[3][0]["reply"]["x-route"], "get", "{}", out[3][0]);
    // A header value that does not match falls through to service-only.
    assert_eq!(port_of(&out[4][0]), a, "{}", out[4][0]);

    // RequestMirror: A answers every call; B gets a copy of each, whole.
    // (Within the mirror's 64 KiB body bound.)
    let body = "m".repeat(50_000);
    let out = call(
        addr,
        "cart:50051",
        json!([{"path": "/shop.Mirror/Copy", "n": 10, "body": body}]),
    )
    .await;
    assert!(out[0].iter().all(|o| port_of(o) == a), "{out:?}");
    let b_addr = SocketAddr::from(([127, 0, 0, 1], s.b.port));
    let want = json!({"calls": 10, "bytes": 500_000});
    eventually("B saw the 10 copies", Duration::from_secs(10), || async {
        let out = call(b_addr, "b", json!([{"path": "/weft.Peer/Seen"}])).await;
        (out[0][0]["reply"]["/shop.Mirror/Copy"] == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn grpc_routes_by_method_headers_and_weight_in_file_mode() {
    if !require_python_module("grpc") {
        return;
    }
    let s = servers().await;
    let proxy = Proxy::start(s.yaml.clone());
    routes_by_service_method_and_headers(&s, proxy.outbound).await;

    // Weighted 3:1 over 400 calls (a regex service match): A's expected
    // share is 300 with a standard deviation of about 8.7; ±45 is over 5.
    let out = call(
        proxy.outbound,
        "cart:50051",
        json!([{"path": "/shop.SplitV2/Any", "n": 400}]),
    )
    .await;
    let to_a = out[0]
        .iter()
        .filter(|o| port_of(o) == s.a.port as u64)
        .count();
    assert!((255..=345).contains(&to_a), "{to_a} of 400 went to A");
}

#[tokio::test]
async fn errors_reach_grpc_clients_as_grpc_statuses() {
    if !require_python_module("grpc") {
        return;
    }
    let s = servers().await;
    let proxy = Proxy::builder(s.yaml.clone() + &authz_deny_all())
        .arg("--service")
        .arg("cart")
        .app(SocketAddr::from(([127, 0, 0, 1], s.a.port)))
        .start();
    let out = call(
        proxy.outbound,
        "cart:50051",
        json!([
            {"path": "/shop.Other/Get"},
            {"path": "/shop.Dead/Get"},
            {"path": "/shop.Slow/Slow"},
        ]),
    )
    .await;
    let status = |o: &Value, code: &str, cause: &str| {
        assert_eq!(o["code"], code, "{o}");
        assert_eq!(o["metadata"]["x-weft-error"], cause, "{o}");
        assert!(o["details"].as_str().is_some_and(|d| !d.is_empty()), "{o}");
    };
    // No rule matches: UNIMPLEMENTED, from the proxy (the servers answer
    // every method, so it cannot be theirs).
    status(&out[0][0], "UNIMPLEMENTED", "no-route");
    // Connection refused: UNAVAILABLE.
    status(&out[1][0], "UNAVAILABLE", "connect-failed");
    // The per-try timeout: DEADLINE_EXCEEDED.
    status(&out[2][0], "DEADLINE_EXCEEDED", "upstream-timeout");

    // No route for the authority at all: UNIMPLEMENTED.
    let out = call(proxy.outbound, "nowhere:50051", json!([{"path": "/a.B/C"}])).await;
    status(&out[0][0], "UNIMPLEMENTED", "no-route");

    // Inbound, denied by the AuthorizationPolicy: PERMISSION_DENIED.
    let out = call(
        proxy.inbound,
        "cart:50051",
        json!([{"path": "/shop.Cart/Get"}]),
    )
    .await;
    status(&out[0][0], "PERMISSION_DENIED", "forbidden");

    // An HTTP client still gets the HTTP error.
    let r = get(&proxy.url("/x"), &[("host", "nowhere")]).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("no-route"));
}

/// An AuthorizationPolicy on service `cart` that allows only a caller
/// nobody is.
fn authz_deny_all() -> String {
    "---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: cart}\nspec:\n  targetRef: {kind: Service, name: cart}\n  action: Allow\n  rules:\n    - from: {identities: [\"spiffe://weft.local/ns/default/sa/nobody\"]}\n".into()
}

#[tokio::test]
async fn a_sidecar_is_sent_the_grpc_route_of_a_name_it_asks_for() {
    if !require_python_module("grpc") {
        return;
    }
    let s = servers().await;
    let cp = ControlPlane::start(&s.yaml, &[]);
    let builder = cp.sidecar("default", "shop");
    let proxy = builder.start();
    eventually("the sidecar is ready", Duration::from_secs(20), || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    routes_by_service_method_and_headers(&s, proxy.outbound).await;
    let (_, config) = proxy.admin_get("/config").await;
    assert!(config.contains("kind: GRPCRoute"), "{config}");
}
