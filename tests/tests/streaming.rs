//! Streaming through the sidecar: server-sent events arrive as they are
//! sent (HTTP/1.1 and HTTP/2), 1 GiB downloads and uploads pass with the
//! proxy's memory bounded, and a client that cancels reaches the upstream.
//!
//! The proxy binary must be built first (`cargo build -p weft-proxy`).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use weft_tests::wire::*;
use weft_tests::*;

/// Server-sent events are forwarded as they are produced, not buffered:
/// the first event arrives long before the upstream has sent the last one.
#[tokio::test]
async fn server_sent_events_are_not_buffered() {
    let up = Upstream::start("events").await;
    let up2 = Upstream::start("events-h2").await;
    let proxy = Proxy::start(config(&[
        backend("events", "http", 8080, up.addr),
        backend("events-h2", "http2", 8080, up2.addr),
    ]));

    // HTTP/1.1 client → HTTP/1.1 upstream.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let started = Instant::now();
    let resp = within(
        "sse headers",
        STEP,
        conn.send_streaming(get_req("events", "/sse/20/20")),
    )
    .await
    .expect("sse");
    check_sse("h1", started, resp).await;

    // HTTP/2 client → HTTP/2 upstream.
    let mut tx = h2_sender(proxy.outbound).await;
    let started = Instant::now();
    let req = Request::get("http://events-h2/sse/20/20")
        .body(empty())
        .unwrap();
    let resp = within("h2 sse headers", STEP, tx.send_request(req))
        .await
        .expect("h2 sse");
    check_sse("h2", started, resp).await;

    // HTTP/2 client → HTTP/1.1 upstream (translated).
    let started = Instant::now();
    let req = Request::get("http://events/sse/20/20")
        .body(empty())
        .unwrap();
    let resp = within("h2→h1 sse headers", STEP, tx.send_request(req))
        .await
        .expect("h2→h1 sse");
    check_sse("h2→h1", started, resp).await;
}

/// 20 events 20 ms apart: the upstream sends the last ≥ 380 ms after the first.
async fn check_sse(label: &str, started: Instant, resp: Response<Incoming>) {
    assert_eq!(resp.status(), 200, "{label}");
    assert_eq!(
        header(&resp, "content-type"),
        "text/event-stream",
        "{label}"
    );
    let mut body = resp.into_body();
    let (mut events, mut frames) = (0, 0);
    let mut text = String::new();
    let (mut first, mut last) = (None, Duration::ZERO);
    while let Some(f) = within("next sse frame", STEP, body.frame()).await {
        let Ok(data) = f.expect("sse frame").into_data() else {
            continue;
        };
        let at = started.elapsed();
        frames += 1;
        text.push_str(&String::from_utf8_lossy(&data));
        let now = text.matches("\n\n").count();
        if now > events {
            first.get_or_insert(at);
            last = at;
            events = now;
        }
    }
    let first = first.expect("no event");
    assert_eq!(events, 20, "{label}: {text}");
    assert!(
        text.starts_with("data: event 0\n\n") && text.ends_with("data: event 19\n\n"),
        "{label}: {text}"
    );
    assert!(
        first < Duration::from_millis(300),
        "{label}: first event after {first:?}"
    );
    assert!(
        last >= Duration::from_millis(380),
        "{label}: last event after {last:?}"
    );
    assert!(
        last - first >= Duration::from_millis(300),
        "{label}: events arrived together ({first:?}..{last:?}), buffered?"
    );
    assert!(
        frames >= 5,
        "{label}: 20 events arrived in only {frames} frames"
    );
}

/// 1 GiB downloaded through the proxy, read in chunks; the proxy's memory
/// stays bounded because bodies stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_1gib_with_bounded_proxy_memory() {
    let up = Upstream::start("big").await;
    let proxy = Proxy::start(backend("big", "http", 8080, up.addr));
    let sampler = RssSampler::start(proxy.pid());
    let started = Instant::now();
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let resp = within(
        "download headers",
        STEP,
        conn.send_streaming(get_req("big", &format!("/bytes/{GIB}"))),
    )
    .await
    .expect("download");
    assert_eq!(resp.status(), 200);
    let n = within(
        "1 GiB download",
        Duration::from_secs(120),
        count_body(resp.into_body(), Some(b'x')),
    )
    .await;
    assert_eq!(n, GIB);
    bounded_memory("download", started, sampler);
}

/// Reports a 1 GiB transfer's speed and checks the proxy's peak RSS
/// stayed under 64 MiB.
fn bounded_memory(what: &str, started: Instant, sampler: RssSampler) {
    let took = started.elapsed();
    let peak = sampler.finish();
    eprintln!(
        "1 GiB {what}: {took:?} ({:.0} MiB/s), proxy peak RSS {} KiB",
        GIB as f64 / MIB as f64 / took.as_secs_f64(),
        peak
    );
    assert!(peak > 0, "could not read the proxy's RSS");
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} KiB during a 1 GiB {what}"
    );
}

/// 1 GiB uploaded through the proxy, written in chunks (with a
/// Content-Length); the upstream counts every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_1gib_with_bounded_proxy_memory() {
    let up = Upstream::start("big").await;
    let proxy = Proxy::start(backend("big", "http", 8080, up.addr));
    let sampler = RssSampler::start(proxy.pid());
    let started = Instant::now();
    let mut tx = h1_sender::<StreamBody<Repeat>>(proxy.outbound).await;
    let req = Request::post("/upload")
        .header("host", "big")
        .header("content-length", GIB.to_string())
        .body(StreamBody::new(Repeat::new(GIB, 64 * 1024)))
        .unwrap();
    let resp = within(
        "1 GiB upload",
        Duration::from_secs(120),
        tx.send_request(req),
    )
    .await
    .expect("upload");
    assert_eq!(resp.status(), 200);
    let body = within("upload answer", STEP, resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), GIB.to_string());
    bounded_memory("upload", started, sampler);
}

/// When the client goes away mid-stream, the upstream hears of it (its
/// stream is reset or its connection closed) instead of producing for
/// nobody — for every client/upstream protocol pair.
#[tokio::test]
async fn client_cancellation_reaches_the_upstream() {
    // An upstream streaming forever; it reports when a send fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let gone_tx = gone_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let gone_tx = gone_tx.clone();
                    async move {
                        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
                        tokio::spawn(async move {
                            while tx.send(Bytes::from_static(b"tick\n")).await.is_ok() {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            let _ = gone_tx.send(());
                        });
                        Ok::<_, Infallible>(Response::new(StreamBody::new(Chan(rx))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(config(&[
        backend("forever-h1", "http", 8080, up_addr),
        backend("forever-h2", "http2", 8080, up_addr),
    ]));
    for (host, client_h2) in [
        ("forever-h1", false),
        ("forever-h2", false),
        ("forever-h1", true),
        ("forever-h2", true),
    ] {
        let label = format!("{} client → {host}", if client_h2 { "h2" } else { "h1" });
        if client_h2 {
            let mut tx = h2_sender(proxy.outbound).await;
            let req = Request::get(format!("http://{host}/forever"))
                .body(empty())
                .unwrap();
            let resp = within(&label, STEP, tx.send_request(req))
                .await
                .expect("h2");
            let mut body = resp.into_body();
            within(&label, STEP, body.frame())
                .await
                .expect("a frame")
                .expect("frame");
            // Dropping the body resets the stream; the connection stays open.
            drop(body);
            within(
                &format!("{label}: upstream to notice"),
                STEP,
                gone_rx.recv(),
            )
            .await
            .expect("notice");
            drop(tx);
        } else {
            let mut conn = Conn::open(proxy.outbound).await.unwrap();
            let resp = within(&label, STEP, conn.send_streaming(get_req(host, "/forever")))
                .await
                .expect("h1");
            let mut body = resp.into_body();
            within(&label, STEP, body.frame())
                .await
                .expect("a frame")
                .expect("frame");
            drop(body);
            drop(conn);
            within(
                &format!("{label}: upstream to notice"),
                STEP,
                gone_rx.recv(),
            )
            .await
            .expect("notice");
        }
    }
}
