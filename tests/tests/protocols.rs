//! End-to-end HTTP semantics through the sidecar, with real clients and
//! upstreams on loopback: HTTP/1.1 keep-alive and connection reuse, a pool
//! that survives abandoned responses, chunked bodies streamed both ways,
//! HTTP/2 downstream (native and translated to HTTP/1.1, with nghttp),
//! pipelining, `Expect: 100-continue` and upgrade offers.
//!
//! The proxy binary must be built first (`cargo build -p weft-proxy`). Tests
//! that need `nghttp` or `curl` skip locally without them and fail under CI
//! (env `CI`).

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::wire::*;
use weft_tests::*;

// ------------------------------------------------------------------ tests

/// Fifty sequential requests on one client connection all succeed, and the
/// proxy reuses its upstream connection instead of dialling per request.
#[tokio::test]
async fn http1_keep_alive_reuses_upstream_connections() {
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(backend("echo", "http", 8080, up.addr));
    let mut conn = Conn::open(proxy.outbound).await.expect("connect to proxy");
    for i in 0..50 {
        let r = within(
            "keep-alive request",
            STEP,
            conn.send(get_req("echo", &format!("/ka/{i}"))),
        )
        .await
        .expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.header("x-upstream"), Some("echo"));
        assert_eq!(r.text(), format!("echo GET /ka/{i}\n"));
    }
    assert_eq!(up.requests(), 50);
    assert!(
        up.connections() <= 2,
        "upstream saw {} connections for 50 requests",
        up.connections()
    );
    let dials = proxy.metric("weft_upstream_connects_total", &["ok"]).await;
    assert!(
        (1.0..=2.0).contains(&dials),
        "proxy dialled {dials} upstream connections"
    );

    // Bodiless answers (HEAD, 204, 304) end without a body to read: the
    // upstream connection still goes back to the pool.
    for i in 0..10 {
        let head = Request::head(format!("/bytes/100?{i}"))
            .header("host", "echo")
            .body(empty())
            .unwrap();
        for (req, status) in [
            (head, 200),
            (get_req("echo", "/status/204"), 204),
            (get_req("echo", "/status/304"), 304),
        ] {
            let r = within("bodiless request", STEP, conn.send(req))
                .await
                .expect("request");
            assert_eq!(r.status, status);
            assert!(r.body.is_empty());
        }
    }
    assert!(
        up.connections() <= 2,
        "upstream saw {} connections after HEAD/204/304 requests",
        up.connections()
    );
}

/// A client that hangs up half-way through a response must not leave its
/// upstream connection in the pool with unread bytes: the next requests
/// get their own, correct answers.
#[tokio::test]
async fn abandoned_response_does_not_poison_the_pool() {
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(backend("echo", "http", 8080, up.addr));
    {
        let mut conn = Conn::open(proxy.outbound).await.unwrap();
        let resp = within(
            "download headers",
            STEP,
            conn.send_streaming(get_req("echo", "/bytes/50000000")),
        )
        .await
        .expect("download");
        let mut body = resp.into_body();
        within("first frame", STEP, body.frame())
            .await
            .expect("a frame")
            .expect("frame");
        // Dropping the body and the connection abandons the download.
    }
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    for i in 0..5 {
        let r = within(
            "request after an abandoned download",
            STEP,
            conn.send(get_req("echo", &format!("/after/{i}"))),
        )
        .await
        .expect("request");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), format!("echo GET /after/{i}\n"));
    }
    assert!(
        up.connections() >= 2,
        "the abandoned upstream connection was reused"
    );
}

/// A chunked upload streams through: the upstream reads the first chunk
/// while the client is still holding back the rest (a proxy that buffered
/// the body would deadlock here), and a chunked response streams back.
#[tokio::test]
async fn chunked_bodies_stream_both_ways() {
    // An upstream that reports when it has received the first body bytes.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let first_tx = Arc::new(std::sync::Mutex::new(Some(first_tx)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let first_tx = first_tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let first_tx = first_tx.clone();
                    async move {
                        let te = header_str(req.headers(), "transfer-encoding");
                        let mut body = req.into_body();
                        let mut total = 0u64;
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                total += d.len() as u64;
                                if total > 0 {
                                    if let Some(tx) = first_tx.lock().unwrap().take() {
                                        let _ = tx.send(());
                                    }
                                }
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                            "{total} {te}"
                        )))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let up = Upstream::start("bytes").await;
    let proxy = Proxy::start(config(&[
        backend("sink", "http", 8080, up_addr),
        backend("bytes", "http", 8080, up.addr),
    ]));

    // Upload: 64 KiB, then wait for the upstream to see it, then 8 MiB more.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut sender = h1_sender::<StreamBody<Chan>>(proxy.outbound).await;
    let req = Request::post("/upload")
        .header("host", "sink")
        .body(StreamBody::new(Chan(rx)))
        .unwrap();
    let resp = tokio::spawn(async move { sender.send_request(req).await });
    let chunk = Bytes::from(vec![b'c'; 64 * 1024]);
    tx.send(chunk.clone()).await.unwrap();
    within(
        "upstream to receive the first chunk while the client holds the rest",
        STEP,
        first_rx,
    )
    .await
    .expect("upstream signal");
    for _ in 0..128 {
        within("send a chunk", STEP, tx.send(chunk.clone()))
            .await
            .unwrap();
    }
    drop(tx);
    let resp = within("upload response", STEP, resp)
        .await
        .unwrap()
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let body = within("upload body", STEP, resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!("{} chunked", 129 * 64 * 1024)
    );

    // Download: the upstream streams with no length; the client gets it chunked.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let resp = within(
        "download headers",
        STEP,
        conn.send_streaming(get_req("bytes", "/bytes/5000000")),
    )
    .await
    .expect("download");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "transfer-encoding"), "chunked");
    assert!(resp.headers().get("content-length").is_none());
    let n = within(
        "download body",
        STEP,
        count_body(resp.into_body(), Some(b'x')),
    )
    .await;
    assert_eq!(n, 5_000_000);
}

fn header_str(h: &http::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// An HTTP/2 client reaches an `http2` backend over HTTP/2 and an `http`
/// backend over HTTP/1.1 (translated), multiplexed on one connection; the
/// real `nghttp` client works too.
#[tokio::test]
async fn http2_downstream_native_and_translated() {
    let h1 = Upstream::start("echo").await;
    let h2 = Upstream::start("echo-h2").await;
    let proxy = Proxy::start(config(&[
        backend("echo", "http", 8080, h1.addr),
        backend("echo-h2", "http2", 8080, h2.addr),
    ]));

    let mut conn = H2Conn::open(proxy.outbound).await.expect("h2 connect");
    let r = within(
        "h2 → http2",
        STEP,
        conn.send(Request::get("http://echo-h2/native").body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("echo-h2"));
    assert_eq!(r.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(r.header("x-seen-host"), Some("echo-h2"));

    let r = within(
        "h2 → http",
        STEP,
        conn.send(
            Request::get("http://echo:8080/translated")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("echo"));
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(r.header("x-seen-host"), Some("echo:8080"));
    assert_eq!(r.text(), "echo GET /translated\n");

    // A body crosses the translation in both directions.
    let body = Bytes::from(vec![b'p'; MIB as usize]);
    let r = within(
        "h2 upload → http",
        STEP,
        conn.send(
            Request::post("http://echo/upload")
                .body(Full::new(body))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.text(), MIB.to_string());
    let r = within(
        "h2 download ← http",
        STEP,
        conn.send(
            Request::get("http://echo/bytes/3000000")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(r.body.len(), 3_000_000);

    // Concurrent streams on one client connection share one upstream connection.
    let tx = h2_sender(proxy.outbound).await;
    let calls = (0..20).map(|i| {
        let mut tx = tx.clone();
        async move {
            let req = Request::get(format!("http://echo-h2/delay/{}", 50 + i))
                .body(empty())
                .unwrap();
            let resp = tx.send_request(req).await.expect("h2 stream");
            assert_eq!(resp.status(), 200);
            resp.into_body().collect().await.expect("h2 body");
        }
    });
    within("20 concurrent h2 streams", STEP, join_all(calls)).await;
    assert_eq!(
        h2.connections(),
        1,
        "the http2 backend should see one multiplexed connection"
    );

    if !require_tool("nghttp") {
        return;
    }
    let url = format!("http://{}/via-nghttp", proxy.outbound);
    let (ok, out) = run_tool("nghttp", &["-v", "-H", ":authority: echo-h2", &url]).await;
    assert!(ok, "nghttp failed:\n{out}");
    for want in [
        ":status: 200",
        "x-upstream: echo-h2",
        "x-seen-version: HTTP/2.0",
        "echo-h2 GET http://echo-h2/via-nghttp",
    ] {
        assert!(out.contains(want), "nghttp output lacks {want:?}:\n{out}");
    }
    let (ok, out) = run_tool("nghttp", &["-v", "-H", ":authority: echo:8080", &url]).await;
    assert!(ok, "nghttp failed:\n{out}");
    for want in [
        ":status: 200",
        "x-upstream: echo",
        "x-seen-version: HTTP/1.1",
        "echo GET /via-nghttp",
    ] {
        assert!(out.contains(want), "nghttp output lacks {want:?}:\n{out}");
    }
}

/// Runs futures concurrently on this task (no extra dependency).
async fn join_all<F: Future<Output = ()> + Send + 'static>(futs: impl IntoIterator<Item = F>) {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("task");
    }
}

/// Reads from `s` until `n` complete HTTP/1.1 responses with
/// Content-Length bodies have arrived; returns their status lines and bodies.
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        let read = within("raw responses", STEP, s.read(&mut chunk))
            .await
            .expect("read");
        assert!(read > 0, "connection closed after {out:?}");
        buf.extend_from_slice(&chunk[..read]);
        // Parse every complete response at the front of the buffer.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            out.push((head.lines().next().unwrap_or("").to_owned(), body));
            buf.drain(..end + 4 + len);
        }
    }
    out
}

/// An upgrade the upstream refuses is an ordinary response, and the client
/// connection carries on; pipelined requests are answered in order.
#[tokio::test]
async fn refused_upgrade_and_pipelined_requests() {
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(backend("echo", "http", 8080, up.addr));
    let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
    s.write_all(
        b"GET /status/403 HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_responses(&mut s, 1).await;
    assert_eq!(r[0].0, "HTTP/1.1 403 Forbidden");
    assert_eq!(r[0].1, "echo status 403\n");
    // Two requests in one write.
    s.write_all(
        b"GET /second HTTP/1.1\r\nHost: echo\r\n\r\nGET /third HTTP/1.1\r\nHost: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_responses(&mut s, 2).await;
    assert_eq!(
        r[0],
        ("HTTP/1.1 200 OK".into(), "echo GET /second\n".into())
    );
    assert_eq!(r[1], ("HTTP/1.1 200 OK".into(), "echo GET /third\n".into()));
}

/// `Expect: 100-continue` (curl sends it for large uploads): the proxy lets
/// the client go on at once; curl is told to wait 15 s for the 100 otherwise.
#[tokio::test]
async fn expect_continue_upload_is_not_delayed() {
    if !require_tool("curl") {
        return;
    }
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(backend("echo", "http", 8080, up.addr));
    let dir = TempDir::new("expect");
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, vec![b'e'; 3 * MIB as usize]).unwrap();
    let url = format!("http://{}/upload", proxy.outbound);
    let started = Instant::now();
    let (ok, out) = run_tool(
        "curl",
        &[
            "-sS",
            "--noproxy",
            "*",
            "--expect100-timeout",
            "15",
            "-H",
            "Expect: 100-continue",
            "-H",
            "Host: echo",
            "-T",
            file.to_str().unwrap(),
            &url,
        ],
    )
    .await;
    let took = started.elapsed();
    assert!(ok, "curl failed: {out}");
    assert_eq!(out, (3 * MIB).to_string());
    assert!(
        took < Duration::from_secs(5),
        "upload took {took:?}: no 100 Continue?"
    );
}

/// A request offering an upgrade (`Connection: Upgrade`) may carry a body —
/// `curl --http2 -d data http://…` sends exactly that (an h2c offer on a
/// POST). The upstream must receive the body whether or not it accepts the
/// upgrade.
#[tokio::test]
async fn upgrade_offer_with_a_request_body_keeps_the_body() {
    let up = Upstream::start("echo").await;
    let proxy = Proxy::start(backend("echo", "http", 8080, up.addr));
    for (label, req) in [
        (
            "content-length",
            &b"POST /upload HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello"[..],
        ),
        (
            "chunked",
            &b"POST /upload HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        ),
    ] {
        let mut s = TcpStream::connect(proxy.outbound).await.unwrap();
        s.write_all(req).await.unwrap();
        let r = read_responses(&mut s, 1).await;
        assert_eq!(r[0], ("HTTP/1.1 200 OK".into(), "5".into()), "{label}");
    }
}
