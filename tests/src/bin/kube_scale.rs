//! The Kubernetes control plane at scale (a benchmark, not a test): the
//! fake API server holds SERVICES Services with ENDPOINTS endpoints each
//! (one EndpointSlice per Service), `weft-control-plane --kubernetes`
//! reads it, and PROXIES real `weft-proxy` sidecars in mesh mode each call
//! one shared Service (so each holds a scoped snapshot with it). Then the
//! shared Service's EndpointSlice changes CHANGES times, and the time from
//! each change (the API server's answer to the PATCH) to every sidecar
//! having applied and acknowledged it is measured. Reported: that time
//! (p50/p99/max), the control plane's RSS, and the sidecars' RSS against
//! one sidecar of a cluster holding only the shared Service.
//!
//! Run with `bash tests/bench/kube_scale.sh` (release build). The
//! endpoints of the 1,000 Services are addresses in 10.200.0.0/16 that no
//! one dials; the shared Service's endpoint is a real upstream on this
//! host's non-loopback address (the API server refuses loopback ones).

use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use weft_tests::kube_cluster::*;
use weft_tests::kube_fake::KubeFake;
use weft_tests::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn log(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    println!(
        "[kube-scale {:02}:{:02}:{:02}] {msg}",
        t / 3600 % 24,
        t / 60 % 60,
        t % 60
    );
}

/// The release binaries next to this one, unless told otherwise.
fn use_sibling_binaries() {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("bin dir").to_path_buf();
    for (var, bin) in [
        ("WEFT_PROXY_BIN", "weft-proxy"),
        ("WEFT_CONTROL_PLANE_BIN", "weft-control-plane"),
    ] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, dir.join(bin));
        }
    }
}

/// A fake cluster with the shared Service `shop/common` (endpoint
/// `common`) and `services` other Services of `endpoints` endpoints each.
async fn cluster(services: usize, endpoints: usize, common: SocketAddr) -> KubeFake {
    let fake = KubeFake::builder()
        .config(|c| {
            c.service_cidr = ("10.96.0.0".parse().expect("ip"), 16);
            c.history_limit = 100_000;
        })
        .start()
        .await;
    install_control_plane_account(&fake, &["shop"]).await;
    let port = |name: &str| json!({"name": "http", "port": 80, "targetPort": name});
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "common", "namespace": "shop"},
        "spec": {"ports": [port("http")]}}))
        .await;
    fake.create(endpoint_slice(
        "shop",
        "common",
        "common",
        common.port(),
        &[(&ip_of(common), true)],
    ))
    .await;
    for i in 0..services {
        let name = format!("svc-{i}");
        fake.create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"ports": [port("http")]}}))
            .await;
        let ips: Vec<String> = (0..endpoints)
            .map(|e| {
                let n = i * endpoints + e;
                format!("10.200.{}.{}", n / 250, n % 250 + 1)
            })
            .collect();
        let addrs: Vec<(&str, bool)> = ips.iter().map(|ip| (ip.as_str(), true)).collect();
        fake.create(endpoint_slice("shop", &name, &name, 8080, &addrs))
            .await;
    }
    fake
}

/// A mesh-mode sidecar of `shop/<name>` that has called the shared Service.
async fn sidecar(cp: &ControlPlane, name: &str) -> Proxy {
    let token = cp.token("shop", name);
    let mut b = Proxy::builder("").no_config().arg("--proxy-name").arg(name);
    for a in cp.proxy_args("shop", name, &token) {
        b = b.arg(a);
    }
    let proxy = b.start();
    eventually(
        "the sidecar reaches the shared Service",
        Duration::from_secs(60),
        || async {
            let r = get(&proxy.url("/"), &[("host", "common.shop")])
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
    proxy
}

/// Waits until every one of `n` proxies acknowledged a version cut from
/// resources other than `old`; returns the new resources version.
async fn all_acked(cp: &ControlPlane, n: usize, old: &str) -> String {
    loop {
        let proxies = cp.admin_json("/proxies").await;
        if let Some(list) = proxies.as_array() {
            let version = list
                .first()
                .and_then(|p| p["resources"].as_str())
                .unwrap_or_default()
                .to_string();
            let done = |p: &serde_json::Value| {
                p["resources"].as_str() == Some(version.as_str())
                    && p["current"].is_string()
                    && p["acked"] == p["current"]
            };
            if list.len() == n && version != old && list.iter().all(done) {
                return version;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pct(sorted: &[Duration], q: f64) -> u128 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_millis()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn median(mut xs: Vec<u64>) -> u64 {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    use_sibling_binaries();
    let services = env("SERVICES", 1000);
    let endpoints = env("ENDPOINTS", 10);
    let proxies = env("PROXIES", 100);
    let changes = env("CHANGES", 20);
    let ip = IpAddr::V4(host_ipv4());
    let upstream = Upstream::start_on(SocketAddr::new(ip, 0), "common").await;

    // The baseline: one sidecar in a cluster of the shared Service only.
    let (alone_rss, alone_cp_rss) = {
        let fake = cluster(0, endpoints, upstream.addr).await;
        let cp = ControlPlane::start_kubernetes(
            &fake.service_account_kubeconfig(CONTROL_PLANE.0, CONTROL_PLANE.1),
            &[],
        );
        let p = sidecar(&cp, "alone").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        (rss_kib(p.pid()), rss_kib(cp.pid()))
    };
    log(&format!(
        "baseline: sidecar {} and control plane {} with only the shared Service",
        mib(alone_rss),
        mib(alone_cp_rss)
    ));

    let started = Instant::now();
    let fake = cluster(services, endpoints, upstream.addr).await;
    log(&format!(
        "{services} Services × {endpoints} endpoints in the fake API server ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    let cp = ControlPlane::start_kubernetes(
        &fake.service_account_kubeconfig(CONTROL_PLANE.0, CONTROL_PLANE.1),
        &["--log-level", "warn,weft_control_plane=info"],
    );
    log(&format!(
        "control plane listed the cluster and serves ({:.1} s); RSS {}",
        started.elapsed().as_secs_f64(),
        mib(rss_kib(cp.pid()))
    ));
    let mut sidecars = Vec::new();
    for i in 0..proxies {
        sidecars.push(sidecar(&cp, &format!("app-{i}")).await);
    }
    log(&format!("{proxies} sidecars called the shared Service"));

    let mut version = all_acked(&cp, proxies, "").await;
    let mut took = Vec::new();
    for round in 0..changes {
        // Add or remove a second (never dialled) endpoint of the shared
        // Service: every sidecar holds it, so every one must apply it.
        let mut addrs = vec![(ip_of(upstream.addr), true)];
        if round % 2 == 0 {
            addrs.push(("10.250.0.1".to_string(), true));
        }
        let addrs: Vec<(&str, bool)> = addrs.iter().map(|(a, r)| (a.as_str(), *r)).collect();
        let slice = endpoint_slice("shop", "common", "common", upstream.addr.port(), &addrs);
        let t = Instant::now();
        fake.merge_patch(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            Some("shop"),
            "common",
            None,
            json!({"endpoints": slice["endpoints"]}),
        )
        .await;
        version = tokio::time::timeout(Duration::from_secs(60), all_acked(&cp, proxies, &version))
            .await
            .expect("every sidecar acknowledged within a minute");
        took.push(t.elapsed());
    }
    took.sort();
    let cp_rss = rss_kib(cp.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cp_rss_settled = rss_kib(cp.pid());
    let rss: Vec<u64> = sidecars.iter().map(|p| rss_kib(p.pid())).collect();
    println!();
    println!("| measure | result |");
    println!("| --- | --- |");
    println!(
        "| EndpointSlice change → all {proxies} sidecars applied (ACKed) | p50 {} ms, p99 {} ms, max {} ms over {changes} changes |",
        pct(&took, 0.5),
        pct(&took, 0.99),
        took.last().map(|d| d.as_millis()).unwrap_or_default()
    );
    println!(
        "| control plane RSS, {services} Services × {endpoints} endpoints, {proxies} sidecars | {} right after the last change, {} 3 s later (cluster of the shared Service only: {}) |",
        mib(cp_rss),
        mib(cp_rss_settled),
        mib(alone_cp_rss)
    );
    println!(
        "| sidecar RSS with those Services in the cluster | {} (median of {proxies}; max {}) |",
        mib(median(rss.clone())),
        mib(rss.iter().copied().max().unwrap_or_default())
    );
    println!(
        "| sidecar RSS, cluster of the shared Service only | {} |",
        mib(alone_rss)
    );
}
