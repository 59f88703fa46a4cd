//! End-to-end load balancing and connection pooling: real upstreams behind
//! the real proxy, traffic sent through its outbound listener with
//! `Host: svc`, and the answers counted by the `x-upstream` they carry.
//!
//! Deterministic where the policy is (RoundRobin gives exact shares, RingHash
//! exact affinity); statistical bounds for Random are many standard
//! deviations wide. Idle expiry has no event to wait on, so it is polled.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_tests::{eventually, get, BoxError, Conn, Proxy, Upstream};

/// Backend `svc` over `endpoints` (address, weight) with `load_balancer`
/// (flow YAML), and `connection_pool` when given.
fn config(
    endpoints: &[(SocketAddr, u32)],
    load_balancer: &str,
    connection_pool: Option<&str>,
) -> String {
    let mut s = String::from(
        "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: svc}
spec:
  protocol: http
  endpoints:
",
    );
    for (addr, weight) in endpoints {
        s += &format!("  - {{address: \"{addr}\", weight: {weight}}}\n");
    }
    s += &format!(
        "---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: svc}}
spec:
  targetRef: {{kind: Backend, name: svc}}
  loadBalancer: {load_balancer}
"
    );
    if let Some(p) = connection_pool {
        s += &format!("  connectionPool: {p}\n");
    }
    s
}

fn equal(ups: &[&Upstream]) -> Vec<(SocketAddr, u32)> {
    ups.iter().map(|u| (u.addr, 1)).collect()
}

async fn upstreams(names: &[&str]) -> Vec<Upstream> {
    let mut v = Vec::new();
    for n in names {
        v.push(Upstream::start(n).await);
    }
    v
}

fn req(path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", "svc");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// One request on `conn`; the name of the upstream that answered.
async fn one(conn: &mut Conn, headers: &[(&str, &str)]) -> String {
    let r = conn
        .send(req("/", headers))
        .await
        .expect("request through the proxy");
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-upstream").expect("x-upstream").to_owned()
}

/// `n` sequential requests on one kept-alive connection; answers per upstream.
async fn tally(conn: &mut Conn, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(one(conn, headers).await).or_insert(0) += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The `/endpoints` entries of backend `svc`.
async fn endpoints(proxy: &Proxy) -> Vec<serde_json::Value> {
    let (_, body) = proxy.admin_get("/endpoints").await;
    let v: serde_json::Value = serde_json::from_str(&body).expect("/endpoints is JSON");
    v["backends"]
        .as_array()
        .and_then(|bs| {
            bs.iter()
                .find(|b| b["backend"].as_str().is_some_and(|k| k.ends_with("/svc")))
        })
        .and_then(|b| b["endpoints"].as_array().cloned())
        .unwrap_or_else(|| panic!("no backend svc in {body}"))
}

async fn idle_connections(proxy: &Proxy, addr: SocketAddr) -> u64 {
    endpoints(proxy)
        .await
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .and_then(|e| e["idleConnections"].as_u64())
        .unwrap_or_else(|| panic!("no endpoint {addr}"))
}

/// Replaces the config and waits for the proxy to put it in force.
async fn reload(proxy: &Proxy, yaml: &str) {
    let before = proxy.version().await;
    proxy.write_config(yaml);
    eventually(
        "the new config to be in force",
        Duration::from_secs(5),
        || async { (proxy.version().await > before).then_some(()) },
    )
    .await;
}

/// A tiny HTTP server that waits `delay` before every answer and tracks its
/// connections (accepted, and open now: the proxy closing one is visible).
struct TestServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(name: &'static str, delay: Duration) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, a, o) = (requests.clone(), accepted.clone(), open.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (r, o) = (r.clone(), o.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            let resp = http::Response::builder()
                                .header("x-upstream", name)
                                .body(Full::new(Bytes::from_static(b"ok\n")))
                                .unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestServer {
            addr,
            requests,
            accepted,
            open,
            task,
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
    reload(
        &proxy,
        &config(&equal(&ups.iter().collect::<Vec<_>>()), lb, None),
    )
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

#[tokio::test]
async fn upstream_connections_are_reused_across_client_connections() {
    let up = Upstream::start("a").await;
    let proxy = Proxy::start(config(&[(up.addr, 1)], "{policy: RoundRobin}", None));
    for i in 0..100 {
        let r = get(&proxy.url(&format!("/n/{i}")), &[("host", "svc")])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.requests(), 100);
    assert!(
        up.connections() <= 2,
        "100 sequential requests took {} upstream connections",
        up.connections()
    );
    assert!(idle_connections(&proxy, up.addr).await >= 1);
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let up = TestServer::start("a", Duration::ZERO).await;
    let proxy = Proxy::start(config(
        &[(up.addr, 1)],
        "{policy: RoundRobin}",
        Some("{idleTimeout: 300ms}"),
    ));
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    assert_eq!(tally(&mut conn, 5, &[]).await, counts(&[("a", 5)]));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    // The connection goes back to the pool as its response ends.
    eventually(
        "an idle pooled connection",
        Duration::from_secs(2),
        || async { (idle_connections(&proxy, up.addr).await == 1).then_some(()) },
    )
    .await;

    // Traffic stops: the sweep (every 5 s) closes it once 300 ms idle.
    eventually(
        "the idle connection to be swept",
        Duration::from_secs(8),
        || async { (idle_connections(&proxy, up.addr).await == 0).then_some(()) },
    )
    .await;
    eventually(
        "the upstream to see the connection closed",
        Duration::from_secs(2),
        || async { (up.open.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;

    // The next request needs a new upstream connection, and gets one.
    assert_eq!(one(&mut conn, &[]).await, "a");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn static_endpoints_follow_hot_reload() {
    let ups = upstreams(&["a", "b", "c", "d"]).await;
    let (a, b, c, d) = (&ups[0], &ups[1], &ups[2], &ups[3]);
    let rr = "{policy: RoundRobin}";
    let proxy = Proxy::start(config(&equal(&[a, b, c]), rr, None));
    // One client connection for the whole test: reloads must not disturb it.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    assert_eq!(
        tally(&mut conn, 300, &[]).await,
        counts(&[("a", 100), ("b", 100), ("c", 100)])
    );
    let conns = |u: &Upstream| u.connections();
    let before = [conns(a), conns(b), conns(c)];

    // A fourth endpoint: it gets its share at once, and the others keep
    // their pooled upstream connections.
    reload(&proxy, &config(&equal(&[a, b, c, d]), rr, None)).await;
    assert_eq!(
        tally(&mut conn, 400, &[]).await,
        counts(&[("a", 100), ("b", 100), ("c", 100), ("d", 100)])
    );
    assert_eq!(
        [conns(a), conns(b), conns(c)],
        before,
        "reload reconnected to unchanged endpoints"
    );

    // A streaming response is in flight when its endpoint is removed: it
    // still completes, and the removed endpoint gets nothing afterwards.
    let mut stream_conn = Conn::open(proxy.outbound).await.unwrap();
    let resp = stream_conn
        .send_streaming(req("/sse/40/50", &[]))
        .await
        .unwrap();
    let gone = resp.headers()["x-upstream"].to_str().unwrap().to_owned();
    let mut body = resp.into_body();
    let events = |b: &[u8]| b.windows(12).filter(|w| w == b"data: event ").count();
    let first = body
        .frame()
        .await
        .expect("first event")
        .unwrap()
        .into_data()
        .unwrap();
    let events_before_reload = events(&first);
    assert!(events_before_reload >= 1, "{first:?}");
    let kept: Vec<&Upstream> = ups.iter().filter(|u| u.name != gone).collect();
    let kept_conns: Vec<usize> = kept.iter().map(|u| conns(u)).collect();
    reload(&proxy, &config(&equal(&kept), rr, None)).await;
    let rest = body
        .collect()
        .await
        .expect("stream cut by the reload")
        .to_bytes();
    let events_after_reload = events(&rest);
    assert!(
        events_after_reload >= 1,
        "the stream ended before the reload: nothing was tested"
    );
    assert_eq!(
        events_before_reload + events_after_reload,
        40,
        "the in-flight stream lost events"
    );

    let gone_requests = ups.iter().find(|u| u.name == gone).unwrap().requests();
    let seen = tally(&mut conn, 300, &[]).await;
    let want: BTreeMap<String, usize> = kept.iter().map(|u| (u.name.clone(), 100)).collect();
    assert_eq!(seen, want, "after removing {gone}");
    assert_eq!(
        ups.iter().find(|u| u.name == gone).unwrap().requests(),
        gone_requests
    );
    assert_eq!(
        kept.iter().map(|u| conns(u)).collect::<Vec<_>>(),
        kept_conns,
        "reload reconnected to kept endpoints"
    );
}

#[tokio::test]
async fn removing_an_endpoint_closes_its_pooled_connections() {
    let a = TestServer::start("a", Duration::ZERO).await;
    let b = TestServer::start("b", Duration::ZERO).await;
    let rr = "{policy: RoundRobin}";
    let proxy = Proxy::start(config(&[(a.addr, 1), (b.addr, 1)], rr, None));
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    assert_eq!(
        tally(&mut conn, 10, &[]).await,
        counts(&[("a", 5), ("b", 5)])
    );
    assert_eq!(
        (a.open.load(Ordering::SeqCst), b.open.load(Ordering::SeqCst)),
        (1, 1)
    );

    reload(&proxy, &config(&[(a.addr, 1)], rr, None)).await;
    eventually(
        "the removed endpoint's idle connection to be closed",
        Duration::from_secs(3),
        || async { (b.open.load(Ordering::SeqCst) == 0).then_some(()) },
    )
    .await;
    assert_eq!(tally(&mut conn, 4, &[]).await, counts(&[("a", 4)]));
    assert_eq!(
        (
            a.accepted.load(Ordering::SeqCst),
            a.open.load(Ordering::SeqCst)
        ),
        (1, 1),
        "a kept its connection"
    );
}

#[tokio::test]
async fn idle_connections_are_capped_per_endpoint() {
    // Slow enough that 6 concurrent requests need more than 2 connections.
    let a = TestServer::start("a", Duration::from_millis(200)).await;
    let proxy = Proxy::start(config(
        &[(a.addr, 1)],
        "{}",
        Some("{maxIdlePerEndpoint: 2}"),
    ));
    let mut requests = Vec::new();
    for i in 0..6 {
        let url = proxy.url(&format!("/{i}"));
        requests.push(tokio::spawn(async move {
            get(&url, &[("host", "svc")]).await.unwrap().status
        }));
    }
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    let accepted = a.accepted.load(Ordering::SeqCst);
    assert!(
        accepted > 2,
        "6 concurrent requests used only {accepted} upstream connections"
    );
    // Past the cap, connections are closed as their responses end.
    eventually(
        "2 idle connections kept, the rest closed",
        Duration::from_secs(3),
        || async { (a.open.load(Ordering::SeqCst) == 2).then_some(()) },
    )
    .await;
    assert_eq!(idle_connections(&proxy, a.addr).await, 2);
}
