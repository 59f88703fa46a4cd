//! Success-rate ejection end to end: five real upstreams behind a real
//! sidecar, one of them answering 503 to every third request. Consecutive
//! failures are set too high to eject anything, so only the success-rate
//! sweep can; it must eject exactly the degraded endpoint, and nothing at
//! all when fewer than `minimumHosts` endpoints qualify. File mode, mesh
//! mode (the TrafficPolicy streamed by the control plane) and Kubernetes
//! (the TrafficPolicy a custom object in the fake API server, through its
//! CRD's schema).

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_tests::*;

/// Five upstreams; the last answers 503 to every third request.
async fn upstreams() -> Vec<Arc<Faulty>> {
    let mut ups = Vec::new();
    for name in ["a", "b", "c", "d", "degraded"] {
        ups.push(Faulty::start(name).await);
    }
    ups[4].set(Mode::FailEvery(503, 3));
    ups
}

/// Backend `svc` over `ups` with success-rate ejection judged every 200 ms.
fn config(ups: &[Arc<Faulty>], minimum_hosts: u32) -> String {
    let eps: Vec<String> = ups
        .iter()
        .map(|u| format!("{{address: \"{}\"}}", u.addr))
        .collect();
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{}]\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  \
         loadBalancer: {{policy: RoundRobin}}\n  outlierDetection:\n    consecutiveFailures: 1000\n    interval: 200ms\n    \
         successRate: {{minimumHosts: {minimum_hosts}, requestVolume: 5, stdevFactor: 1.9}}\n",
        eps.join(", ")
    )
}

/// Keeps `clients` connections sending GETs for `svc` until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn start(outbound: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        for _ in 0..clients {
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = Conn::open(outbound).await.ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let req = http::Request::get("/")
                        .header("host", "svc")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    if c.send(req).await.is_err() {
                        conn = None;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Load { stop, sent }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Backend `default/svc` as `/endpoints` shows it.
async fn svc(p: &Proxy) -> Option<Value> {
    backend(p, "default/svc").await
}

/// Backend `key` as `/endpoints` shows it.
async fn backend(p: &Proxy, key: &str) -> Option<Value> {
    let (status, body) = p.admin_get("/endpoints").await;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["backends"]
        .as_array()?
        .iter()
        .find(|b| b["backend"] == key)
        .cloned()
}

/// Each endpoint's address and ejection reason (`None`: not ejected).
fn ejections(b: &Value) -> Vec<(String, Option<String>)> {
    b["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .map(|e| {
                    let out = e["ejection"] != "none";
                    let reason = e["ejectionReason"].as_str().map(str::to_owned);
                    assert_eq!(out, reason.is_some(), "a reason exactly when ejected: {e}");
                    (e["address"].as_str().unwrap_or("").to_owned(), reason)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for the degraded endpoint's ejection, then checks it stays the
/// only one through three more sweeps.
async fn only_the_degraded_endpoint_is_ejected(p: &Proxy, ups: &[Arc<Faulty>]) {
    only_the_degraded_endpoint_of_is_ejected(p, "default/svc", ups).await
}

async fn only_the_degraded_endpoint_of_is_ejected(p: &Proxy, key: &str, ups: &[Arc<Faulty>]) {
    let degraded = ups[4].addr.to_string();
    let b = eventually(
        "the degraded endpoint to be ejected",
        Duration::from_secs(30),
        || async {
            let b = backend(p, key).await?;
            ejections(&b)
                .iter()
                .any(|(a, r)| *a == degraded && r.is_some())
                .then_some(b)
        },
    )
    .await;
    let expect: Vec<(String, Option<String>)> = ups
        .iter()
        .map(|u| {
            let reason = (u.addr == ups[4].addr).then(|| "success-rate".to_owned());
            (u.addr.to_string(), reason)
        })
        .collect();
    assert_eq!(ejections(&b), expect, "{b}");
    let sweeps = b["successRate"]["sweeps"].as_u64().unwrap();
    // The remaining four are all sound, and four is under minimumHosts:
    // nothing more goes, through three more sweeps.
    let b = eventually("three more sweeps", Duration::from_secs(10), || async {
        let b = backend(p, key).await?;
        (b["successRate"]["sweeps"].as_u64()? >= sweeps + 3).then_some(b)
    })
    .await;
    assert_eq!(ejections(&b), expect, "{b}");
    for e in b["endpoints"].as_array().unwrap() {
        if e["address"] != degraded.as_str() {
            assert!(
                e["successRate"]["lastTries"].as_u64().unwrap() >= 5,
                "the peers carry the traffic: {e}"
            );
        }
    }
    assert_eq!(
        p.metric("weft_ejections_total", &["reason=\"success-rate\""])
            .await,
        1.0
    );
    assert_eq!(
        p.metric("weft_ejections_total", &["reason=\"consecutive\""])
            .await,
        0.0
    );
    assert!(
        p.logs().contains("success rate far below its peers'"),
        "the ejection is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_degraded_endpoint_of_five_is_ejected_for_its_success_rate() {
    let ups = upstreams().await;
    let p = Proxy::start(config(&ups, 5));
    let load = Load::start(p.outbound, 4);
    only_the_degraded_endpoint_is_ejected(&p, &ups).await;
    assert!(load.sent.load(Ordering::Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_endpoints_than_minimum_hosts_qualifying_ejects_nothing() {
    let ups = upstreams().await;
    // The same five, and the same traffic, but six must qualify.
    let p = Proxy::start(config(&ups, 6));
    let _load = Load::start(p.outbound, 4);
    // Three sweeps in which all five had the volume to be judged: the
    // degraded one would have gone in any of them with minimumHosts 5.
    let judged = std::cell::RefCell::new(BTreeSet::new());
    let p = &p;
    let b = eventually(
        "three sweeps with all five endpoints qualifying",
        Duration::from_secs(30),
        || {
            let judged = &judged;
            async move {
                let b = svc(p).await?;
                let sr = &b["successRate"];
                if sr["lastQualifying"] == 5 {
                    judged.borrow_mut().insert(sr["sweeps"].as_u64()?);
                }
                assert!(
                    ejections(&b).iter().all(|(_, r)| r.is_none()),
                    "nothing may be ejected: {b}"
                );
                (judged.borrow().len() >= 3).then_some(b)
            }
        },
    )
    .await;
    assert_eq!(b["successRate"]["lastThreshold"], Value::Null, "{b}");
    let degraded = ups[4].addr.to_string();
    let e = b["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == degraded.as_str())
        .unwrap();
    assert!(e["consecutiveFailures"].as_u64().unwrap() < 1000, "{e}");
    assert_eq!(p.metric("weft_ejections_total", &[]).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_ejection_works_with_the_policy_from_the_control_plane() {
    let ups = upstreams().await;
    let cp = ControlPlane::start(&config(&ups, 5), &[]);
    let builder = cp.sidecar("default", "client");
    let p = builder.start();
    eventually("the sidecar is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let _load = Load::start(p.outbound, 4);
    eventually(
        "svc with its TrafficPolicy streamed to the sidecar",
        Duration::from_secs(20),
        || async { svc(&p).await.filter(|b| b["successRate"].is_object()) },
    )
    .await;
    only_the_degraded_endpoint_is_ejected(&p, &ups).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_rate_ejection_works_with_the_policy_from_kubernetes() {
    use serde_json::json;
    use weft_tests::kube_cluster::control_plane_rbac;
    let ups = upstreams().await;
    let fake = weft_tests::route_cluster::fake_with(control_plane_rbac(), true).await;
    let eps: Vec<Value> = ups
        .iter()
        .map(|u| json!({"address": u.addr.to_string()}))
        .collect();
    fake.create(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "svc", "namespace": "shop"},
        "spec": {"endpoints": eps}}))
        .await;
    // The CRD keeps the block (a structural schema would prune an unknown field).
    let policy = fake
        .create(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "svc", "namespace": "shop"},
            "spec": {"targetRef": {"kind": "Backend", "name": "svc"},
                "loadBalancer": {"policy": "RoundRobin"},
                "outlierDetection": {"consecutiveFailures": 1000, "interval": "200ms",
                    "successRate": {"minimumHosts": 5, "requestVolume": 5, "stdevFactor": 1.9}}}}),
        )
        .await;
    assert_eq!(
        policy["spec"]["outlierDetection"]["successRate"]["stdevFactor"],
        1.9
    );
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let builder = cp.sidecar("shop", "client");
    let p = builder.start();
    eventually("the sidecar is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let _load = Load::start(p.outbound, 4);
    eventually(
        "shop/svc with its TrafficPolicy streamed to the sidecar",
        Duration::from_secs(20),
        || async {
            backend(&p, "shop/svc")
                .await
                .filter(|b| b["successRate"].is_object())
        },
    )
    .await;
    only_the_degraded_endpoint_of_is_ejected(&p, "shop/svc", &ups).await;
}
