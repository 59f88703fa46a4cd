//! Control-plane high availability, proven by killing a replica: two real
//! `weft-control-plane serve --kubernetes` replicas read the same fake
//! cluster (`weft_tests::kube_fake`) and sign with the same CA (Secret
//! `weft-ca`); a TCP balancer stands in for their Service's ClusterIP (as
//! kube-proxy does: each new connection goes round-robin to a replica
//! that accepts it; a dead replica's connections drop). Real sidecars
//! (`weft-proxy run --token-file`) carry a steady load, including names
//! they call for the first time (on-demand lookups), with certificates
//! short enough to renew during the test. One replica is SIGKILLed in the
//! middle: no request fails, the sidecars move to the other, which hands
//! them the same config version (content hashes: a sidecar that moves
//! re-applies nothing), and certificates keep being renewed.
//!
//! Endpoint addresses: the API server refuses loopback ones, so the
//! upstream listens on this host's own non-loopback IPv4 address.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::kube_cluster::{install_control_plane_account, token_sidecar, write_token};
use weft_tests::kube_fake::KubeFake;
use weft_tests::pod_net::PodNet;
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const SERVING: &str = "weft-control-plane serving";
const HOUR: Duration = Duration::from_secs(3600);
/// Services in the cluster: each is asked for the first time during the test.
const SERVICES: usize = 200;
/// Names each loaded sidecar calls before the kill, to have some in hand.
const KNOWN: usize = 3;

/// The control plane's ClusterIP as kube-proxy makes it: each new
/// connection goes to the next replica in turn that accepts it; bytes are
/// relayed until either side closes (a killed replica's connections drop).
struct Balancer {
    addr: SocketAddr,
    replicas: Arc<Mutex<Vec<SocketAddr>>>,
    /// Connections each replica took, by index.
    taken: Arc<Mutex<Vec<usize>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replicas: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let taken: Arc<Mutex<Vec<usize>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (replicas, taken) = (replicas.clone(), taken.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let (replicas, taken, next) = (replicas.clone(), taken.clone(), next.clone());
                    tokio::spawn(async move {
                        let list = replicas.lock().unwrap().clone();
                        let first = next.fetch_add(1, Ordering::Relaxed);
                        for i in 0..list.len() {
                            let at = (first + i) % list.len();
                            if let Ok(mut out) = TcpStream::connect(list[at]).await {
                                taken.lock().unwrap()[at] += 1;
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                                return;
                            }
                        }
                    });
                }
            })
        };
        Balancer {
            addr,
            replicas,
            taken,
            accept,
        }
    }

    fn add(&self, replica: SocketAddr) {
        self.replicas.lock().unwrap().push(replica);
        self.taken.lock().unwrap().push(0);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A sidecar of `shop/<sa>` reaching the control plane through `balancer`.
fn sidecar(balancer: &Balancer, ca: &Path, sa: &str, token_file: &Path, app: SocketAddr) -> Proxy {
    token_sidecar(
        &format!("https://{}", balancer.addr),
        ca,
        sa,
        token_file,
        app,
    )
}

async fn expiry(p: &Proxy) -> u64 {
    p.metric("weft_certificate_expiry_timestamp_seconds", &[])
        .await as u64
}

/// The replica's `/proxies` entry for the sidecar listed as `name`.
async fn listed(cp: &ControlPlane, name: &str) -> Option<Value> {
    let proxies = cp.admin_json("/proxies").await;
    proxies
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// The name the sidecar fronting `service` is listed as.
async fn listed_name(cp: &ControlPlane, service: &str) -> String {
    eventually("the sidecar is listed", LIMIT, || async {
        let proxies = cp.admin_json("/proxies").await;
        proxies
            .as_array()?
            .iter()
            .find(|p| p["service"] == service)
            .and_then(|p| p["name"].as_str().map(String::from))
    })
    .await
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    failed: AtomicU64,
    first_time: AtomicU64,
    first_time_during_move: AtomicU64,
    not_ready: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// One request through `proxy` for `host`: 200 from the upstream, or a failure.
async fn call(proxy: &Proxy, host: &str, tally: &Tally) -> bool {
    tally.sent.fetch_add(1, Ordering::Relaxed);
    let ok = match get(&proxy.url("/"), &[("host", host)]).await {
        Ok(r) if r.status == 200 && r.header("x-upstream") == Some("app") => true,
        Ok(r) => {
            let why = format!("{host}: {} {}", r.status, r.text().trim());
            tally.failures.lock().unwrap().push(why);
            false
        }
        Err(e) => {
            tally.failures.lock().unwrap().push(format!("{host}: {e}"));
            false
        }
    };
    if !ok {
        tally.failed.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_loses_no_request_and_the_sidecars_move_to_the_other() {
    let Some(pods) =
        PodNet::new("killing_a_replica_loses_no_request_and_the_sidecars_move_to_the_other")
    else {
        return;
    };
    let upstream = pods.upstream("app").await;
    let fake = KubeFake::start().await;
    install_control_plane_account(&fake, &["shop"]).await;
    let accounts = ["client-0", "client-1", "idle"];
    for sa in accounts {
        fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": "shop"}}))
            .await;
        fake.create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{sa}-0"), "namespace": "shop"},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": sa}]}}))
            .await;
    }
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        fake.create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": upstream.addr.port()}]}}))
            .await;
        fake.create(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-a"), "namespace": "shop",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": upstream.addr.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [upstream.addr.ip().to_string()], "conditions": {"ready": true}}]}),
        )
        .await;
    }

    // Two replicas started together, no --ca-dir: one CA, from the Secret.
    // Four-second certificates: renewed every 2-2.8 s during the test.
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let start = |kc: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            ControlPlane::start_kubernetes_ca_secret(&kc, &["--cert-ttl", "4s"], SERVING)
        })
    };
    let (a, b) = tokio::join!(start(kubeconfig.clone()), start(kubeconfig.clone()));
    let (mut a, b) = (a.unwrap(), b.unwrap());
    let dir = TempDir::new("ha");
    let ca_file = dir.path().join("ca.pem");
    let path = fake.path_of("v1", "ConfigMap", Some("weft-system"), Some("weft-ca-root"));
    let root = eventually("weft-ca-root is published", LIMIT, || async {
        let (code, cm) = fake.request("GET", &path, None).await;
        (code == 200).then(|| cm["data"]["ca.pem"].as_str().map(String::from))?
    })
    .await;
    std::fs::write(&ca_file, root).unwrap();

    // The sidecars start while only replica A is behind the balancer (so
    // their watches are all on A); then B joins and takes its share of new
    // connections (renewals) from then on.
    let balancer = Balancer::start().await;
    balancer.add(a.listen);
    let mut sidecars = Vec::new();
    for sa in accounts {
        let token_file = dir.path().join(format!("{sa}.token"));
        let token = fake
            .service_account_token("shop", sa, &["weft"], HOUR, Some(&format!("{sa}-0")))
            .unwrap();
        write_token(&token_file, &token);
        sidecars.push(sidecar(&balancer, &ca_file, sa, &token_file, upstream.addr));
    }
    for p in &sidecars {
        eventually("the sidecar is ready", LIMIT, || async {
            (p.admin_get("/ready").await.0 == 200).then_some(())
        })
        .await;
    }
    let mut names = Vec::new();
    for sa in accounts {
        names.push(listed_name(&a, sa).await);
    }
    balancer.add(b.listen);
    let tally = Arc::new(Tally::default());
    for p in &sidecars[..2] {
        for k in 0..KNOWN {
            assert!(call(p, &format!("svc-{k}.shop"), &tally).await);
        }
    }

    // The load: per loaded sidecar, two loops over names already called and
    // one calling a name for the first time every 40 ms; a fourth checks
    // /ready. The idle sidecar only checks /ready.
    let stop = Arc::new(AtomicBool::new(false));
    let moving = Arc::new(AtomicBool::new(false));
    let sidecars = Arc::new(sidecars);
    let mut load = Vec::new();
    for s in 0..sidecars.len() {
        let pace = |ms| {
            let mut t = tokio::time::interval(Duration::from_millis(ms));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let ctx = (sidecars.clone(), tally.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (sidecars, tally, stop) = ctx;
            let mut t = pace(50);
            while !stop.load(Ordering::Relaxed) {
                t.tick().await;
                if sidecars[s].admin_get("/ready").await.0 != 200 {
                    tally.not_ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        if s >= 2 {
            continue;
        }
        for l in 0..2 {
            let ctx = (sidecars.clone(), tally.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let (sidecars, tally, stop) = ctx;
                let mut t = pace(20);
                let mut n = l;
                while !stop.load(Ordering::Relaxed) {
                    t.tick().await;
                    call(&sidecars[s], &format!("svc-{}.shop", n % KNOWN), &tally).await;
                    n += 1;
                }
            }));
        }
        let ctx = (
            sidecars.clone(),
            tally.clone(),
            stop.clone(),
            moving.clone(),
        );
        load.push(tokio::spawn(async move {
            let (sidecars, tally, stop, moving) = ctx;
            let mut t = pace(40);
            // Each sidecar walks the services from its own end.
            let mut order: Vec<usize> = (KNOWN..SERVICES - 4).collect();
            if s == 1 {
                order.reverse();
            }
            for i in order {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                t.tick().await;
                let during = moving.load(Ordering::Relaxed);
                if call(&sidecars[s], &format!("svc-{i}.shop"), &tally).await {
                    tally.first_time.fetch_add(1, Ordering::Relaxed);
                    if during && moving.load(Ordering::Relaxed) {
                        tally.first_time_during_move.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    // Under load for a while, with renewals going to both replicas.
    let idle_before = listed(&a, &names[2]).await.unwrap();
    let idle_version = sidecars[2].version().await;
    eventually("B issued a renewal", LIMIT, || async {
        (b.metric("weft_cp_certificates_issued_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(
        listed(&b, &names[0]).await.is_none(),
        "the watches are on A"
    );
    let sent_before = tally.sent.load(Ordering::Relaxed);
    assert!(sent_before > 0);

    // Kill A, and at once ask each loaded sidecar for names it never
    // called (their watches are dying or reconnecting meanwhile).
    moving.store(true, Ordering::Relaxed);
    let killed = Instant::now();
    a.kill();
    let mut asked_at_kill = Vec::new();
    for s in 0..2 {
        for k in 0..2 {
            let (sidecars, tally) = (sidecars.clone(), tally.clone());
            asked_at_kill.push(tokio::spawn(async move {
                let host = format!("svc-{}.shop", SERVICES - 1 - 2 * s - k);
                let ok = call(&sidecars[s], &host, &tally).await;
                tally.first_time.fetch_add(u64::from(ok), Ordering::Relaxed);
                (ok, killed.elapsed())
            }));
        }
    }
    // From now on every certificate is B's.
    let mut expiries = Vec::new();
    for p in sidecars.iter() {
        expiries.push(expiry(p).await);
    }
    let b_log_at_kill = b.logs().lines().count();
    let (mut at_kill, mut slowest) = (Vec::new(), Duration::ZERO);
    for t in asked_at_kill {
        let (ok, took) = t.await.unwrap();
        at_kill.push(ok);
        slowest = slowest.max(took);
    }
    let moved = eventually("every sidecar watches B", LIMIT, || async {
        for n in &names {
            listed(&b, n).await?;
        }
        Some(killed.elapsed())
    })
    .await;
    moving.store(false, Ordering::Relaxed);

    // Certificates keep renewing: each sidecar's expiry moves past what it
    // was after the kill, and B's log shows it issued each one since.
    let renewed = eventually(
        "every sidecar renewed by B after the kill",
        LIMIT,
        || async {
            let log = b.logs();
            let since: Vec<&str> = log.lines().skip(b_log_at_kill).collect();
            for (p, (sa, before)) in sidecars.iter().zip(accounts.iter().zip(&expiries)) {
                let id = format!("spiffe://weft.local/ns/shop/sa/{sa}");
                let by_b = since
                    .iter()
                    .any(|l| l.contains("certificate issued") && l.contains(&id));
                if !by_b || expiry(p).await <= *before {
                    return None;
                }
            }
            Some(killed.elapsed())
        },
    )
    .await;
    // A while longer under load with B alone.
    let sent_at_renewal = tally.sent.load(Ordering::Relaxed);
    eventually("more load on B alone", LIMIT, || async {
        (tally.sent.load(Ordering::Relaxed) > sent_at_renewal + 100).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }

    // Content hashes: B hands the idle sidecar the version A had given it,
    // so it re-applied nothing when it moved.
    let idle_after = listed(&b, &names[2]).await.unwrap();
    assert_eq!(idle_after["acked"], idle_before["acked"], "{idle_after}");
    assert_eq!(idle_after["current"], idle_before["acked"], "{idle_after}");
    assert!(
        idle_after["sent"].is_null(),
        "no snapshot sent: {idle_after}"
    );
    assert_eq!(sidecars[2].version().await, idle_version, "no re-apply");
    // The loaded sidecars hold what B would give them now.
    for n in &names[..2] {
        let p = listed(&b, n).await.unwrap();
        assert_eq!(p["acked"], p["current"], "{p}");
    }

    let (list_a, list_b) = {
        let t = balancer.taken.lock().unwrap();
        (t[0], t[1])
    };
    let failures = tally.failures.lock().unwrap().clone();
    let sent = tally.sent.load(Ordering::Relaxed);
    let first = tally.first_time.load(Ordering::Relaxed);
    let during = tally.first_time_during_move.load(Ordering::Relaxed);
    eprintln!(
        "requests sent {sent} (before the kill {sent_before}), failed {}, first-time names {first} \
         ({during} of them while moving, 4 at the kill, answered within {slowest:?}), sidecars moved in {moved:?}, all renewed by B {renewed:?} \
         after the kill, connections A {list_a} B {list_b}, not-ready answers {}",
        failures.len(),
        tally.not_ready.load(Ordering::Relaxed)
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0);
    assert_eq!(tally.not_ready.load(Ordering::Relaxed), 0);
    assert_eq!(at_kill, vec![true; 4], "the names asked at the kill");
}
