//! RequestMirror's bounds end to end, with real clients, upstreams and
//! mirror targets: a mirror target that accepts and never answers costs
//! the primary nothing (its copies are capped and the rest counted
//! `skipped-limit`); the copy's Host carries the `-shadow` suffix; a body
//! over the bound is not copied (`skipped-body`) or, streamed, cut off
//! (`failed`) while the primary gets it whole.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_tests::wire::{h1_sender, Repeat};
use weft_tests::*;

fn backend(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  port: 9080\n  endpoints: [{{address: \"{addr}\"}}]\n---\n"
    )
}

/// `reviews` goes to `v1`; every request is copied to `shadow`.
fn mirrored(v1: SocketAddr, shadow: SocketAddr) -> String {
    let mut y = backend("reviews", v1);
    y.push_str(&backend("v1", v1));
    y.push_str(&backend("shadow", shadow));
    y.push_str("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: reviews}]\n  rules:\n    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: shadow}}}]\n      backendRefs: [{name: v1}]\n");
    y
}

/// What a mirror target saw of each request whose body it read whole:
/// its Host (or authority) and its body length.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

async fn recorder() -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let s = s.clone();
                    async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_owned)
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        if let Ok(body) = req.into_body().collect().await {
                            s.lock().unwrap().push((host, body.to_bytes().len()));
                        }
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"shadow"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn mirrors(p: &Proxy, result: &str) -> f64 {
    let label = format!("result=\"{result}\"");
    p.metric("weft_mirrors_total", &["default/shadow", &label])
        .await
}

#[tokio::test]
async fn a_hanging_mirror_does_not_slow_the_primary_and_its_copies_are_capped() {
    let v1 = Upstream::start("v1").await;
    let shadow = Faulty::start("shadow").await;
    shadow.set(Mode::Hang);
    let p = Proxy::start(mirrored(v1.addr, shadow.addr));
    // 8 clients, 40 requests each, every one copied to a target that never
    // answers: the primary's answers must not wait for the copies.
    let n = 320;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = p.url("/r");
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..40 {
                let t = Instant::now();
                let r = get(&url, &[("host", "reviews")]).await.expect("primary");
                assert_eq!(r.status, 200, "{}", r.text());
                assert_eq!(r.header("x-upstream"), Some("v1"));
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    let took = started.elapsed();
    eprintln!("primary: {n} answers in {took:?}, the slowest in {slowest:?}");
    assert_eq!(v1.requests(), n);
    // A copy waited on would take the mirror timeout (5 s) at least.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest primary answer took {slowest:?}"
    );
    // The cap: 100 copies in flight (hanging at the target); every other
    // copy is skipped, not queued. Copies abandoned at the 5 s mirror
    // timeout free their place, so allow for them when the run was slow.
    let arrived = eventually(
        "the copies reach the target",
        Duration::from_secs(10),
        || {
            let shadow = &shadow;
            let p = &p;
            async move {
                let skipped = mirrors(p, "skipped-limit").await as usize;
                (skipped + shadow.requests() == n).then_some(shadow.requests())
            }
        },
    )
    .await;
    // The hung copies hold their tasks and connections, no more than the
    // cap's worth, and never hit the mirror backend's circuit breaker.
    let tasks = p.metric("weft_runtime_alive_tasks", &[]).await as usize;
    eprintln!("{arrived} copies hanging; {tasks} tasks alive in the proxy");
    assert!(tasks < 200, "{tasks} tasks alive for {arrived} hung copies");
    assert_eq!(
        p.metric("weft_overflows_total", &["default/shadow"]).await,
        0.0
    );
    let failed = mirrors(&p, "failed").await as usize;
    assert!(
        arrived <= 100 + failed,
        "{arrived} copies in flight, {failed} abandoned"
    );
    assert!(arrived >= 100, "only {arrived} copies sent");
    if took < Duration::from_secs(4) {
        assert_eq!(arrived, 100, "the run took {took:?}");
        assert_eq!(mirrors(&p, "skipped-limit").await as usize, n - 100);
    }
    assert_eq!(mirrors(&p, "sent").await, 0.0);
    // The hung copies are abandoned at the mirror timeout, freeing the cap.
    eventually(
        "the hung copies are abandoned",
        Duration::from_secs(15),
        || async { (mirrors(&p, "failed").await as usize >= arrived).then_some(()) },
    )
    .await;
    let r = get(&p.url("/again"), &[("host", "reviews")]).await.unwrap();
    assert_eq!(r.status, 200);
    eventually("a new copy is sent", Duration::from_secs(10), || async {
        (shadow.requests() > arrived).then_some(())
    })
    .await;
}

#[tokio::test]
async fn copies_carry_a_shadow_host_and_bodies_over_the_bound_are_not_copied() {
    let v1 = Upstream::start("v1").await;
    let (shadow, seen) = recorder().await;
    let p = Proxy::start(mirrored(v1.addr, shadow));
    let limit = Duration::from_secs(10);

    // A small body: the copy is whole, and addressed to `reviews-shadow`.
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let req = http::Request::post("/upload")
        .header("host", "reviews:9080")
        .body(Full::new(Bytes::from(vec![b'u'; 1000])))
        .unwrap();
    assert_eq!(conn.send(req).await.unwrap().text(), "1000");
    eventually("the copy arrives", limit, || async {
        (seen.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        seen.lock().unwrap()[0],
        ("reviews-shadow:9080".to_owned(), 1000)
    );
    // Exactly at the bound (64 KiB) is still copied.
    let req = http::Request::post("/upload")
        .header("host", "reviews")
        .body(Full::new(Bytes::from(vec![b'u'; 65536])))
        .unwrap();
    assert_eq!(conn.send(req).await.unwrap().text(), "65536");
    eventually("the copy at the bound arrives", limit, || async {
        (seen.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        seen.lock().unwrap()[1],
        ("reviews-shadow".to_owned(), 65536)
    );

    // Over the bound with a Content-Length: not copied, the primary whole.
    let req = http::Request::post("/upload")
        .header("host", "reviews")
        .body(Full::new(Bytes::from(vec![b'u'; 65537])))
        .unwrap();
    assert_eq!(conn.send(req).await.unwrap().text(), "65537");
    assert_eq!(mirrors(&p, "skipped-body").await, 1.0);

    // Streamed (chunked, no length) across the bound: the primary gets it
    // whole, the copy is cut off and counted failed, never sent short.
    let mut tx = h1_sender(p.outbound).await;
    let req = http::Request::post("/upload")
        .header("host", "reviews")
        .body(StreamBody::new(Repeat::new(200_000, 16_384)))
        .unwrap();
    let r = tx.send_request(req).await.unwrap();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"200000");
    eventually("the cut-off copy is counted", limit, || async {
        (mirrors(&p, "failed").await == 1.0).then_some(())
    })
    .await;
    eventually("the whole copies are counted", limit, || async {
        (mirrors(&p, "sent").await == 2.0).then_some(())
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(v1.requests(), 4);
}
