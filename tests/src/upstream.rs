//! A real HTTP server (hyper; HTTP/1.1 and HTTP/2) whose behaviour is chosen
//! by the request path, so one upstream serves every scenario:
//!
//! | path | answer |
//! | --- | --- |
//! | `/status/N` | status N |
//! | `/delay/MS` | waits MS milliseconds, then 200 |
//! | `/bytes/N` | N bytes, streamed in 64 KiB chunks |
//! | `/upload` | reads the whole body, answers its length |
//! | `/sse/N/MS` | N server-sent events, MS apart |
//! | `/headers` | the request headers as JSON |
//! | anything else | `<name> <METHOD> <path>` |
//!
//! Every answer carries `x-upstream: <name>`, `x-seen-host` and `x-seen-version`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Default)]
pub struct Counters {
    pub requests: AtomicUsize,
    pub connections: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), name).await
    }

    pub async fn start_on(addr: SocketAddr, name: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let name_s: Arc<str> = Arc::from(name);
        let c = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let c = c.clone();
                let name = name_s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        c.requests.fetch_add(1, Ordering::Relaxed);
                        let name = name.clone();
                        async move { Ok::<_, Infallible>(handle(&name, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_owned(),
            counters,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.counters.requests.load(Ordering::Relaxed)
    }
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::Relaxed)
    }
    /// Stops accepting (open connections are dropped with the runtime's tasks).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn handle(name: &str, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let mut parts = path.trim_start_matches('/').split('/');
    let first = parts.next().unwrap_or("");
    let n1 = parts.next().and_then(|s| s.parse::<u64>().ok());
    let n2 = parts.next().and_then(|s| s.parse::<u64>().ok());
    let mut resp = match (first, n1) {
        ("status", Some(code)) => {
            let mut r = Response::new(full(format!("{name} status {code}\n")));
            *r.status_mut() = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::OK);
            r
        }
        ("delay", Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("{name} delayed {ms}ms\n")))
        }
        ("bytes", Some(n)) => {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = chunk_stream(n, chunk);
            let mut r = Response::new(StreamBody::new(stream).boxed());
            r.headers_mut()
                .insert("content-type", "application/octet-stream".parse().unwrap());
            r
        }
        ("upload", _) => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => total += f.data_ref().map(|d| d.len() as u64).unwrap_or(0),
                    Err(_) => break,
                }
            }
            Response::new(full(format!("{total}")))
        }
        ("sse", Some(n)) => {
            let every = Duration::from_millis(n2.unwrap_or(50));
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..n {
                    if tx
                        .send(Ok(Frame::data(Bytes::from(format!("data: event {i}\n\n")))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(every).await;
                }
            });
            let mut r = Response::new(StreamBody::new(ReceiverStream(rx)).boxed());
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        ("headers", _) => {
            let map: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
                    )
                })
                .collect();
            Response::new(full(serde_json::Value::Object(map).to_string()))
        }
        _ => Response::new(full(format!("{name} {} {}\n", req.method(), req.uri()))),
    };
    let h = resp.headers_mut();
    h.insert("x-upstream", name.parse().unwrap());
    if let Ok(v) = host.parse() {
        h.insert("x-seen-host", v);
    }
    h.insert("x-seen-version", version.parse().unwrap());
    resp
}

/// A stream of `n` bytes in `chunk`-sized frames.
fn chunk_stream(n: u64, chunk: Bytes) -> ChunkStream {
    ChunkStream { left: n, chunk }
}

pub struct ChunkStream {
    left: u64,
    chunk: Bytes,
}

impl futures_core::Stream for ChunkStream {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

pub struct ReceiverStream(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
