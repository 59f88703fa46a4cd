//! Limits that protect the proxy process (a test module): connections and
//! requests in flight per listener, and request bodies that come too
//! slowly or stop. The drip tests pace their bytes with real time (that is
//! the input under test), and run with a 1 s rate window to stay short.

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_tests::wire::backend;
use weft_tests::*;

/// Reads one response head (and whatever came with it) off `s`.
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time");
    String::from_utf8_lossy(&got).into_owned()
}

async fn metric(p: &Proxy, name: &str) -> String {
    let (_, text) = p.admin_get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_and_counted() {
    let up = Upstream::start("echo").await;
    let p = Proxy::builder(backend("echo", "http", 8080, up.addr))
        .arg("--max-connections")
        .arg("2")
        .start();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.outbound).await.unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: echo\r\n\r\n")
            .await
            .unwrap();
        assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The proxy resets the third at once: the reset can even arrive before
    // the client's connect has returned, which then reports it.
    match TcpStream::connect(p.outbound).await {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        Ok(mut third) => {
            let _ = third
                .write_all(b"GET /a HTTP/1.1\r\nHost: echo\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
                .await
                .expect("closed at once");
            assert!(
                matches!(n, Ok(0) | Err(_)),
                "the third connection was served: {n:?}"
            );
        }
    }
    let counted = metric(&p, "weft_listener_refused_total").await;
    assert!(
        counted.contains(r#"direction="outbound",limit="connections"} 1"#),
        "{counted}"
    );
    // A held connection that closes makes room.
    drop(held.pop());
    eventually(
        "room for a new connection",
        Duration::from_secs(5),
        || async {
            let mut s = TcpStream::connect(p.outbound).await.ok()?;
            s.write_all(b"GET /a HTTP/1.1\r\nHost: echo\r\n\r\n")
                .await
                .ok()?;
            read_head(&mut s)
                .await
                .starts_with("HTTP/1.1 200")
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn requests_past_the_cap_get_503_overloaded() {
    let up = Upstream::start("echo").await;
    let p = Proxy::builder(backend("echo", "http", 8080, up.addr))
        .arg("--max-requests")
        .arg("2")
        .start();
    // Two requests held in flight by a slow upstream.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = p.url("/delay/3000");
            tokio::spawn(async move { get(&url, &[("host", "echo")]).await })
        })
        .collect();
    eventually("two requests in flight", Duration::from_secs(5), || async {
        (up.requests() >= 2).then_some(())
    })
    .await;
    let r = get(&p.url("/a"), &[("host", "echo")]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("overloaded"));
    assert_eq!(r.header("x-weft-overloaded"), Some("true"));
    assert!(r.text().contains("outbound listener"), "{}", r.text());
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap().status, 200);
    }
    // The slots come back when the responses end.
    let r = get(&p.url("/a"), &[("host", "echo")]).await.unwrap();
    assert_eq!(r.status, 200);
    let counted = metric(&p, "weft_listener_refused_total").await;
    assert!(
        counted.contains(r#"direction="outbound",limit="requests"} 1"#),
        "{counted}"
    );
}

/// A proxy whose request bodies are judged every second.
fn paced(up: &Upstream, idle: &str) -> Proxy {
    Proxy::builder(backend("echo", "http", 8080, up.addr))
        .arg("--request-body-rate-window")
        .arg("1s")
        .arg("--request-body-idle-timeout")
        .arg(idle)
        .start()
}

#[tokio::test]
async fn a_dripped_body_is_cut_off_with_408() {
    let up = Upstream::start("echo").await;
    let p = paced(&up, "5m");
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let drip = async {
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(4), drip)
        .await
        .unwrap_or(());
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.contains("x-weft-error: request-body-timeout"),
        "{head}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_at_the_idle_limit() {
    let up = Upstream::start("echo").await;
    let p = paced(&up, "1s");
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: echo\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.contains("x-weft-error: request-body-timeout"),
        "{head}"
    );
}

#[tokio::test]
async fn a_stream_that_keeps_sending_is_not_cut() {
    let up = Upstream::start("echo").await;
    let p = paced(&up, "5m");
    let mut s = TcpStream::connect(p.outbound).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // A 50-byte message every 100 ms for three rate windows.
    for _ in 0..30 {
        s.write_all(format!("32\r\n{}\r\n", "m".repeat(50)).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let got = read_head(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}
