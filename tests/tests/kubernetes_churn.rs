//! The cluster changing under load, end to end with the fake API server,
//! the real control plane reading it and a real sidecar carrying a steady
//! request load:
//! - an endpoint leaving its Service (removed from its EndpointSlice, or
//!   marked terminating as when its Pod is deleted) stops getting new
//!   requests, with no request failing; the time from the change to the
//!   last request sent to it is printed per round (`CHURN_ROUNDS`, default
//!   4; the benchmark runs more in a release build, see the README);
//! - an API server restart with nothing changed is invisible to the
//!   sidecars (no new version), and a change made while it was down comes
//!   back through the 410 on the resumed watch and a relist, while the
//!   sidecar keeps serving every request.
//!
//! Endpoint addresses: the API server refuses loopback ones, so the
//! upstreams are stand-in Pods with addresses in a network namespace the
//! test creates, with no route out (`weft_tests::pod_net`; root needed:
//! without it the tests say why they skip, and fail under CI).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weft_tests::kube_cluster::*;
use weft_tests::kube_fake::KubeFake;
use weft_tests::load::{self, Load};
use weft_tests::pod_net::PodNet;
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const HOST: &str = "reviews.shop";

struct Cluster {
    _pods: PodNet,
    fake: KubeFake,
    cp: ControlPlane,
    proxy: Proxy,
    upstreams: Vec<Upstream>,
}

/// Service `shop/reviews` with `n` endpoints, stand-in Pods (one
/// EndpointSlice each), a control plane, and a sidecar that already routes
/// to every endpoint; None when `test` cannot make a Pod network here.
async fn cluster(test: &str, n: usize) -> Option<Cluster> {
    let pods = PodNet::new(test)?;
    let mut upstreams = Vec::new();
    for i in 0..n {
        upstreams.push(pods.upstream(&format!("reviews-{i}")).await);
    }
    let fake = KubeFake::start().await;
    install_control_plane_account(&fake, &["shop"]).await;
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080, "targetPort": "http"}]}}))
        .await;
    for (i, u) in upstreams.iter().enumerate() {
        fake.create(ready_slice(i, u.addr)).await;
    }
    let kubeconfig = fake.service_account_kubeconfig(CONTROL_PLANE.0, CONTROL_PLANE.1);
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let b = cp.sidecar("shop", "productpage");
    let proxy = b.start();
    eventually("the sidecar routes to every endpoint", LIMIT, || async {
        let config = proxy.admin_get("/config").await.1;
        let ok = get(&proxy.url("/"), &[("host", HOST)]).await.ok()?.status == 200;
        (ok && upstreams
            .iter()
            .all(|u| config.contains(&u.addr.to_string())))
        .then_some(())
    })
    .await;
    Some(Cluster {
        _pods: pods,
        fake,
        cp,
        proxy,
        upstreams,
    })
}

fn ready_slice(i: usize, addr: SocketAddr) -> Value {
    endpoint_slice(
        "shop",
        &format!("reviews-{i}"),
        "reviews",
        addr.port(),
        &[(&ip_of(addr), true)],
    )
}

impl Cluster {
    async fn patch_slice(&self, i: usize, patch: Value) {
        self.fake
            .merge_patch(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some("shop"),
                &format!("reviews-{i}"),
                None,
                patch,
            )
            .await;
    }

    /// Waits until the sidecar's config does (or does not) hold upstream `i`.
    async fn sidecar_holds(&self, i: usize, held: bool) {
        let want = self.upstreams[i].addr.to_string();
        eventually(
            &format!("the sidecar's config holds {want}: {held}"),
            LIMIT,
            || async {
                (self.proxy.admin_get("/config").await.1.contains(&want) == held).then_some(())
            },
        )
        .await;
    }
}

/// Waits until `load` has answered `n` more requests.
async fn more_requests(load: &Load, n: usize) {
    let target = load.count() + n;
    eventually(&format!("{n} more requests"), LIMIT, || async {
        (load.count() >= target).then_some(())
    })
    .await;
}

fn rounds() -> usize {
    std::env::var("CHURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_leaving_its_service_stops_getting_requests_and_none_fails() {
    let Some(c) = cluster("endpoint churn", 3).await else {
        return;
    };
    let load = Load::start(c.proxy.outbound, HOST, 4, Duration::from_millis(10));
    let mut took = Vec::new();
    for round in 0..rounds() {
        let i = round % c.upstreams.len();
        let name = c.upstreams[i].name.clone();
        // The victim is taking requests before it leaves.
        let since = Instant::now();
        eventually(&format!("{name} takes requests"), LIMIT, || async {
            load::last_sent_to(&load.samples(), &name)
                .filter(|t| *t > since)
                .map(|_| ())
        })
        .await;
        // Half the rounds remove the endpoint, half mark it terminating (a
        // deleted Pod: not ready, still serving); the upstream keeps
        // answering either way, as a Pod does during its grace period.
        let how = if round % 2 == 0 {
            "removed"
        } else {
            "terminating"
        };
        let patch = if how == "removed" {
            json!({"endpoints": []})
        } else {
            json!({"endpoints": [{"addresses": [ip_of(c.upstreams[i].addr)],
                "conditions": {"ready": false, "serving": true, "terminating": true}}]})
        };
        let changed = Instant::now();
        c.patch_slice(i, patch).await;
        c.sidecar_holds(i, false).await;
        // Long enough after the sidecar dropped it for a stray request to
        // show: 200 more requests (about half a second of load).
        more_requests(&load, 200).await;
        let samples = load.samples();
        let last = load::last_sent_to(&samples, &name).filter(|t| *t > changed);
        let after = last.map(|t| t - changed).unwrap_or_default();
        println!(
            "round {round}: {name} {how}; last request sent to it {} ms after the change",
            after.as_millis()
        );
        took.push(after);
        // It comes back for the next rounds.
        c.patch_slice(i, json!({"endpoints": [{"addresses": [ip_of(c.upstreams[i].addr)], "conditions": {"ready": true}}]}))
            .await;
        c.sidecar_holds(i, true).await;
    }
    let samples = load.stop().await;
    let failed = load::failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    took.sort();
    let p = |q: f64| {
        took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1].as_millis()
    };
    println!(
        "endpoint removal → last request to it: p50 {} ms, p99 {} ms, max {} ms over {} rounds, {} requests, 0 failed",
        p(0.5),
        p(0.99),
        took.last().map(|d| d.as_millis()).unwrap_or_default(),
        took.len(),
        samples.len()
    );
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(5)),
        "an endpoint kept getting requests for seconds: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_is_invisible_and_a_change_made_while_down_converges() {
    let Some(c) = cluster("API server restart", 2).await else {
        return;
    };
    let load = Load::start(c.proxy.outbound, HOST, 2, Duration::from_millis(10));
    more_requests(&load, 50).await;
    let lists = |v: &Value| v["kubernetes"]["lists"].as_u64().unwrap_or_default();
    let before = c.cp.admin_json("/config").await;
    let sidecar_version = c.proxy.version().await;

    // A restart with nothing changed: the watches reconnect and resume
    // from the version they had seen, which is still the newest (a
    // restarted apiserver's watch cache starts there), so nothing is
    // relisted and nothing pushed.
    c.fake.restart().await;
    more_requests(&load, 100).await;
    let after = c.cp.admin_json("/config").await;
    assert_eq!(
        after["version"], before["version"],
        "no change, no new version"
    );
    assert_eq!(lists(&after), lists(&before), "no relist: {after}");
    assert_eq!(
        c.proxy.version().await,
        sidecar_version,
        "the sidecar saw nothing"
    );

    // Down, an endpoint leaves; up again with a fresh watch cache.
    c.fake.stop().await;
    c.patch_slice(1, json!({"endpoints": []})).await;
    eventually(
        "the control plane notices the API server is gone",
        LIMIT,
        || async { c.cp.logs().contains("retrying").then_some(()) },
    )
    .await;
    more_requests(&load, 50).await;
    c.fake.expire_history();
    c.fake.resume().await;
    c.sidecar_holds(1, false).await;
    more_requests(&load, 100).await;
    let samples = load.stop().await;
    let failed = load::failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    let last = samples.last().and_then(|s| s.outcome.clone().ok());
    assert_eq!(
        last.as_deref(),
        Some("reviews-0"),
        "converged on the endpoint left"
    );
    assert!(c.cp.logs().contains("410 Gone"), "{}", c.cp.logs());
}
