//! A GRPCRoute from the cluster, end to end with a real gRPC client: the
//! fake API server holds two Services with `appProtocol: grpc` whose
//! EndpointSlices point at real gRPC servers (Python grpcio) on this host,
//! and a GRPCRoute whose parent is Service `shop/cart`; the real
//! `weft-control-plane --kubernetes` reads them, a real mesh-mode sidecar
//! routes a real grpcio client's calls by service/method and by header,
//! answers a method no rule matches with gRPC status UNIMPLEMENTED, and the
//! control plane writes the route's status back.
//!
//! The binaries must be built first (`cargo build -p weft-proxy -p
//! weft-control-plane`). Without the Python module `grpc` the test skips
//! locally and fails under CI (env `CI`).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use weft_tests::kube_cluster::{endpoint_slice, install_control_plane_account};
use weft_tests::kube_fake::KubeFake;
use weft_tests::pod_net::PodNet;
use weft_tests::route_status::condition;
use weft_tests::wire::*;
use weft_tests::*;

const PEER: &str = "grpc_route_peer.py";
const LIMIT: Duration = Duration::from_secs(20);
const GATEWAY: &str = "gateway.networking.k8s.io/v1";
/// The port the Services expose (the servers listen on others).
const PORT: u16 = 50051;
/// How the client addresses the parent Service.
const AUTHORITY: &str = "cart.shop:50051";

/// Service `shop/<name>` on port 50051, `appProtocol: grpc`, with one
/// ready endpoint: a stand-in Pod at `endpoint`.
async fn grpc_service(fake: &KubeFake, name: &str, endpoint: SocketAddr) {
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": PORT, "targetPort": endpoint.port(),
            "appProtocol": "grpc"}]}}))
        .await;
    let ip = endpoint.ip().to_string();
    fake.create(endpoint_slice(
        "shop",
        &format!("{name}-a"),
        name,
        endpoint.port(),
        &[(&ip, true)],
    ))
    .await;
}

/// The route under test: Get of shop.Cart and shop.Cart with `x-canary: 1`
/// go to `cart-b`; any other shop.Cart method to `cart` itself; nothing
/// else matches.
fn grpc_route() -> Value {
    let to = |name: &str| json!([{"name": name, "port": PORT}]);
    json!({"apiVersion": GATEWAY, "kind": "GRPCRoute",
    "metadata": {"name": "cart", "namespace": "shop"},
    "spec": {
        "parentRefs": [{"group": "", "kind": "Service", "name": "cart"}],
        "rules": [
            {"matches": [{"method": {"service": "shop.Cart", "method": "Get"}}],
             "backendRefs": to("cart-b")},
            {"matches": [{"method": {"service": "shop.Cart"},
                          "headers": [{"name": "x-canary", "value": "1"}]}],
             "backendRefs": to("cart-b")},
            {"matches": [{"method": {"service": "shop.Cart"}}],
             "backendRefs": to("cart")},
        ]}})
}

/// Makes `calls` (see the peer's doc) through `addr` as [`AUTHORITY`].
async fn call(addr: SocketAddr, calls: &Value) -> Vec<Vec<Value>> {
    let out = run_peer_client(PEER, &[&addr.to_string(), AUTHORITY, &calls.to_string()]).await;
    serde_json::from_value(out).expect("a list of lists")
}

/// Which server answered outcome `o` (`None` unless it is OK).
fn port_of(o: &Value) -> Option<u64> {
    (o["code"] == "OK").then(|| o["reply"]["port"].as_u64())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_route_from_the_cluster_routes_a_grpc_client_and_gets_its_status() {
    if !require_python_module("grpc") {
        return;
    }
    // The API server refuses loopback endpoint addresses: the servers are
    // stand-in Pods, at addresses in a network namespace (see `pod_net`).
    let Some(pods) = PodNet::new("a GRPCRoute from the cluster") else {
        return;
    };
    let a = start_peer_on(PEER, "127.0.0.1").await;
    let b = start_peer_on(PEER, "127.0.0.1").await;
    let loopback = |p: &Peer| SocketAddr::from(([127, 0, 0, 1], p.port));
    let fake = KubeFake::builder().weft_crds().start().await;
    install_control_plane_account(&fake, &["shop"]).await;
    grpc_service(&fake, "cart", pods.expose(loopback(&a))).await;
    grpc_service(&fake, "cart-b", pods.expose(loopback(&b))).await;
    fake.create(grpc_route()).await;

    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let mut builder = Proxy::builder("").no_config();
    for arg in cp.proxy_args("shop", "client", &cp.token("shop", "client")) {
        builder = builder.arg(arg);
    }
    let proxy = builder.start();
    eventually("the sidecar is ready", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;

    let calls = json!([
        {"path": "/shop.Cart/Get"},
        {"path": "/shop.Cart/Put"},
        {"path": "/shop.Cart/Put", "metadata": [["x-canary", "1"]]},
        {"path": "/shop.Cart/Put", "metadata": [["x-canary", "2"]]},
        {"path": "/shop.Other/Get"},
    ]);
    let (a, b) = (Some(a.port as u64), Some(b.port as u64));
    // Until the sidecar has the route, calls go elsewhere: wait for the
    // route's first rule to take effect, then check every call at once.
    let last = Mutex::new(Value::Null);
    let routed = eventually_or(LIMIT, || async {
        let out = call(proxy.outbound, &json!([{"path": "/shop.Cart/Get"}])).await;
        let ok = port_of(&out[0][0]) == b;
        *last.lock().unwrap() = out[0][0].clone();
        ok.then_some(())
    })
    .await;
    assert!(
        routed.is_some(),
        "Get never reached B; last: {}",
        last.lock().unwrap()
    );
    let out = call(proxy.outbound, &calls).await;
    let o = |i: usize| &out[i][0];
    // Service and method: Get goes to B.
    assert_eq!(port_of(o(0)), b, "Get: {}", o(0));
    assert_eq!(o(0)["reply"]["path"], "/shop.Cart/Get");
    // Service only: any other shop.Cart method goes to the parent, A.
    assert_eq!(port_of(o(1)), a, "Put: {}", o(1));
    // A header match sends the canary to B; another value falls through.
    assert_eq!(port_of(o(2)), b, "canary Put: {}", o(2));
    assert_eq!(o(2)["reply"]["x-canary"], "1", "{}", o(2));
    assert_eq!(port_of(o(3)), a, "x-canary 2: {}", o(3));
    // No rule matches: a gRPC status from the sidecar (both servers answer
    // every method, so it cannot be theirs), not an HTTP error.
    assert_eq!(o(4)["code"], "UNIMPLEMENTED", "{}", o(4));
    assert_eq!(o(4)["metadata"]["x-weft-error"], "no-route", "{}", o(4));

    // Status: our entry for the parent Service, Accepted and ResolvedRefs.
    let last = Mutex::new(Value::Null);
    let ours = eventually_or(LIMIT, || async {
        let r = fake
            .get(GATEWAY, "GRPCRoute", Some("shop"), "cart")
            .await
            .expect("the GRPCRoute is there");
        *last.lock().unwrap() = r.clone();
        let p = r["status"]["parents"]
            .as_array()?
            .iter()
            .find(|p| p["controllerName"] == "weft.dev/mesh")
            .cloned()?;
        let true_for = |k: &str| {
            let c = condition(&p["conditions"], k);
            c["status"] == "True" && c["reason"] == k
        };
        (true_for("Accepted") && true_for("ResolvedRefs")).then_some(p)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "GRPCRoute shop/cart: Accepted and ResolvedRefs True; it is {}",
            last.lock().unwrap()
        )
    });
    assert_eq!(
        ours["parentRef"],
        json!({"group": "", "kind": "Service", "name": "cart"})
    );
    let accepted = condition(&ours["conditions"], "Accepted");
    assert_eq!(accepted["observedGeneration"], 1, "{ours}");
}
