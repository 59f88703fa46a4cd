//! The proxy's HTTP/1.1 server side, on the wire: bodiless requests take
//! the fast path, anything else moves the connection to hyper's server,
//! and a client cannot tell where one stopped and the other began.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::*;

fn config(live: &Upstream) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: live}}\nspec:\n  endpoints: [{{address: {}}}]\n",
        live.addr
    )
}

/// Reads from `s` until `n` complete responses (each framed by
/// content-length) have arrived; returns them as text.
async fn responses(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        // Complete responses at the front of the buffer.
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() < end + 4 + len {
                break;
            }
            let whole: Vec<u8> = buf.drain(..end + 4 + len).collect();
            out.push(String::from_utf8_lossy(&whole).into_owned());
        }
        if out.len() >= n {
            break;
        }
        let mut chunk = [0u8; 4096];
        let r = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await;
        match r {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_across_the_handoff() {
    let live = Upstream::start("live").await;
    let p = Proxy::start(config(&live));
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    // Two bodiless requests (the fast path), a POST with a body (hyper's
    // server from here on, with the bytes already read), then another GET
    // that hyper serves: all in one write.
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: live\r\n\r\n\
          DELETE /two HTTP/1.1\r\nHost: live\r\n\r\n\
          POST /upload HTTP/1.1\r\nHost: live\r\nContent-Length: 5\r\n\r\nhello\
          GET /four HTTP/1.1\r\nHost: live\r\n\r\n",
    )
    .await
    .unwrap();
    let r = responses(&mut s, 4).await;
    assert_eq!(r.len(), 4, "{r:?}");
    for (resp, body) in r.iter().zip([
        "live GET /one\n",
        "live DELETE /two\n",
        "5",
        "live GET /four\n",
    ]) {
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with(&format!("\r\n\r\n{body}")), "{resp}");
    }
}

#[tokio::test]
async fn connection_close_and_date_are_honoured() {
    let live = Upstream::start("live").await;
    let p = Proxy::start(config(&live));
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    // An answer the proxy makes itself (no route) has a date too.
    s.write_all(b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n")
        .await
        .unwrap();
    let r = responses(&mut s, 1).await;
    assert!(r[0].starts_with("HTTP/1.1 404 Not Found\r\n"), "{}", r[0]);
    assert!(r[0].to_lowercase().contains("\r\ndate: "), "{}", r[0]);
    // The client asks to close: the answer says so and the proxy closes.
    s.write_all(b"GET /last HTTP/1.1\r\nHost: live\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the proxy closes after a Connection: close request")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest).to_lowercase();
    assert!(rest.contains("\r\nconnection: close\r\n"), "{rest}");
    assert!(rest.ends_with("live get /last\n"), "{rest}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let live = Upstream::start("live").await;
    let p = Proxy::builder(config(&live))
        .arg("--header-read-timeout")
        .arg("300ms")
        .start();
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    // Two requests 100 ms apart: each idle wait gets its own 300 ms.
    for path in ["/a", "/b"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: live\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let r = responses(&mut s, 1).await;
        assert!(r[0].ends_with(&format!("live GET {path}\n")), "{r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then nothing: the proxy closes the connection on its own, as hyper's
    // server does, rather than holding it forever.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("an idle connection is closed")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
}
