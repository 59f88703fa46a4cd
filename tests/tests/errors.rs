//! Errors a user can read: each failure mode answers with the right status,
//! a short text body and an `x-weft-error` header; bad input never crashes.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_tests::*;

const NO_ENDPOINTS: &str = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: empty}\nspec:\n  endpoints: []\n---\n";

fn config(live: &Upstream, dead_port: u16) -> String {
    format!(
        "{NO_ENDPOINTS}apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: live}}\nspec:\n  endpoints: [{{address: {}}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: dead}}\nspec:\n  endpoints: [{{address: 127.0.0.1:{dead_port}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: slow}}\nspec:\n  parentRefs: [{{name: slow}}]\n  rules:\n    - backendRefs: [{{name: live}}]\n      timeouts: {{request: 200ms}}\n",
        live.addr
    )
}

/// A port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn each_failure_has_its_status_and_cause() {
    let live = Upstream::start("live").await;
    let p = Proxy::start(config(&live, closed_port()));
    let cases = [
        ("nowhere", "/", 404, "no-route"),
        ("empty", "/", 503, "no-endpoints"),
        ("dead", "/", 502, "connect-failed"),
        ("slow", "/delay/2000", 504, "upstream-timeout"),
    ];
    for (host, path, status, cause) in cases {
        let started = Instant::now();
        let r = get(&p.url(path), &[("host", host)]).await.unwrap();
        assert_eq!(r.status, status, "{host}: {}", r.text());
        assert_eq!(r.header("x-weft-error"), Some(cause), "{host}");
        assert!(!r.text().is_empty(), "{host}: the body says what happened");
        if cause == "upstream-timeout" {
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "timeout enforced: {:?}",
                started.elapsed()
            );
        }
    }
    // The proxy counted them by class.
    assert!(
        p.metric("weft_requests_total", &["code_class=\"5xx\""])
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_4xx() {
    let live = Upstream::start("live").await;
    let p = Proxy::start(config(&live, closed_port()));
    let big = "x".repeat(80 * 1024);
    let resp = raw(
        p.outbound,
        format!("GET / HTTP/1.1\r\nHost: live\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 431"),
        "got {:?}",
        &resp[..resp.len().min(80)]
    );
    let resp = raw(p.outbound, b"GET / HTTP/1.1\r\nHost live\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "got {resp:?}");
    let resp = raw(p.outbound, b"GET /\x01 HTTP/1.1\r\nHost: live\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "got {resp:?}");
    // Still serving afterwards.
    let r = get(&p.url("/"), &[("host", "live")]).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn slow_header_sender_is_cut_off() {
    let live = Upstream::start("live").await;
    let p = Proxy::builder(config(&live, closed_port()))
        .arg("--header-read-timeout")
        .arg("300ms")
        .start();
    let mut s = tokio::net::TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: live\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The proxy must close (or answer 408) on its own, long before our 5 s bound.
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "slowloris connection still open after 5s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "cut after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn garbage_never_crashes_the_proxy() {
    let live = Upstream::start("live").await;
    let p = Proxy::builder(config(&live, closed_port()))
        .arg("--header-read-timeout")
        .arg("500ms")
        .arg("--detect-timeout")
        .arg("200ms")
        .start();
    let inputs: [&[u8]; 7] = [
        b"\x00\x01\x02\x03",
        b"GET",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: live\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: live\r\nContent-Length: abc\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\n\r\n",
        b"CONNECT nowhere HTTP/1.1\r\n\r\n",
    ];
    for input in inputs {
        let _ = raw(p.outbound, input).await;
        let _ = raw(p.inbound, input).await;
    }
    let r = get(&p.url("/"), &[("host", "live")]).await.unwrap();
    assert_eq!(r.status, 200, "proxy still serving after garbage");
    let (status, _) = p.admin_get("/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_malformed_request_body_is_the_clients_error_not_the_upstreams() {
    let live = Upstream::start("live").await;
    let p = Proxy::start(config(&live, closed_port()));
    // The upstream reads the body (`/upload`); part way, the client's chunked
    // framing turns out invalid. That is the client's own message at fault:
    // a 400, not a 502 blaming the upstream (nor a failure counted against it).
    let out = raw(
        p.outbound,
        b"POST /upload HTTP/1.1\r\nHost: live\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("x-weft-error: bad-request"), "{out}");
    let r = get(&p.url("/"), &[("host", "live")]).await.unwrap();
    assert_eq!(r.status, 200, "the upstream still serves");
}
