//! Routes and Weft resources from the cluster, end to end: the fake API
//! server holds Services, HTTPRoutes and Weft resources, the real
//! `weft-control-plane --kubernetes` reads them as its ServiceAccount (held
//! to the RBAC rules below), real sidecars in mesh mode in two namespaces
//! route by them, and the control plane writes their status back.
//!
//! GAMMA: a producer route (in the Service's namespace) applies to every
//! caller; a consumer route (in the caller's namespace, parentRef in the
//! Service's) replaces it for callers in its own namespace only. One
//! invalid object is left out with its field path in its status while the
//! rest keeps working; another controller's status entry survives our
//! writes; `observedGeneration` follows the spec. (Which replica writes:
//! `kubernetes_status_lease.rs`.)

use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::Duration;
use weft_tests::kube_cluster::{control_plane_rbac, without_resource};
use weft_tests::pod_net::PodNet;
use weft_tests::route_cluster::{fake_with, get, route, service};
use weft_tests::route_status::{condition, is, route_status};
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const GATEWAY: &str = "gateway.networking.k8s.io/v1";
const WEFT: &str = "weft.dev/v1alpha1";

/// A sidecar in namespace `ns` of the mesh `cp` serves.
async fn sidecar(cp: &ControlPlane, ns: &str) -> Proxy {
    let b = cp.sidecar(ns, "client");
    let proxy = b.start();
    eventually("the sidecar is ready", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    proxy
}

/// Which upstream answered `host` through `proxy` at `path`, and the
/// response's `x-consumer` header.
async fn via(proxy: &Proxy, host: &str, path: &str) -> (u16, String, String) {
    let r = weft_tests::get(&proxy.url(path), &[("host", host)])
        .await
        .unwrap();
    let h = |n: &str| r.header(n).unwrap_or_default().to_string();
    (r.status, h("x-upstream"), h("x-consumer"))
}

/// Waits until `host` at `path` through `proxy` reaches `upstream` with
/// `x-consumer: consumer` ("" for none).
async fn reaches(proxy: &Proxy, host: &str, path: &str, upstream: &str, consumer: &str) {
    let last = Mutex::new((0, String::new(), String::new()));
    let ok = eventually_or(LIMIT, || async {
        let got = via(proxy, host, path).await;
        *last.lock().unwrap() = got.clone();
        (got == (200, upstream.to_string(), consumer.to_string())).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{host}{path}: wanted {upstream} (x-consumer {consumer:?}), got {:?}",
        last.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_routes_and_their_status() {
    let Some(pods) = PodNet::new("producer_and_consumer_routes_and_their_status") else {
        return;
    };
    let v1 = pods.upstream("reviews-v1").await;
    let v2 = pods.upstream("reviews-v2").await;
    let legacy = Upstream::start("legacy").await;
    let fake = fake_with(control_plane_rbac(), true).await;
    service(&fake, "reviews", v1.addr).await;
    service(&fake, "reviews-v2", v2.addr).await;

    // Producer route: every caller of shop/reviews goes to v2.
    fake.create(route(
        "shop",
        "to-v2",
        None,
        json!([{"backendRefs": [{"name": "reviews-v2", "port": 9080}]}]),
    ))
    .await;
    // Another controller already reports on it.
    let foreign = json!({"parentRef": {"group": "", "kind": "Service", "name": "reviews"},
        "controllerName": "example.com/other-mesh",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "theirs",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]});
    fake.merge_patch(
        GATEWAY,
        "HTTPRoute",
        Some("shop"),
        "to-v2",
        Some("status"),
        json!({"status": {"parents": [foreign]}}),
    )
    .await;
    // A route whose backend does not exist, and an invalid one.
    fake.create(route(
        "shop",
        "to-nowhere",
        None,
        json!([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/nowhere"}}],
        "backendRefs": [{"name": "nowhere", "port": 9080}]}]),
    ))
    .await;
    fake.create(route(
        "shop",
        "bad-regex",
        None,
        json!([{
        "matches": [{"path": {"type": "PathPrefix", "value": "/bad"},
            "headers": [{"type": "RegularExpression", "name": "x-user", "value": "("}]}],
        "backendRefs": [{"name": "reviews", "port": 9080}]}]),
    ))
    .await;
    // Weft resources: an external Backend with a valid TrafficPolicy, and
    // an invalid TrafficPolicy.
    fake.create(json!({"apiVersion": WEFT, "kind": "Backend",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {"port": 80, "endpoints": [{"address": legacy.addr.to_string()}]}}))
        .await;
    fake.create(json!({"apiVersion": WEFT, "kind": "TrafficPolicy",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Backend", "name": "legacy"}, "loadBalancer": {"policy": "RoundRobin"},
            "hedge": {"delay": "50ms", "maxHedges": 2}}}))
        .await;
    fake.create(json!({"apiVersion": WEFT, "kind": "TrafficPolicy",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Backend", "name": "legacy"}, "panicThreshold": 150}}))
        .await;

    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let web = sidecar(&cp, "web").await;
    let other = sidecar(&cp, "other").await;

    // The producer route applies to callers in both namespaces.
    reaches(&web, "reviews.shop", "/", "reviews-v2", "").await;
    reaches(&other, "reviews.shop:9080", "/", "reviews-v2", "").await;

    // Status: Accepted and ResolvedRefs, next to the other controller's.
    let mine = route_status(&fake, "HTTPRoute", "shop", "to-v2", "accepted", |p| {
        is(&condition(&p["conditions"], "Accepted"), "True", "Accepted")
            && is(
                &condition(&p["conditions"], "ResolvedRefs"),
                "True",
                "ResolvedRefs",
            )
    })
    .await;
    let r = get(&fake, GATEWAY, "HTTPRoute", "shop", "to-v2").await;
    assert_eq!(r["status"]["parents"][0], foreign, "theirs survives: {r}");
    assert_eq!(mine["parentRef"], r["spec"]["parentRefs"][0]);
    let accepted = condition(&mine["conditions"], "Accepted");
    assert_eq!(accepted["observedGeneration"], 1);

    let nowhere = route_status(
        &fake,
        "HTTPRoute",
        "shop",
        "to-nowhere",
        "BackendNotFound",
        |p| {
            is(
                &condition(&p["conditions"], "ResolvedRefs"),
                "False",
                "BackendNotFound",
            )
        },
    )
    .await;
    let message = condition(&nowhere["conditions"], "ResolvedRefs")["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("spec.rules[0].backendRefs[0].name"),
        "{message}"
    );
    let bad = route_status(&fake, "HTTPRoute", "shop", "bad-regex", "refused", |p| {
        is(
            &condition(&p["conditions"], "Accepted"),
            "False",
            "UnsupportedValue",
        )
    })
    .await;
    let message = condition(&bad["conditions"], "Accepted")["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("spec.rules[0].matches[0].headers[0].value"),
        "{message}"
    );
    // A parent Service that does not exist.
    let mut orphan = route(
        "shop",
        "orphan",
        None,
        json!([{"backendRefs": [{"name": "reviews", "port": 9080}]}]),
    );
    orphan["spec"]["parentRefs"][0]["name"] = json!("ghost");
    fake.create(orphan).await;
    let orphan = route_status(
        &fake,
        "HTTPRoute",
        "shop",
        "orphan",
        "NoMatchingParent",
        |p| {
            is(
                &condition(&p["conditions"], "Accepted"),
                "False",
                "NoMatchingParent",
            )
        },
    )
    .await;
    assert_eq!(orphan["parentRef"]["name"], "ghost");
    // The invalid route is left out; the rest serves.
    reaches(&web, "reviews.shop", "/bad", "reviews-v2", "").await;

    // Weft resources: applied, or Ready False with the field path.
    reaches(&web, "legacy.shop", "/", "legacy", "").await;
    let ready = |kind: &'static str, name: &'static str, status: &'static str| {
        let fake = &fake;
        async move {
            let last = Mutex::new(Value::Null);
            let ok = eventually_or(LIMIT, || async {
                let o = get(fake, WEFT, kind, "shop", name).await;
                let c = condition(&o["status"]["conditions"], "Ready");
                *last.lock().unwrap() = o;
                (c["status"] == status).then_some(c)
            })
            .await;
            ok.unwrap_or_else(|| {
                panic!(
                    "{kind} shop/{name}: Ready {status}? {}",
                    last.lock().unwrap()
                )
            })
        }
    };
    ready("Backend", "legacy", "True").await;
    assert_eq!(
        ready("TrafficPolicy", "legacy", "True").await["reason"],
        "Ready"
    );
    let broken = ready("TrafficPolicy", "broken", "False").await;
    assert_eq!(broken["reason"], "Invalid");
    assert!(
        broken["message"]
            .as_str()
            .unwrap()
            .contains("spec.panicThreshold"),
        "{broken}"
    );
    let config = web.admin_get("/config").await.1;
    assert!(config.contains("RoundRobin"), "the TrafficPolicy: {config}");
    assert!(config.contains("maxHedges"), "its hedge block: {config}");
    assert!(
        !config.contains("panicThreshold"),
        "the broken one: {config}"
    );
    let cp_config = cp.admin_json("/config").await;
    assert!(
        cp_config["kubernetes"]["rejected"]["HTTPRoute shop/bad-regex"].is_string(),
        "{cp_config}"
    );

    // A consumer route in `web` for shop/reviews: for callers in `web`
    // only, it replaces the producer route (its rule has no backendRefs:
    // the parent Service itself).
    fake.create(route(
        "web",
        "mine",
        Some("shop"),
        json!([{"filters": [{"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"set": [{"name": "x-consumer", "value": "web"}]}}]}]),
    ))
    .await;
    reaches(&web, "reviews.shop", "/", "reviews-v1", "web").await;
    for _ in 0..5 {
        assert_eq!(
            via(&other, "reviews.shop", "/").await,
            (200, "reviews-v2".into(), String::new())
        );
    }
    route_status(&fake, "HTTPRoute", "web", "mine", "accepted", |p| {
        is(&condition(&p["conditions"], "Accepted"), "True", "Accepted")
    })
    .await;

    // A consumer route to a Service of another namespace that is not its
    // parent: refused until a ReferenceGrant there allows it.
    let mut cross = route(
        "web",
        "cross",
        Some("shop"),
        json!([{"backendRefs": [{"name": "reviews", "namespace": "shop", "port": 9080}]}]),
    );
    cross["spec"]["parentRefs"][0]["name"] = json!("reviews-v2");
    fake.create(cross).await;
    let refused = route_status(&fake, "HTTPRoute", "web", "cross", "RefNotPermitted", |p| {
        is(
            &condition(&p["conditions"], "ResolvedRefs"),
            "False",
            "RefNotPermitted",
        )
    })
    .await;
    let message = condition(&refused["conditions"], "ResolvedRefs")["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("spec.rules[0].backendRefs[0].namespace"),
        "{message}"
    );
    reaches(&web, "reviews-v2.shop", "/", "reviews-v2", "").await;
    fake.create(json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "web-to-reviews", "namespace": "shop"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "web"}],
                 "to": [{"group": "", "kind": "Service", "name": "reviews"}]}}))
    .await;
    route_status(&fake, "HTTPRoute", "web", "cross", "granted", |p| {
        is(
            &condition(&p["conditions"], "ResolvedRefs"),
            "True",
            "ResolvedRefs",
        )
    })
    .await;
    reaches(&web, "reviews-v2.shop", "/", "reviews-v1", "").await;
    reaches(&other, "reviews-v2.shop", "/", "reviews-v2", "").await;

    // A spec change: observedGeneration follows, the transition time of an
    // unchanged condition stays, and the other controller's entry stays.
    let writes = |v: &Value| v["kubernetes"]["status_writes"].as_u64().unwrap();
    fake.merge_patch(
        GATEWAY,
        "HTTPRoute",
        Some("shop"),
        "to-v2",
        None,
        json!({"spec": {"hostnames": ["reviews.example.com"]}}),
    )
    .await;
    let after = route_status(&fake, "HTTPRoute", "shop", "to-v2", "generation 2", |p| {
        condition(&p["conditions"], "Accepted")["observedGeneration"] == 2
    })
    .await;
    assert_eq!(
        condition(&after["conditions"], "Accepted")["lastTransitionTime"],
        accepted["lastTransitionTime"]
    );
    let r = get(&fake, GATEWAY, "HTTPRoute", "shop", "to-v2").await;
    assert_eq!(r["status"]["parents"][0], foreign, "{r}");
    reaches(&other, "reviews.example.com", "/", "reviews-v2", "").await;

    // No write loop: with nothing changing, nothing more is written.
    let versions = || async {
        let mut v = Vec::new();
        for (ns, name) in [("shop", "to-v2"), ("shop", "to-nowhere"), ("web", "mine")] {
            let r = get(&fake, GATEWAY, "HTTPRoute", ns, name).await;
            v.push(r["metadata"]["resourceVersion"].clone());
        }
        v
    };
    let before = (writes(&cp.admin_json("/config").await), versions().await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = (writes(&cp.admin_json("/config").await), versions().await);
    assert_eq!(after, before, "nothing rewrote a route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_not_installed_or_not_permitted_is_named_and_the_rest_works() {
    let Some(pods) =
        PodNet::new("a_kind_not_installed_or_not_permitted_is_named_and_the_rest_works")
    else {
        return;
    };
    let v1 = pods.upstream("reviews-v1").await;
    // No Weft CRDs; GRPCRoutes not permitted.
    let mut rules = control_plane_rbac();
    without_resource(&mut rules[0], "grpcroutes");
    let fake = fake_with(rules, false).await;
    service(&fake, "reviews", v1.addr).await;
    fake.create(route(
        "shop",
        "r",
        None,
        json!([{"backendRefs": [{"name": "reviews", "port": 9080}]}]),
    ))
    .await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let status = cp.admin_json("/config").await;
    let unavailable = &status["kubernetes"]["unavailable"];
    assert!(
        unavailable["backends.weft.dev"]
            .as_str()
            .is_some_and(|m| m.contains("not installed")),
        "{status}"
    );
    assert!(
        unavailable["grpcroutes.gateway.networking.k8s.io"]
            .as_str()
            .is_some_and(|m| m.contains("forbidden")),
        "{status}"
    );
    route_status(&fake, "HTTPRoute", "shop", "r", "accepted", |p| {
        is(&condition(&p["conditions"], "Accepted"), "True", "Accepted")
    })
    .await;
    let proxy = sidecar(&cp, "shop").await;
    reaches(&proxy, "reviews", "/", "reviews-v1", "").await;
}
