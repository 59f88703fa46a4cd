//! End-to-end DNS discovery: the real proxy resolves a Backend's `dns.name`
//! against a real (tiny, in-test) DNS server given with `--dns-server`,
//! re-resolves when the TTL runs out, follows changes live, and keeps its
//! last endpoints when lookups fail.
//!
//! The resolved addresses are 127.0.0.2, 127.0.0.3, ... with one upstream on
//! each, all on the same port (a DNS backend has a single `dns.port`).
//! TTL expiry has no event to wait on, so the tests poll with `eventually`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_tests::dns::{loopback, same_port_upstreams, DnsServer, Mode, TYPE_A};
use weft_tests::svc::svc_backend as backend;
use weft_tests::{eventually, get, Proxy, Upstream};

const NAME: &str = "svc.weft.test";
/// Long enough for a few 1 s TTL refreshes on a busy machine, short enough to fail fast.
const LIMIT: Duration = Duration::from_secs(8);

fn config(port: u16) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {{name: svc}}
spec:
  protocol: http
  dns: {{name: {NAME}, port: {port}}}
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: svc}}
spec:
  targetRef: {{kind: Backend, name: svc}}
  loadBalancer: {{policy: RoundRobin}}
"
    )
}

/// DNS server (TTL 1 s) answering `NAME` with the first `initial` upstreams,
/// the upstreams, and a proxy resolving against the server.
async fn setup(names: &[&str], initial: usize) -> (DnsServer, Vec<Upstream>, Proxy) {
    let dns = DnsServer::start(1).await;
    let ups = same_port_upstreams(names).await;
    dns.set(NAME, &(0..initial).map(loopback).collect::<Vec<_>>());
    let proxy = Proxy::builder(config(ups[0].addr.port()))
        .arg("--dns-server")
        .arg(dns.addr.to_string())
        .start();
    (dns, ups, proxy)
}

async fn endpoint_addrs(proxy: &Proxy) -> Vec<String> {
    let b = backend(proxy).await;
    let mut addrs: Vec<String> = b["endpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .filter_map(|e| e["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs
}

/// Polls `/endpoints` until backend `svc` lists exactly `want` (the TTL refresh has no event).
async fn wait_endpoints(proxy: &Proxy, want: &[&Upstream]) {
    let mut want: Vec<String> = want.iter().map(|u| u.addr.to_string()).collect();
    want.sort();
    eventually(
        &format!("endpoints of svc to become {want:?}"),
        LIMIT,
        || {
            let want = want.clone();
            async move { (endpoint_addrs(proxy).await == want).then_some(()) }
        },
    )
    .await;
}

/// `n` requests through the proxy, each on its own connection; answers per upstream name.
async fn send(proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let r = get(&proxy.url(&format!("/req/{i}")), &[("host", "svc")])
            .await
            .expect("request through the proxy");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        *seen
            .entry(r.header("x-upstream").unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn resolves_the_name_and_routes_to_its_address() {
    let (dns, ups, proxy) = setup(&["a"], 1).await;
    wait_endpoints(&proxy, &[&ups[0]]).await;

    assert_eq!(send(&proxy, 5).await, counts(&[("a", 5)]));
    assert_eq!(ups[0].requests(), 5);

    let b = backend(&proxy).await;
    let d = &b["discovery"];
    assert_eq!(d["dns"], NAME, "{b}");
    assert_eq!(d["port"], ups[0].addr.port(), "{b}");
    assert!(d["lastError"].is_null(), "{b}");
    // A 1 s TTL is reported as such (refreshes are never more often than 1 s).
    assert_eq!(d["ttlSeconds"], 1, "{b}");
    assert!(dns.queries(NAME, TYPE_A) >= 1, "{:?}", dns.all_queries());
}

#[tokio::test]
async fn follows_address_changes_live() {
    let (dns, ups, proxy) = setup(&["a", "b"], 1).await;
    let (a, b) = (&ups[0], &ups[1]);
    wait_endpoints(&proxy, &[a]).await;
    assert_eq!(send(&proxy, 4).await, counts(&[("a", 4)]));

    // A second address appears: once the TTL runs out both get traffic
    // (RoundRobin over two equal endpoints: exactly half each).
    dns.set(NAME, &[loopback(0), loopback(1)]);
    wait_endpoints(&proxy, &[a, b]).await;
    assert_eq!(send(&proxy, 10).await, counts(&[("a", 5), ("b", 5)]));

    // The first one goes away: from then on only b is used.
    dns.set(NAME, &[loopback(1)]);
    wait_endpoints(&proxy, &[b]).await;
    let a_before = a.requests();
    assert_eq!(send(&proxy, 10).await, counts(&[("b", 10)]));
    assert_eq!(
        a.requests(),
        a_before,
        "a removed endpoint still got requests"
    );
}

#[tokio::test]
async fn failed_lookups_keep_the_last_endpoints() {
    let (dns, ups, proxy) = setup(&["a"], 1).await;
    wait_endpoints(&proxy, &[&ups[0]]).await;

    dns.set_mode(Mode::ServFail);
    let err = eventually("lastError of svc after SERVFAIL", LIMIT, || async {
        backend(&proxy).await["discovery"]["lastError"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(!err.is_empty());

    // Lookups fail, yet the last good answer is still in force.
    assert_eq!(endpoint_addrs(&proxy).await, vec![ups[0].addr.to_string()]);
    assert_eq!(send(&proxy, 5).await, counts(&[("a", 5)]));

    // The server recovers: the next retry clears the error.
    dns.set_mode(Mode::Answer);
    eventually(
        "lastError of svc to clear after recovery",
        LIMIT,
        || async {
            backend(&proxy).await["discovery"]["lastError"]
                .is_null()
                .then_some(())
        },
    )
    .await;
    assert_eq!(send(&proxy, 3).await, counts(&[("a", 3)]));
}

#[tokio::test]
async fn the_ttl_sets_the_refresh_rate() {
    let (dns, ups, proxy) = setup(&["a"], 1).await;
    wait_endpoints(&proxy, &[&ups[0]]).await;
    let count = || dns.queries(NAME, TYPE_A);

    // Start the clock on a query arriving (not at an arbitrary moment), then
    // time the next two: each refresh waits for the 1 s TTL to run out.
    let base = count();
    let c0 = eventually("a TTL refresh", LIMIT, || async {
        (count() > base).then(count)
    })
    .await;
    let t0 = Instant::now();
    eventually("two more TTL refreshes", LIMIT, || async {
        (count() >= c0 + 2).then_some(())
    })
    .await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed <= Duration::from_secs(5),
        "2 refreshes with a 1 s TTL took {elapsed:?}; queries: {:?}",
        dns.all_queries()
    );
    // The proxy kept serving from the refreshed answers meanwhile.
    assert_eq!(send(&proxy, 2).await, counts(&[("a", 2)]));
}
