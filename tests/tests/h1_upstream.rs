//! The proxy's HTTP/1.1 client towards upstreams, against an upstream that
//! writes scripted bytes on a real socket: every body framing (length,
//! chunked with trailers, until close, none for HEAD/204/304), interim 1xx
//! answers, connection reuse, a pooled connection the server drops, and
//! malformed answers (502, never a panic).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_tests::*;

/// What the upstream does with the next request.
enum Step {
    /// Write these bytes and keep the connection.
    Answer(&'static [u8]),
    /// Write these bytes and close.
    AnswerClose(&'static [u8]),
    /// Read the request and close without a word (a server dropping an idle
    /// connection just as a request arrives on it).
    Swallow,
}

#[derive(Default)]
struct Script {
    steps: Mutex<VecDeque<Step>>,
    requests: Mutex<Vec<String>>,
    connections: AtomicUsize,
}

impl Script {
    fn push(&self, s: Step) {
        self.steps.lock().unwrap().push_back(s);
    }
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request head (requests here carry no body).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

async fn scripted() -> (SocketAddr, Arc<Script>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new(Script::default());
    let sc = script.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            sc.connections.fetch_add(1, Ordering::SeqCst);
            let sc = sc.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut s).await {
                    sc.requests.lock().unwrap().push(head);
                    let step = sc.steps.lock().unwrap().pop_front();
                    match step {
                        Some(Step::Answer(b)) => {
                            if s.write_all(b).await.is_err() {
                                return;
                            }
                        }
                        Some(Step::AnswerClose(b)) => {
                            let _ = s.write_all(b).await;
                            return;
                        }
                        Some(Step::Swallow) | None => return,
                    }
                }
            });
        }
    });
    (addr, script)
}

fn config(addr: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: up}}\nspec:\n  endpoints: [{{address: {addr}}}]\n"
    )
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "up");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn every_body_framing_streams_and_the_connection_is_reused() {
    let (addr, script) = scripted().await;
    let p = Proxy::start(config(addr));
    let mut c = Conn::open(p.outbound).await.unwrap();

    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n\r\nhello",
    ));
    let r = c.send(req("GET", "/len", &[])).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.header("x-up"), Some("1"));

    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n",
    ));
    let r = c
        .send(req("GET", "/chunked", &[("te", "trailers")]))
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    let trailers = r.trailers.expect("trailers reach the client");
    assert_eq!(trailers.get("x-sum").unwrap(), "42");

    // No body follows HEAD, 204 or 304 whatever the length says.
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
    ));
    let r = c.send(req("HEAD", "/head", &[])).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    script.push(Step::Answer(b"HTTP/1.1 204 No Content\r\n\r\n"));
    assert_eq!(c.send(req("DELETE", "/x", &[])).await.unwrap().status, 204);
    script.push(Step::Answer(
        b"HTTP/1.1 304 Not Modified\r\netag: \"a\"\r\n\r\n",
    ));
    assert_eq!(c.send(req("GET", "/etag", &[])).await.unwrap().status, 304);

    // Interim answers are skipped; the final one is forwarded.
    script.push(Step::Answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    ));
    let r = c.send(req("POST", "/make", &[])).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (201, "ok"));

    // All of that on one upstream connection.
    assert_eq!(script.connections.load(Ordering::SeqCst), 1);

    // A body without length runs until the server closes.
    script.push(Step::AnswerClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"));
    let r = c.send(req("GET", "/close", &[])).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "until the end"));
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew",
    ));
    let r = c.send(req("GET", "/after", &[])).await.unwrap();
    assert_eq!(r.text(), "new");
    assert_eq!(
        script.connections.load(Ordering::SeqCst),
        2,
        "a closed connection is not reused"
    );

    // What the upstream was sent: origin form, Host, a zero length for a
    // bodiless POST, no hop-by-hop headers.
    let sent = script.requests();
    assert!(sent[0].starts_with("GET /len HTTP/1.1\r\n"), "{}", sent[0]);
    assert!(sent[0].contains("host: up\r\n"), "{}", sent[0]);
    assert!(sent[1].contains("te: trailers\r\n"), "{}", sent[1]);
    assert!(
        sent[5].starts_with("POST /make HTTP/1.1\r\n"),
        "{}",
        sent[5]
    );
    assert!(sent[5].contains("content-length: 0\r\n"), "{}", sent[5]);
}

#[tokio::test]
async fn a_pooled_connection_the_server_dropped_is_retried_only_when_safe() {
    let (addr, script) = scripted().await;
    let p = Proxy::start(config(addr));
    let mut c = Conn::open(p.outbound).await.unwrap();
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
    ));
    assert_eq!(c.send(req("GET", "/1", &[])).await.unwrap().status, 200);

    // The kept connection is dropped as the next GET arrives on it: the GET
    // goes again on a new connection.
    script.push(Step::Swallow);
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb",
    ));
    let r = c.send(req("GET", "/2", &[])).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "b"));
    assert_eq!(script.connections.load(Ordering::SeqCst), 2);

    // A POST that reached the server is never sent twice.
    script.push(Step::Swallow);
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nc",
    ));
    let r = c.send(req("POST", "/pay", &[])).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weft-error"), Some("upstream-reset"));
    let posts = script
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /pay"))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn malformed_answers_are_502_and_cut_bodies_fail_the_client() {
    let (addr, script) = scripted().await;
    let p = Proxy::start(config(addr));
    let big_head: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
            "a".repeat(70 * 1024)
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let cases: [&'static [u8]; 5] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\na",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        big_head,
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        script.push(Step::AnswerClose(bytes));
        let r = get(&p.url(&format!("/bad{i}")), &[("host", "up")])
            .await
            .unwrap();
        assert_eq!(r.status, 502, "case {i}: {}", r.text());
        assert_eq!(
            r.header("x-weft-error"),
            Some("upstream-protocol"),
            "case {i}"
        );
    }
    // Headers already went out when the body is cut: the client sees the
    // response fail rather than a short body passed off as whole.
    script.push(Step::AnswerClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf",
    ));
    assert!(get(&p.url("/cut"), &[("host", "up")]).await.is_err());
    script.push(Step::AnswerClose(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    ));
    assert!(get(&p.url("/badchunk"), &[("host", "up")]).await.is_err());
    // And the proxy is still fine.
    script.push(Step::Answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ));
    let r = get(&p.url("/fine"), &[("host", "up")]).await.unwrap();
    assert_eq!(r.text(), "ok");
}
