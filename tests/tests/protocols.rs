//! End-to-end protocol coverage: every wire protocol the sidecar carries, with
//! real peers on loopback ports chosen by the kernel — HTTP/1.1 keep-alive and
//! chunked streaming, HTTP/2 (and translation to HTTP/1.1), gRPC and WebSocket
//! with Python peers (`tests/peers/`), server-sent events, 1 GiB transfers
//! under a memory bound, CONNECT tunnels and the inbound side.
//!
//! The proxy binary must be built first (`cargo build -p weft-proxy`). Tests
//! that need `nghttp`, `curl` or the Python modules `grpc` / `websockets`
//! skip locally without them and fail under CI (env `CI`).

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::*;

/// Bound on any single step that should be quick (a request, a handshake).
const STEP: Duration = Duration::from_secs(10);
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// One `Backend` document with a single static endpoint.
fn backend(name: &str, protocol: &str, port: u16, endpoint: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  protocol: {protocol}\n  port: {port}\n  endpoints: [{{address: \"{endpoint}\"}}]\n"
    )
}

fn config(docs: &[String]) -> String {
    docs.join("---\n")
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

fn get_req(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

fn header<'a, B>(resp: &'a Response<B>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An HTTP/1.1 client connection with any request body type.
async fn h1_sender<B>(addr: SocketAddr) -> http1::SendRequest<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("h1 handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    tx
}

/// An HTTP/2 prior-knowledge client connection whose sender can be cloned
/// and whose responses are handed back still streaming.
async fn h2_sender(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx
}

/// Reads a body to its end, counting its bytes (and checking, cheaply, that
/// each frame is the upstream's filler byte when `filler` is given).
async fn count_body(mut body: Incoming, filler: Option<u8>) -> u64 {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap_or_else(|e| panic!("body failed after {n} bytes: {e}"));
        if let Ok(data) = frame.into_data() {
            if let (Some(f), Some(first), Some(last)) = (filler, data.first(), data.last()) {
                assert!(
                    *first == f && *last == f,
                    "unexpected byte in the body near offset {n}"
                );
            }
            n += data.len() as u64;
        }
    }
    n
}

/// A request body of `left` bytes made of one shared chunk (no allocation per frame).
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    fn new(total: u64, chunk_size: usize) -> Repeat {
        Repeat {
            left: total,
            chunk: Bytes::from(vec![b'u'; chunk_size]),
        }
    }
}

impl futures_core::Stream for Repeat {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

/// A request body fed through a channel, frame by frame, as the test decides.
struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chan {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A raw TCP echo server: every byte comes back; EOF is answered with EOF.
async fn tcp_echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Samples a process's resident memory every 100 ms on its own thread (so a
/// busy test runtime cannot delay it) and remembers the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssSampler { stop, peak, thread }
    }

    /// Stops sampling; returns the peak in KiB.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// A Python server from `tests/peers/`, killed when dropped.
struct Peer {
    _child: tokio::process::Child,
    port: u16,
}

/// Starts `script server 0` and waits for its "READY <port>" line.
async fn start_peer(script: &str) -> Peer {
    let mut child = tokio::process::Command::new("python3")
        .arg(peers_dir().join(script))
        .args(["server", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = within(
        &format!("{script} to print READY"),
        Duration::from_secs(30),
        lines.next_line(),
    )
    .await
    .expect("read peer stdout")
    .unwrap_or_else(|| panic!("{script} exited before READY"));
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{script}: unexpected first line {line:?}"));
    // The server prints nothing more; keep its stdout open anyway.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Peer {
        _child: child,
        port,
    }
}

/// Runs `script client args..` to completion; returns the JSON it printed.
async fn run_peer_client(script: &str, args: &[&str]) -> serde_json::Value {
    let out = within(
        &format!("{script} client"),
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(peers_dir().join(script))
            .arg("client")
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} client failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{script} client printed no JSON ({e}): {stdout}\nstderr: {stderr}")
    })
}

/// Runs a command-line tool to completion, bounded; returns (success, stdout + stderr).
async fn run_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let out = within(
        &format!("{tool} {args:?}"),
        Duration::from_secs(20),
        tokio::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

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

/// gRPC through a `grpc` Backend with grpcio peers: unary (with initial and
/// trailing metadata), a 1 MiB message, server streaming, a status with
/// details carried in trailers, and bidirectional streaming.
#[tokio::test]
async fn grpc_calls_statuses_and_trailers() {
    if !require_python_module("grpc") {
        return;
    }
    let server = start_peer("grpc_peer.py").await;
    let proxy = Proxy::start(backend(
        "echo-grpc",
        "grpc",
        50051,
        SocketAddr::from(([127, 0, 0, 1], server.port)),
    ));
    let out = run_peer_client(
        "grpc_peer.py",
        &[&proxy.outbound.to_string(), "echo-grpc:50051"],
    )
    .await;

    assert_eq!(out["unary"], "echo:hi", "{out}");
    assert_eq!(out["unary_code"], "OK", "{out}");
    assert_eq!(out["unary_initial"]["x-initial"], "hello", "{out}");
    assert_eq!(out["unary_trailing"]["x-trailer"], "tval", "{out}");
    assert_eq!(out["unary_trailing"]["x-bin-bin"], "0001ff", "{out}");
    assert_eq!(out["unary_big_ok"], true, "{out}");
    assert_eq!(
        out["stream"],
        serde_json::json!(["msg-0", "msg-1", "msg-2", "msg-3", "msg-4"]),
        "{out}"
    );
    assert_eq!(out["stream_code"], "OK", "{out}");
    assert_eq!(out["fail_code"], "NOT_FOUND", "{out}");
    assert_eq!(out["fail_details"], "nope", "{out}");
    assert_eq!(out["fail_trailing"]["x-why"], "missing", "{out}");
    assert_eq!(out["bidi"], serde_json::json!(["A", "BC", "DEF"]), "{out}");

    // All five calls went through the proxy, each an HTTP 200 (the gRPC status is in trailers).
    let calls = proxy
        .metric("weft_requests_total", &["echo-grpc", "2xx"])
        .await;
    assert_eq!(calls, 5.0, "{}", proxy.admin_get("/metrics").await.1);
}

/// A WebSocket session through an `http` Backend (and one through the
/// inbound listener): the upgrade is spliced, text and binary messages (up
/// to 1 MiB) round-trip, and the close is clean.
#[tokio::test]
async fn websocket_upgrade_round_trips_messages() {
    if !require_python_module("websockets") {
        return;
    }
    let server = start_peer("ws_peer.py").await;
    let server_addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let proxy = Proxy::builder(backend("echo-ws", "http", 8080, server_addr))
        .app(server_addr)
        .start();
    // Outbound, by Backend name; then inbound, to the app.
    for (listener, uri, host) in [
        (proxy.outbound, "ws://echo-ws:8080/ws", "echo-ws:8080"),
        (proxy.inbound, "ws://my-app:9090/ws", "my-app:9090"),
    ] {
        let out = run_peer_client("ws_peer.py", &[&listener.to_string(), uri]).await;
        assert_eq!(out["status"], 101, "{uri}: {out}");
        assert_eq!(out["whoami"]["host"], host, "{uri}: {out}");
        assert_eq!(out["whoami"]["path"], "/ws", "{uri}: {out}");
        assert_eq!(
            out["texts_ok"],
            serde_json::json!([true, true, true]),
            "{uri}: {out}"
        );
        assert_eq!(
            out["binary_ok"],
            serde_json::json!([true, true]),
            "{uri}: {out}"
        );
        assert_eq!(out["close_code"], 1000, "{uri}: {out}");
    }

    // The spliced bytes are counted once the connection has closed.
    let payload = (5 + "wörld".len() + 70_000 + 10 + MIB as usize) as f64;
    let counted = eventually(
        "weft_tcp_bytes_total{direction=\"upgrade\"} to count the session",
        STEP,
        || async {
            let n = proxy
                .metric("weft_tcp_bytes_total", &["direction=\"upgrade\""])
                .await;
            (n >= 2.0 * payload).then_some(n)
        },
    )
    .await;
    assert!(counted >= 2.0 * payload);
}

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
    let took = started.elapsed();
    let peak = sampler.finish();
    eprintln!(
        "1 GiB download: {took:?} ({:.0} MiB/s), proxy peak RSS {} KiB",
        GIB as f64 / MIB as f64 / took.as_secs_f64(),
        peak
    );
    assert_eq!(n, GIB);
    assert!(peak > 0, "could not read the proxy's RSS");
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} KiB during a 1 GiB download"
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
    let took = started.elapsed();
    let peak = sampler.finish();
    eprintln!(
        "1 GiB upload: {took:?} ({:.0} MiB/s), proxy peak RSS {} KiB",
        GIB as f64 / MIB as f64 / took.as_secs_f64(),
        peak
    );
    assert_eq!(String::from_utf8_lossy(&body), GIB.to_string());
    assert!(peak > 0, "could not read the proxy's RSS");
    assert!(
        peak < 64 * 1024,
        "proxy peak RSS {peak} KiB during a 1 GiB upload"
    );
}

/// CONNECT opens a tunnel to a Backend's endpoint: HTTP/1.1 spoken through
/// it reaches the upstream; a `tcp` Backend carries raw bytes (and a
/// half-close) both ways, from HTTP/1.1 and HTTP/2 clients; an unknown name
/// is a 404 `no-route`.
#[tokio::test]
async fn connect_tunnels_http_and_raw_tcp() {
    let up = Upstream::start("echo").await;
    let echo = tcp_echo_server().await;
    let proxy = Proxy::start(config(&[
        backend("echo", "http", 8080, up.addr),
        backend("echo-tcp", "tcp", 9000, echo),
    ]));

    // HTTP/1.1 through a tunnel, several requests on it.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("echo:8080")
        .header("host", "echo:8080")
        .body(empty())
        .unwrap();
    let resp = within("CONNECT echo:8080", STEP, conn.send_streaming(req))
        .await
        .expect("CONNECT");
    assert_eq!(resp.status(), 200);
    let tunnel = within("tunnel upgrade", STEP, hyper::upgrade::on(resp))
        .await
        .expect("upgrade");
    let (mut tx, c) = http1::handshake::<_, Full<Bytes>>(tunnel)
        .await
        .expect("handshake in tunnel");
    tokio::spawn(c);
    for i in 0..3 {
        let resp = within(
            "request in tunnel",
            STEP,
            tx.send_request(get_req("tunnelled.example", &format!("/in-tunnel/{i}"))),
        )
        .await
        .expect("request");
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-upstream"), "echo");
        assert_eq!(
            header(&resp, "x-seen-host"),
            "tunnelled.example",
            "the tunnel must not rewrite what it carries"
        );
        let body = within("body in tunnel", STEP, resp.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, format!("echo GET /in-tunnel/{i}\n"));
    }
    assert_eq!(up.connections(), 1);

    // Raw bytes to a tcp Backend.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("echo-tcp:9000")
        .header("host", "echo-tcp:9000")
        .body(empty())
        .unwrap();
    let resp = within("CONNECT echo-tcp:9000", STEP, conn.send_streaming(req))
        .await
        .expect("CONNECT");
    assert_eq!(resp.status(), 200);
    let tunnel = within("tunnel upgrade", STEP, hyper::upgrade::on(resp))
        .await
        .expect("upgrade");
    let (mut r, mut w) = tokio::io::split(TokioIo::new(tunnel));
    let payload: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(b"\x00\x01raw\xff").await?;
        w.write_all(&sent).await?;
        w.shutdown().await?;
        Ok::<_, std::io::Error>(w)
    });
    let mut back = Vec::new();
    within(
        "tcp echo through the tunnel to EOF",
        STEP,
        r.read_to_end(&mut back),
    )
    .await
    .expect("read tunnel");
    let _w = writer.await.unwrap().expect("write tunnel");
    assert_eq!(&back[..6], b"\x00\x01raw\xff");
    assert!(
        back[6..] == payload[..],
        "echoed bytes differ ({} bytes back)",
        back.len()
    );

    // CONNECT as an HTTP/2 stream (RFC 9113 §8.5) tunnels too.
    let mut h2 = h2_sender(proxy.outbound).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("echo-tcp:9000")
        .body(empty())
        .unwrap();
    let resp = within("h2 CONNECT echo-tcp:9000", STEP, h2.send_request(req))
        .await
        .expect("h2 CONNECT");
    assert_eq!(resp.status(), 200);
    let mut tunnel = TokioIo::new(
        within("h2 tunnel upgrade", STEP, hyper::upgrade::on(resp))
            .await
            .expect("h2 upgrade"),
    );
    tunnel.write_all(b"over an h2 stream").await.unwrap();
    let mut buf = [0u8; 17];
    within("h2 tunnel echo", STEP, tunnel.read_exact(&mut buf))
        .await
        .expect("read h2 tunnel");
    assert_eq!(&buf, b"over an h2 stream");

    // Unknown name.
    let mut conn = Conn::open(proxy.outbound).await.unwrap();
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("nowhere:443")
        .header("host", "nowhere:443")
        .body(empty())
        .unwrap();
    let r = within("CONNECT nowhere", STEP, conn.send(req))
        .await
        .expect("CONNECT");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("no-route"));
}

/// The inbound listener forwards HTTP/1.1 and HTTP/2 requests to `--app`,
/// keeping the protocol and the Host the client used.
#[tokio::test]
async fn inbound_http_reaches_the_app() {
    let app = Upstream::start("app").await;
    let other = Upstream::start("other").await;
    let proxy = Proxy::builder(backend("other", "http", 8080, other.addr))
        .app(app.addr)
        .start();

    let r = within(
        "inbound h1",
        STEP,
        get(
            &format!("http://{}/inbound/h1", proxy.inbound),
            &[("host", "my-svc:8080")],
        ),
    )
    .await
    .expect("h1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("app"));
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
    assert_eq!(r.header("x-seen-host"), Some("my-svc:8080"));
    assert_eq!(r.text(), "app GET /inbound/h1\n");

    let mut h2 = H2Conn::open(proxy.inbound).await.expect("h2 connect");
    let r = within(
        "inbound h2",
        STEP,
        h2.send(
            Request::get("http://my-svc/inbound/h2")
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .expect("h2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("app"));
    assert_eq!(r.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(r.header("x-seen-host"), Some("my-svc"));
    assert_eq!(
        other.requests(),
        0,
        "inbound traffic must not be routed by outbound config"
    );
}

/// A client that does not speak HTTP is forwarded to `--app` as opaque bytes.
#[tokio::test]
async fn inbound_opaque_tcp_reaches_the_app() {
    let echo = tcp_echo_server().await;
    let up = Upstream::start("unused").await;
    let proxy = Proxy::builder(backend("unused", "http", 8080, up.addr))
        .app(echo)
        .start();

    let mut s = TcpStream::connect(proxy.inbound)
        .await
        .expect("connect inbound");
    s.write_all(b"\x00\x01binary").await.unwrap();
    let mut buf = [0u8; 8];
    within("first echo", STEP, s.read_exact(&mut buf))
        .await
        .expect("read");
    assert_eq!(&buf, b"\x00\x01binary");
    // Then more, including bytes that look like HTTP: nothing is parsed any more.
    let more = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let (mut r, mut w) = s.into_split();
    let sent = more.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await?;
        w.shutdown().await
    });
    let mut back = Vec::new();
    within("echo to EOF", STEP, r.read_to_end(&mut back))
        .await
        .expect("read");
    writer.await.unwrap().expect("write");
    assert!(
        back == more,
        "echoed {} of {} bytes",
        back.len(),
        more.len()
    );
    assert_eq!(up.requests(), 0);

    let want = 2.0 * (8 + more.len()) as f64;
    eventually(
        "weft_tcp_bytes_total{direction=\"inbound\"} to count the connection",
        STEP,
        || async {
            (proxy
                .metric("weft_tcp_bytes_total", &["direction=\"inbound\""])
                .await
                >= want)
                .then_some(())
        },
    )
    .await;
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
