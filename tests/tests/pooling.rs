//! End-to-end upstream connection pooling: reuse across client
//! connections, idle expiry, per-endpoint caps, and pooled connections
//! following endpoints through hot reloads. Idle expiry has no event to wait
//! on, so it is polled.

use http_body_util::BodyExt;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use weft_tests::svc::*;
use weft_tests::{eventually, get, Conn, Proxy, Upstream};

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
    proxy.reload(&config(&equal(&[a, b, c, d]), rr, None)).await;
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
    proxy.reload(&config(&equal(&kept), rr, None)).await;
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

    proxy.reload(&config(&[(a.addr, 1)], rr, None)).await;
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
