//! End-to-end load balancing and connection pooling: real upstreams behind
//! the real proxy, traffic sent through its outbound listener with
//! `Host: svc`, and the answers counted by the `x-upstream` they carry.
//!
//! Deterministic where the policy is (RoundRobin gives exact shares, RingHash
//! exact affinity); statistical bounds for Random are many standard
//! deviations wide. Idle expiry has no event to wait on, so it is polled.

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_tests::svc::*;
use weft_tests::{get, BoxError, Conn, Proxy, Upstream};

#[tokio::test]
async fn round_robin_gives_equal_endpoints_exactly_equal_shares() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let proxy = Proxy::start(config(
        &equal(&ups.iter().collect::<Vec<_>>()),
        "{policy: RoundRobin}",
        None,
    ));
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    // Whatever the random starting offset, every 3 consecutive picks cover all 3.
    assert_eq!(
        tally(&mut conn, 300, &[]).await,
        counts(&[("a", 100), ("b", 100), ("c", 100)])
    );
    assert_eq!(
        ups.iter().map(Upstream::requests).collect::<Vec<_>>(),
        [100, 100, 100]
    );
}

#[tokio::test]
async fn round_robin_honours_weights_exactly() {
    let ups = upstreams(&["heavy", "light"]).await;
    let proxy = Proxy::start(config(
        &[(ups[0].addr, 3), (ups[1].addr, 1)],
        "{policy: RoundRobin}",
        None,
    ));
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    assert_eq!(
        tally(&mut conn, 400, &[]).await,
        counts(&[("heavy", 300), ("light", 100)])
    );
}

#[tokio::test]
async fn random_honours_weights_statistically() {
    let ups = upstreams(&["heavy", "light"]).await;
    let proxy = Proxy::start(config(
        &[(ups[0].addr, 3), (ups[1].addr, 1)],
        "{policy: Random}",
        None,
    ));
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let seen = tally(&mut conn, 2000, &[]).await;
    let heavy = seen.get("heavy").copied().unwrap_or(0);
    assert_eq!(
        heavy + seen.get("light").copied().unwrap_or(0),
        2000,
        "{seen:?}"
    );
    // Expected 1500, sd ≈ 19: ±100 is over 5 sd.
    assert!((1400..=1600).contains(&heavy), "weight 3:1 gave {seen:?}");
}

/// Sends `per_key` requests for each key (built into headers by `headers`),
/// each on a fresh client connection, and returns the one upstream each key
/// reached (panicking if a key reached two).
async fn affinity(
    proxy: &Proxy,
    keys: &[String],
    per_key: usize,
    headers: impl Fn(&str) -> Vec<(String, String)>,
) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for k in keys {
        let h = headers(k);
        let h: Vec<(&str, &str)> = h
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .chain([("host", "svc")])
            .collect();
        let mut reached = BTreeSet::new();
        for _ in 0..per_key {
            let r = get(&proxy.url("/"), &h)
                .await
                .expect("request through the proxy");
            assert_eq!(r.status, 200, "{}", r.text());
            reached.insert(r.header("x-upstream").unwrap().to_owned());
        }
        assert_eq!(reached.len(), 1, "key {k} reached {reached:?}");
        map.insert(k.clone(), reached.into_iter().next().unwrap());
    }
    map
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

fn spread(map: &BTreeMap<String, String>) -> BTreeSet<&String> {
    map.values().collect()
}

#[tokio::test]
async fn ring_hash_on_a_header_keeps_each_key_on_one_endpoint() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let proxy = Proxy::start(config(
        &equal(&ups.iter().collect::<Vec<_>>()),
        "{policy: RingHash, hashOn: {header: x-user}}",
        None,
    ));
    let map = affinity(&proxy, &keys(20), 10, |k| vec![("x-user".into(), k.into())]).await;
    // 20 keys all on one of 3 endpoints would be a 1 in 3^19 accident.
    assert!(spread(&map).len() >= 2, "{map:?}");
    // Without the header there is no key: requests are still served.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    assert_eq!(tally(&mut conn, 10, &[]).await.values().sum::<usize>(), 10);
}

#[tokio::test]
async fn ring_hash_on_a_cookie_keeps_each_session_on_one_endpoint() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let proxy = Proxy::start(config(
        &equal(&ups.iter().collect::<Vec<_>>()),
        "{policy: RingHash, hashOn: {cookie: session}}",
        None,
    ));
    // The cookie sits among others, and other cookies vary per request
    // (they must not move the session).
    let n = AtomicUsize::new(0);
    let map = affinity(&proxy, &keys(20), 10, |k| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        vec![(
            "cookie".into(),
            format!("theme=dark{i}; session={k}; lang=en"),
        )]
    })
    .await;
    assert!(spread(&map).len() >= 2, "{map:?}");
}

/// One request on a fresh connection made from `src` (any 127.0.0.0/8 address).
async fn get_from(src: IpAddr, proxy: SocketAddr) -> Result<String, BoxError> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    let stream = sock.connect(proxy).await?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = tx.send_request(req("/", &[])).await?;
    assert_eq!(resp.status(), 200);
    let name = resp
        .headers()
        .get("x-upstream")
        .ok_or("no x-upstream")?
        .to_str()?
        .to_owned();
    resp.into_body().collect().await?;
    Ok(name)
}

#[tokio::test]
async fn ring_hash_on_source_ip_keeps_each_client_on_one_endpoint() {
    let ups = upstreams(&["a", "b", "c"]).await;
    let proxy = Proxy::start(config(
        &equal(&ups.iter().collect::<Vec<_>>()),
        "{policy: RingHash, hashOn: {sourceIP: true}}",
        None,
    ));
    let mut map = BTreeMap::new();
    for i in 0..16u8 {
        let src = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i));
        let mut reached = BTreeSet::new();
        for _ in 0..3 {
            reached.insert(get_from(src, proxy.outbound).await.unwrap());
        }
        assert_eq!(reached.len(), 1, "client {src} reached {reached:?}");
        map.insert(src.to_string(), reached.into_iter().next().unwrap());
    }
    assert!(spread(&map).len() >= 2, "{map:?}");
}

#[tokio::test]
async fn ring_hash_moves_keys_only_to_an_added_endpoint() {
    let ups = upstreams(&["a", "b", "c", "d"]).await;
    let lb = "{policy: RingHash, hashOn: {header: x-user}}";
    let proxy = Proxy::start(config(&equal(&[&ups[0], &ups[1], &ups[2]]), lb, None));
    let ks = keys(60);
    let header = |k: &str| vec![("x-user".to_owned(), k.to_owned())];
    let before = affinity(&proxy, &ks, 1, header).await;
    proxy
        .reload(&config(&equal(&ups.iter().collect::<Vec<_>>()), lb, None))
        .await;
    let after = affinity(&proxy, &ks, 1, header).await;
    let moved: Vec<&String> = ks.iter().filter(|k| before[*k] != after[*k]).collect();
    for k in &moved {
        assert_eq!(
            after[*k], "d",
            "key {k} moved from {} to {}, not to the new endpoint",
            before[*k], after[*k]
        );
    }
    // d owns about a quarter of the ring: none of 60 keys moving is a 1e-7 accident.
    assert!(
        !moved.is_empty() && moved.len() < 40,
        "{} of 60 keys moved",
        moved.len()
    );
}

/// 400 requests, 8 at a time (each worker on its own kept-alive
/// connection), through a proxy balancing two fast upstreams and one that
/// takes 100 ms per answer. Returns the share the slow one got.
async fn slow_share(load_balancer: &str) -> f64 {
    let fast = upstreams(&["fast1", "fast2"]).await;
    let slow = TestServer::start("slow", Duration::from_millis(100)).await;
    let eps = [(fast[0].addr, 1), (fast[1].addr, 1), (slow.addr, 1)];
    let proxy = Proxy::start(config(&eps, load_balancer, None));
    const TOTAL: usize = 400;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let next = next.clone();
        let outbound = proxy.outbound;
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::open(outbound).await.unwrap();
            let mut seen = BTreeMap::<String, usize>::new();
            while next.fetch_add(1, Ordering::Relaxed) < TOTAL {
                *seen.entry(one(&mut conn, &[]).await).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut seen = BTreeMap::<String, usize>::new();
    for w in workers {
        for (k, v) in w.await.unwrap() {
            *seen.entry(k).or_insert(0) += v;
        }
    }
    assert_eq!(seen.values().sum::<usize>(), TOTAL, "{seen:?}");
    assert_eq!(
        slow.requests.load(Ordering::SeqCst),
        seen.get("slow").copied().unwrap_or(0)
    );
    let share = seen.get("slow").copied().unwrap_or(0) as f64 / TOTAL as f64;
    eprintln!("{load_balancer}: {seen:?} (slow share {share:.3})");
    share
}

#[tokio::test]
async fn peak_ewma_avoids_the_slow_endpoint() {
    // PeakEWMA is the default: no policy named.
    let share = slow_share("{}").await;
    assert!(
        share < 0.15,
        "the slow endpoint got {share:.3} of the traffic"
    );
}

#[tokio::test]
async fn least_request_avoids_the_slow_endpoint() {
    let share = slow_share("{policy: LeastRequest}").await;
    assert!(
        share < 0.15,
        "the slow endpoint got {share:.3} of the traffic"
    );
}
