//! Helpers for the wire-protocol tests (`protocols.rs`, `streaming.rs`,
//! `tunnels.rs`): hyper clients with any body, streaming request bodies, a
//! raw TCP echo server, a resident-memory sampler, and the Python peers and
//! command-line tools those tests drive.

use crate::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
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
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on any single step that should be quick (a request, a handshake).
pub const STEP: Duration = Duration::from_secs(10);
pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// Awaits `fut`, panicking with `what` if it takes longer than `limit`.
pub async fn within<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// One `Backend` document with a single static endpoint.
pub fn backend(name: &str, protocol: &str, port: u16, endpoint: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  protocol: {protocol}\n  port: {port}\n  endpoints: [{{address: \"{endpoint}\"}}]\n"
    )
}

pub fn config(docs: &[String]) -> String {
    docs.join("---\n")
}

pub fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

pub fn get_req(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

pub fn header<'a, B>(resp: &'a Response<B>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// An HTTP/1.1 client connection with any request body type.
pub async fn h1_sender<B>(addr: SocketAddr) -> http1::SendRequest<B>
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
pub async fn h2_sender(addr: SocketAddr) -> http2::SendRequest<Full<Bytes>> {
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
pub async fn count_body(mut body: Incoming, filler: Option<u8>) -> u64 {
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
pub struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl Repeat {
    pub fn new(total: u64, chunk_size: usize) -> Repeat {
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
pub struct Chan(pub tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for Chan {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// A raw TCP echo server: every byte comes back; EOF is answered with EOF.
pub async fn tcp_echo_server() -> SocketAddr {
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
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
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
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// A Python server from `tests/peers/`, killed when dropped.
pub struct Peer {
    _child: tokio::process::Child,
    pub port: u16,
}

/// Starts `script server 0` and waits for its "READY <port>" line.
pub async fn start_peer(script: &str) -> Peer {
    spawn_peer(script, &["server", "0"]).await
}

/// As [`start_peer`], the server listening on `host` (`script server 0
/// host`; the script must take the host argument).
pub async fn start_peer_on(script: &str, host: &str) -> Peer {
    spawn_peer(script, &["server", "0", host]).await
}

async fn spawn_peer(script: &str, args: &[&str]) -> Peer {
    let mut child = tokio::process::Command::new("python3")
        .arg(peers_dir().join(script))
        .args(args)
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
pub async fn run_peer_client(script: &str, args: &[&str]) -> serde_json::Value {
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
pub async fn run_tool(tool: &str, args: &[&str]) -> (bool, String) {
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
