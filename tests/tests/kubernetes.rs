//! The control plane as a Kubernetes control plane, end to end: the fake
//! API server (`weft_tests::kube_fake`) holds a Service and its
//! EndpointSlices, the real `weft-control-plane --kubernetes` reads them
//! as its ServiceAccount (held to the RBAC rules below), and a real
//! `weft-proxy` in mesh mode routes to the endpoints by the Service's
//! names. Endpoint changes reach the sidecar. The control plane reaches the
//! API server through a relay the test can cut: while cut, sidecars keep
//! serving; a change made meanwhile, with the watch history expired, comes
//! back as a 410 on the resumed watch, a relist, and convergence. An
//! endpoint whose Pod carries the injector's annotation reaches the
//! sidecar with the identity of the Pod's ServiceAccount, and a sidecar
//! standing in for that Pod is reached over mTLS as exactly that account.
//!
//! Endpoint addresses: the API server refuses loopback ones, so the
//! upstreams are stand-in Pods with addresses in a network namespace the
//! test creates, with no route out (`weft_tests::pod_net`; root needed:
//! without it the tests say why they skip, and fail under CI).

use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use weft_tests::kube_cluster::{control_plane_rbac, install_control_plane_account};
use weft_tests::kube_fake::KubeFake;
use weft_tests::pod_net::PodNet;
use weft_tests::relay::Relay;
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

fn slice(name: &str, addr: SocketAddr, ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": {"ready": ready}}]})
}

/// A cluster with Service `shop/reviews` (port 9080, a named target port)
/// and two EndpointSlices, one ready endpoint each, plus one endpoint that
/// is not ready; a control plane reading it; a sidecar in `shop`.
struct Cluster {
    pods: PodNet,
    fake: KubeFake,
    cluster_ip: String,
    relay: Relay,
    cp: ControlPlane,
    proxy: Proxy,
    upstreams: [Upstream; 2],
}

/// None when `test` cannot make a Pod network here (see `pod_net`).
async fn cluster(test: &str) -> Option<Cluster> {
    let pods = PodNet::new(test)?;
    let upstreams = [
        pods.upstream("reviews-1").await,
        pods.upstream("reviews-2").await,
    ];
    let fake = KubeFake::start().await;
    install_control_plane_account(&fake, &["shop"]).await;
    let service = fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": "web"}]}}))
        .await;
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    let mut a = slice("reviews-a", upstreams[0].addr, true);
    // Not ready: never an endpoint (the address is never dialled).
    a["endpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!({"addresses": ["10.9.9.9"], "conditions": {"ready": false}}));
    fake.create(a).await;
    fake.create(slice("reviews-b", upstreams[1].addr, true))
        .await;

    // The control plane's kubeconfig names the relay (same IP as the fake,
    // so its serving certificate still matches).
    let relay = Relay::start(fake.addr()).await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(fake.url()), "{text}");
    std::fs::write(
        &kubeconfig,
        text.replace(fake.url(), &format!("https://{}", relay.addr)),
    )
    .unwrap();
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let b = cp.sidecar("shop", "productpage");
    let proxy = b.start();
    eventually("the sidecar is ready", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    Some(Cluster {
        pods,
        fake,
        cluster_ip,
        relay,
        cp,
        proxy,
        upstreams,
    })
}

/// Which upstream answered a request for `host` through the sidecar.
async fn via(proxy: &Proxy, host: &str) -> String {
    let r = get(&proxy.url("/"), &[("host", host)]).await.unwrap();
    assert_eq!(r.status, 200, "{host}: {}", r.text());
    r.header("x-upstream").unwrap_or_default().to_string()
}

/// Waits until the sidecar's config in force does (or does not) hold `addr`.
async fn sidecar_holds(proxy: &Proxy, addr: SocketAddr, held: bool) {
    let want = addr.to_string();
    eventually(
        &format!(
            "the sidecar's config {} {want}",
            if held { "holds" } else { "drops" }
        ),
        LIMIT,
        || async { (proxy.admin_get("/config").await.1.contains(&want) == held).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_the_sidecar_and_follows_its_endpoint_slices() {
    let Some(c) = cluster("a_service_reaches_the_sidecar_and_follows_its_endpoint_slices").await
    else {
        return;
    };
    for host in [
        "reviews",
        "reviews:9080",
        "reviews.shop",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
        "reviews.shop.svc.cluster.local:9080",
    ] {
        let who = via(&c.proxy, host).await;
        assert!(who == "reviews-1" || who == "reviews-2", "{host}: {who}");
    }
    // By ClusterIP:port too (as an HTTP client addressing the IP would).
    let who = via(&c.proxy, &format!("{}:9080", c.cluster_ip)).await;
    assert!(who == "reviews-1" || who == "reviews-2", "{who}");
    let config = c.proxy.admin_get("/config").await.1;
    for u in &c.upstreams {
        assert!(config.contains(&u.addr.to_string()), "{config}");
    }
    assert!(
        !config.contains("10.9.9.9"),
        "a not-ready endpoint: {config}"
    );

    // Remove the endpoint that just answered from its slice: it leaves the
    // sidecar's config and gets no more requests.
    let who = via(&c.proxy, "reviews").await;
    let (gone, stays) = if who == "reviews-1" { (0, 1) } else { (1, 0) };
    let slice_name = ["reviews-a", "reviews-b"][gone];
    c.fake
        .merge_patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("shop"),
            slice_name,
            None,
            json!({"endpoints": []}),
        )
        .await;
    sidecar_holds(&c.proxy, c.upstreams[gone].addr, false).await;
    for _ in 0..20 {
        assert_eq!(via(&c.proxy, "reviews").await, c.upstreams[stays].name);
    }
    let status = c.cp.admin_json("/config").await;
    assert_eq!(
        status["services"], 2,
        "shop/reviews and default/kubernetes: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_missed_while_cut_off_comes_back_through_410_and_a_relist() {
    let Some(c) =
        cluster("a_change_missed_while_cut_off_comes_back_through_410_and_a_relist").await
    else {
        return;
    };
    let lists = |v: &Value| v["kubernetes"]["lists"].as_u64().unwrap_or_default();
    let before = c.cp.admin_json("/config").await;
    // Services, EndpointSlices, Pods, HTTPRoutes, GRPCRoutes,
    // ReferenceGrants (the Weft CRDs are not installed here).
    assert_eq!(lists(&before), 7, "one list per resource: {before}");
    via(&c.proxy, "reviews.shop").await;

    // Cut off from the API server, the control plane keeps what it has and
    // the sidecar keeps serving.
    c.relay.cut();
    // Meanwhile an endpoint leaves, and the history that would tell a
    // resumed watch so is compacted away.
    c.fake
        .merge_patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("shop"),
            "reviews-b",
            None,
            json!({"endpoints": [{"addresses": [c.upstreams[1].addr.ip().to_string()], "conditions": {"ready": false}}]}),
        )
        .await;
    c.fake.expire_history();
    eventually("the control plane notices the cut", LIMIT, || async {
        c.cp.logs().contains("retrying").then_some(())
    })
    .await;
    for _ in 0..5 {
        let who = via(&c.proxy, "reviews.shop").await;
        assert!(who == "reviews-1" || who == "reviews-2", "{who}");
    }
    let during = c.cp.admin_json("/config").await;
    assert_eq!(during["version"], before["version"], "nothing changed yet");

    // Back: the resumed watch is told 410, relists, and converges.
    c.relay.restore();
    // Only the EndpointSlices' history moved past the watch's version; the
    // Services' and Pods' watches resume where they were.
    eventually("the EndpointSlices relisted", LIMIT, || async {
        (lists(&c.cp.admin_json("/config").await) >= 8).then_some(())
    })
    .await;
    assert!(c.cp.logs().contains("410 Gone"), "{}", c.cp.logs());
    sidecar_holds(&c.proxy, c.upstreams[1].addr, false).await;
    for _ in 0..10 {
        assert_eq!(via(&c.proxy, "reviews.shop").await, "reviews-1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_and_serving_starts_once_granted() {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    fake.create_namespace("shop", json!({})).await;
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "weft-control-plane", "namespace": "weft-system"}}))
        .await;
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"ports": [{"port": 80}]}}))
        .await;
    let mut rbac = control_plane_rbac();
    let binding = rbac.remove(1);
    for o in rbac {
        fake.create(o).await;
    }
    // No binding yet: every list is refused.
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes_waiting(&kubeconfig);
    let ready = || async {
        get(&format!("http://{}/ready", cp.admin), &[])
            .await
            .unwrap()
            .status
    };
    eventually("every refusal logged by resource", LIMIT, || async {
        let logs = cp.logs();
        (logs.contains("forbidden to list/watch services")
            && logs.contains("forbidden to list/watch endpointslices.discovery.k8s.io")
            && logs.contains("forbidden to list/watch pods"))
        .then_some(())
    })
    .await;
    assert_eq!(ready().await, 503);
    let status = cp.admin_json("/config").await;
    assert!(
        status["kubernetes"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("forbidden to list/watch")),
        "{status}"
    );
    assert_eq!(status["kubernetes"]["synced"], false);

    fake.create(binding).await;
    eventually(
        "serving once the binding exists",
        Duration::from_secs(60),
        || async { (ready().await == 200).then_some(()) },
    )
    .await;
    assert!(cp.logs().contains("weft-control-plane serving"));
    let status = cp.admin_json("/config").await;
    assert_eq!(
        status["services"], 2,
        "shop/reviews and default/kubernetes: {status}"
    );
}

/// The identity the sidecar expects of endpoint `addr` (`None`: plaintext),
/// or nothing while the sidecar does not hold it.
async fn identity_of(proxy: &Proxy, addr: SocketAddr) -> Option<Option<String>> {
    let (code, body) = proxy.admin_get("/endpoints").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    fn find(v: &Value, addr: &str) -> Option<Option<String>> {
        match v {
            Value::Object(m) if m.get("address").and_then(Value::as_str) == Some(addr) => {
                Some(m.get("identity").and_then(Value::as_str).map(String::from))
            }
            Value::Object(m) => m.values().find_map(|v| find(v, addr)),
            Value::Array(a) => a.iter().find_map(|v| find(v, addr)),
            _ => None,
        }
    }
    find(&v, &addr.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_pods_endpoint_carries_its_service_account_identity() {
    let Some(c) = cluster("a_meshed_pods_endpoint_carries_its_service_account_identity").await
    else {
        return;
    };
    let ip = c.pods.pod_ip();
    // Two Pods of Service shop/ratings on one stand-in Pod address (each
    // slice serves its own port): ratings-1 meshed as ServiceAccount `ratings`,
    // ratings-2 not meshed. Nothing listens there; only the config matters.
    for (name, annotations) in [
        ("ratings-1", json!({"weft.dev/injected": "proxy"})),
        ("ratings-2", json!({})),
    ] {
        c.fake
            .create(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
                "spec": {"serviceAccountName": "ratings", "containers": [{"name": "app", "image": "ratings"}]}}))
            .await;
        c.fake
            .merge_patch(
                "v1",
                "Pod",
                Some("shop"),
                name,
                Some("status"),
                json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}}),
            )
            .await;
    }
    c.fake
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "ratings", "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 9080}]}}))
        .await;
    let meshed = SocketAddr::new(IpAddr::V4(ip), 1);
    let plain = SocketAddr::new(IpAddr::V4(ip), 2);
    for (slice, pod, addr) in [
        ("ratings-a", "ratings-1", meshed),
        ("ratings-b", "ratings-2", plain),
    ] {
        c.fake
            .create(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice, "namespace": "shop", "labels": {"kubernetes.io/service-name": "ratings"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}}]}))
            .await;
    }
    // The sidecar learns the name on demand; the request itself fails.
    let want = "spiffe://weft.local/ns/shop/sa/ratings";
    eventually("the sidecar holds shop/ratings", LIMIT, || async {
        let _ = get(&c.proxy.url("/"), &[("host", "ratings.shop")]).await;
        (identity_of(&c.proxy, meshed).await == Some(Some(want.to_string()))
            && identity_of(&c.proxy, plain).await == Some(None))
        .then_some(())
    })
    .await;
    let config = c.proxy.admin_get("/config").await.1;
    assert_eq!(config.matches(want).count(), 1, "{config}");

    // The injector's annotation on the second Pod: its endpoint follows.
    c.fake
        .merge_patch(
            "v1",
            "Pod",
            Some("shop"),
            "ratings-2",
            None,
            json!({"metadata": {"annotations": {"weft.dev/injected": "proxy"}}}),
        )
        .await;
    eventually("the second endpoint is meshed", LIMIT, || async {
        (identity_of(&c.proxy, plain).await == Some(Some(want.to_string()))).then_some(())
    })
    .await;
    assert_eq!(
        c.proxy.admin_get("/config").await.1.matches(want).count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meshed_pod_is_reached_over_mtls_as_its_service_account() {
    let Some(c) = cluster("a_meshed_pod_is_reached_over_mtls_as_its_service_account").await else {
        return;
    };
    let ip = c.pods.pod_ip();
    // The stand-in Pod: a sidecar for shop/ratings (ServiceAccount
    // `ratings`, certificate from the control plane) in front of an app.
    // Its inbound listens on loopback; a relay on this host's address (the
    // endpoint the API server accepts) carries the TLS bytes to it.
    let app = Upstream::start("ratings-app").await;
    let token = c.cp.token("shop", "ratings");
    let mut b = Proxy::builder("")
        .no_config()
        .arg("--service")
        .arg("ratings")
        .app(app.addr);
    for a in c.cp.proxy_args("shop", "ratings", &token) {
        b = b.arg(a);
    }
    let ratings = b.start();
    eventually("the ratings sidecar is ready", LIMIT, || async {
        (ratings.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let stand_in = c.pods.expose_at(ip, 0, ratings.inbound);

    // Pod ratings-1 runs as `ratings`; Pod fake-1 claims to run as `other`
    // while its endpoint is the same sidecar. Both meshed.
    for (pod, sa, service) in [
        ("ratings-1", "ratings", "ratings"),
        ("fake-1", "other", "fake"),
    ] {
        c.fake
            .create(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "shop", "annotations": {"weft.dev/injected": "proxy"}},
                "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "ratings"}]}}))
            .await;
        c.fake
            .merge_patch(
                "v1",
                "Pod",
                Some("shop"),
                pod,
                Some("status"),
                json!({"status": {"phase": "Running", "podIPs": [{"ip": ip.to_string()}]}}),
            )
            .await;
        c.fake
            .create(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service, "namespace": "shop"},
                "spec": {"ports": [{"name": "http", "port": 9080}]}}))
            .await;
        c.fake
            .create(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("{service}-a"), "namespace": "shop", "labels": {"kubernetes.io/service-name": service}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": stand_in.port(), "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true},
                    "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod}}]}))
            .await;
    }

    // Through the caller's sidecar, over mTLS, to the app; the app sees the
    // caller's verified identity.
    let r = eventually("ratings answers through both sidecars", LIMIT, || async {
        let r = get(&c.proxy.url("/headers"), &[("host", "ratings.shop")])
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.header("x-upstream"), Some("ratings-app"));
    let seen: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        seen["x-weft-peer-identity"].as_str(),
        Some("spiffe://weft.local/ns/shop/sa/productpage"),
        "{seen}"
    );
    assert_eq!(
        identity_of(&c.proxy, stand_in).await,
        Some(Some("spiffe://weft.local/ns/shop/sa/ratings".into()))
    );

    // The same sidecar where a Pod of another account is expected: refused.
    let expected = "spiffe://weft.local/ns/shop/sa/other";
    eventually("shop/fake is held with its identity", LIMIT, || async {
        let _ = get(&c.proxy.url("/"), &[("host", "fake.shop")]).await;
        let config = c.proxy.admin_get("/config").await.1;
        config.contains(expected).then_some(())
    })
    .await;
    let r = get(&c.proxy.url("/"), &[("host", "fake.shop")])
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        app.requests(),
        1,
        "only the ratings request reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_shows_which_pods_of_an_injected_namespace_lack_a_sidecar() {
    let Some(c) =
        cluster("the_admin_page_shows_which_pods_of_an_injected_namespace_lack_a_sidecar").await
    else {
        return;
    };
    let coverage = || async {
        let status = c.cp.admin_json("/config").await;
        status["kubernetes"]["coverage"].clone()
    };
    // Nothing meshed and no namespace labelled: nothing to report.
    assert_eq!(coverage().await["namespaces"], json!([]));
    // Injection is turned on for shop, where one Pod was injected, one
    // predates the label and one opted out.
    c.fake
        .merge_patch(
            "v1",
            "Namespace",
            None,
            "shop",
            None,
            json!({"metadata": {"labels": {"weft.dev/inject": "enabled"}}}),
        )
        .await;
    for (name, labels, annotations) in [
        ("web-0", json!({}), json!({"weft.dev/injected": "proxy"})),
        ("old-0", json!({"app": "old"}), json!({})),
        ("batch-0", json!({"weft.dev/inject": "disabled"}), json!({})),
    ] {
        c.fake
            .create(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "shop", "labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]}}))
            .await;
    }
    let want = json!({"namespaces": [{"namespace": "shop", "injection": "enabled", "pods": 3,
        "meshed": 1, "not_meshed": 1, "not_meshed_pods": ["old-0"], "opted_out": 1}],
        "pods_to_restart": 1});
    eventually("the coverage report", LIMIT, || async {
        (coverage().await == want).then_some(())
    })
    .await;
    // The old Pod is replaced by an injected one.
    c.fake.delete("v1", "Pod", Some("shop"), "old-0").await;
    c.fake
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "old-1", "namespace": "shop", "annotations": {"weft.dev/injected": "proxy"}},
            "spec": {"containers": [{"name": "app", "image": "app"}]}}))
        .await;
    eventually("no Pod left to restart", LIMIT, || async {
        let c = coverage().await;
        (c["pods_to_restart"] == 0 && c["namespaces"][0]["meshed"] == 2).then_some(())
    })
    .await;
}
