//! Protocols the sidecar carries without looking inside, or with real
//! peers of their own: gRPC (Python grpcio peers: unary, streaming, status
//! and trailers), WebSocket (Python websockets), `CONNECT` tunnels for HTTP
//! and raw TCP, and the inbound side (HTTP and opaque TCP to the app).
//!
//! The proxy binary must be built first (`cargo build -p weft-proxy`). Tests
//! that need the Python modules `grpc` / `websockets` skip locally without
//! them and fail under CI (env `CI`).

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::wire::*;
use weft_tests::*;

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

/// `CONNECT target` through the proxy at `addr`; the tunnel once it is up.
async fn open_tunnel(addr: std::net::SocketAddr, target: &str) -> hyper::upgrade::Upgraded {
    let mut conn = Conn::open(addr).await.unwrap();
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header("host", target)
        .body(empty())
        .unwrap();
    let resp = within(&format!("CONNECT {target}"), STEP, conn.send_streaming(req))
        .await
        .expect("CONNECT");
    assert_eq!(resp.status(), 200);
    within("tunnel upgrade", STEP, hyper::upgrade::on(resp))
        .await
        .expect("upgrade")
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
    let tunnel = open_tunnel(proxy.outbound, "echo:8080").await;
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
    let tunnel = open_tunnel(proxy.outbound, "echo-tcp:9000").await;
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
