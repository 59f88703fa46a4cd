//! Hedged requests end to end: a GET stuck at a slow endpoint is answered
//! by a copy sent to another one, and the slow endpoint sees its copy
//! cancelled (HTTP/1: connection closed; HTTP/2: stream reset). POSTs are
//! never hedged, and without retry budget no hedge goes out.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use weft_tests::*;

/// A Backend `svc` over `eps` (round robin, so first tries alternate) with
/// `policy` lines added to its TrafficPolicy.
fn config(eps: &[SocketAddr], protocol: &str, policy: &str) -> String {
    let list: Vec<String> = eps
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  protocol: {protocol}\n  endpoints: [{}]\n---\n\
         apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  loadBalancer: {{policy: RoundRobin}}\n{policy}",
        list.join(", ")
    )
}

fn req(method: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri("/")
        .header("host", "svc")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// Sends `n` GETs one after another; each must be answered 200 by `fast`
/// well before `slow` would answer.
async fn gets_answered_fast(p: &Proxy, n: usize, within: Duration) {
    let mut conn = Conn::open(p.outbound).await.expect("connect to proxy");
    for i in 0..n {
        let t = Instant::now();
        let r = conn.send(req("GET", b"")).await.expect("answer");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text().trim(), "fast ok", "request {i}");
        assert!(
            t.elapsed() < within,
            "request {i} took {:?} (the hedge should answer it)",
            t.elapsed()
        );
    }
}

async fn hedged_get_wins_and_cancels_the_slow_try(protocol: &str) {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set(Mode::Slow(Duration::from_secs(30)));
    let yaml = config(
        &[slow.addr, fast.addr],
        protocol,
        "  hedge: {delay: 50ms}\n  retry: {budget: {percent: 100, minRetriesPerSecond: 100}}\n",
    );
    let p = Proxy::builder(yaml).arg("--access-log").arg("on").start();
    gets_answered_fast(&p, 6, Duration::from_secs(5)).await;
    // Round robin sent some first tries to the slow endpoint: each of those
    // was hedged, and the slow copy cancelled upstream.
    assert!(
        slow.requests() >= 1,
        "no first try went to the slow endpoint"
    );
    eventually(
        "the slow endpoint to see every hedged-away request cancelled",
        Duration::from_secs(10),
        || async { (slow.cancelled() == slow.requests()).then_some(()) },
    )
    .await;
    let sent = p.metric("weft_hedges_total", &["result=\"sent\""]).await;
    let won = p.metric("weft_hedges_total", &["result=\"won\""]).await;
    assert_eq!(sent, slow.requests() as f64, "one hedge per slow first try");
    assert_eq!(won, sent, "every hedge answered first");
    assert_eq!(fast.cancelled(), 0);
    // The access log flags the hedged requests.
    let hedged = eventually("access lines", Duration::from_secs(5), || {
        let lines: Vec<Value> = p
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "weft::access")
            .collect();
        async move { (lines.len() == 6).then_some(lines) }
    })
    .await
    .into_iter()
    .filter(|l| l["flags"] == "HE")
    .count();
    assert_eq!(hedged as f64, sent);
}

#[tokio::test]
async fn hedged_get_is_answered_by_the_fast_endpoint_and_the_slow_try_is_closed_h1() {
    hedged_get_wins_and_cancels_the_slow_try("http").await;
}

#[tokio::test]
async fn hedged_get_is_answered_by_the_fast_endpoint_and_the_slow_stream_is_reset_h2() {
    hedged_get_wins_and_cancels_the_slow_try("http2").await;
}

#[tokio::test]
async fn a_post_is_never_hedged() {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set(Mode::Slow(Duration::from_millis(400)));
    let yaml = config(
        &[slow.addr, fast.addr],
        "http",
        "  hedge: {delay: 20ms}\n  retry: {budget: {percent: 100, minRetriesPerSecond: 100}}\n",
    );
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let mut slowest = Duration::ZERO;
    for _ in 0..4 {
        let t = Instant::now();
        let r = conn.send(req("POST", b"order")).await.unwrap();
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    assert_eq!(
        slow.requests() + fast.requests(),
        4,
        "one upstream request per POST"
    );
    assert_eq!(slow.requests(), 2);
    assert!(
        slowest >= Duration::from_millis(400),
        "the slow POST waited for its answer"
    );
    assert_eq!(slow.cancelled(), 0);
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"sent\""]).await,
        0.0
    );
}

#[tokio::test]
async fn without_retry_budget_no_hedge_is_sent() {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set(Mode::Slow(Duration::from_millis(300)));
    let yaml = config(
        &[slow.addr, fast.addr],
        "http",
        "  hedge: {delay: 20ms}\n  retry: {budget: {percent: 0, minRetriesPerSecond: 0}}\n",
    );
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for _ in 0..4 {
        let r = conn.send(req("GET", b"")).await.unwrap();
        assert_eq!(r.status, 200);
    }
    assert!(
        slow.requests() >= 1,
        "no first try went to the slow endpoint"
    );
    assert_eq!(slow.requests() + fast.requests(), 4, "no copy was sent");
    assert_eq!(slow.cancelled(), 0);
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"sent\""]).await,
        0.0
    );
    // Each request still waiting at the delay wanted a hedge and had no budget.
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"no-budget\""])
            .await,
        slow.requests() as f64
    );
}

#[tokio::test]
async fn a_percentile_delay_waits_for_samples_then_hedges() {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    let yaml = config(
        &[slow.addr, fast.addr],
        "http",
        "  hedge: {percentile: 90}\n  retry: {budget: {percent: 100, minRetriesPerSecond: 100}}\n",
    );
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    // Both endpoints fast: 20 samples warm the window; none is hedged.
    for _ in 0..20 {
        assert_eq!(conn.send(req("GET", b"")).await.unwrap().status, 200);
    }
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"sent\""]).await,
        0.0
    );
    // Now slow: the 90th percentile of fast answers is milliseconds.
    slow.set(Mode::Slow(Duration::from_secs(30)));
    let before = slow.requests();
    gets_answered_fast(&p, 4, Duration::from_secs(5)).await;
    let hedged = slow.requests() - before;
    assert!(hedged >= 1, "no first try went to the slow endpoint");
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"won\""]).await,
        hedged as f64
    );
}

#[tokio::test]
async fn mesh_mode_streams_the_hedge_policy_to_the_sidecar() {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set(Mode::Slow(Duration::from_secs(30)));
    let cp = ControlPlane::start(
        &config(
            &[slow.addr, fast.addr],
            "http",
            "  hedge: {delay: 50ms, maxHedges: 1}\n  retry: {budget: {percent: 100, minRetriesPerSecond: 100}}\n",
        ),
        &[],
    );
    let b = cp.sidecar("default", "client");
    let p = b.start();
    eventually("the proxy is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    gets_answered_fast(&p, 4, Duration::from_secs(5)).await;
    assert!(
        slow.requests() >= 1,
        "no first try went to the slow endpoint"
    );
    eventually(
        "the slow endpoint to see the hedged-away requests cancelled",
        Duration::from_secs(10),
        || async { (slow.cancelled() == slow.requests()).then_some(()) },
    )
    .await;
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"won\""]).await,
        slow.requests() as f64
    );
}

#[tokio::test]
async fn a_put_with_a_body_is_hedged_with_its_whole_body() {
    let slow = Faulty::start("slow").await;
    let fast = Faulty::start("fast").await;
    slow.set(Mode::Slow(Duration::from_secs(30)));
    let yaml = config(
        &[slow.addr, fast.addr],
        "http",
        "  hedge: {delay: 50ms}\n  retry: {budget: {percent: 100, minRetriesPerSecond: 100}}\n",
    );
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for i in 0..4 {
        let t = Instant::now();
        let r = conn.send(req("PUT", b"twelve bytes")).await.unwrap();
        assert_eq!((r.status, r.text().trim()), (200, "fast ok"), "request {i}");
        assert!(t.elapsed() < Duration::from_secs(5), "request {i}");
    }
    assert!(
        slow.requests() >= 1,
        "no first try went to the slow endpoint"
    );
    // Every copy, hedge or not, carried the whole body.
    assert!(
        fast.bodies().iter().all(|n| *n == 12),
        "{:?}",
        fast.bodies()
    );
    assert_eq!(fast.requests(), 4);
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"won\""]).await,
        slow.requests() as f64
    );
}

#[tokio::test]
async fn a_hedge_that_fails_waits_for_the_first_try() {
    let slow = Faulty::start("slow").await;
    let broken = Faulty::start("broken").await;
    slow.set(Mode::Slow(Duration::from_millis(300)));
    broken.set(Mode::Reset);
    // First tries by a hash of `x-key`, so some start at each endpoint
    // whatever the order of earlier picks.
    let yaml = config(
        &[slow.addr, broken.addr],
        "http",
        "  hedge: {delay: 50ms}\n  retry: {attempts: 2, retryOn: [connect-failure, reset], budget: {percent: 100, minRetriesPerSecond: 100}}\n  outlierDetection: {consecutiveFailures: 100}\n",
    )
    .replace("policy: RoundRobin", "policy: RingHash, hashOn: {header: x-key}");
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for i in 0..8 {
        let mut r = req("GET", b"");
        r.headers_mut()
            .insert("x-key", format!("key-{i}").parse().unwrap());
        let r = conn.send(r).await.unwrap();
        // Hedged at `broken` (reset): the slow first try is awaited, not
        // dropped. Started at `broken`: retried at `slow`.
        assert_eq!(
            (r.status, r.text().trim()),
            (200, "slow slow ok"),
            "request {i}"
        );
    }
    assert_eq!(
        slow.requests(),
        8,
        "every request was answered by the slow endpoint"
    );
    assert_eq!(slow.cancelled(), 0, "no slow try was given up on");
    assert!(p.metric("weft_hedges_total", &["result=\"sent\""]).await >= 1.0);
    assert_eq!(
        p.metric("weft_hedges_total", &["result=\"won\""]).await,
        0.0
    );
}
