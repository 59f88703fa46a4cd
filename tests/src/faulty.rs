//! An upstream that fails on command, for resilience tests: answer normally,
//! answer a status, reset the connection, hang, or die (stop listening and
//! drop every open connection). Real sockets, real HTTP (hyper).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// What the upstream does with the next requests.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Ok,
    /// Answer this status (with `Retry-After` when set).
    Status(u16, Option<&'static str>),
    /// Close the connection without answering.
    Reset,
    /// Never answer.
    Hang,
    /// Wait this long, then answer 200.
    Slow(Duration),
    /// Answer this status to every `n`th request (counted by this
    /// upstream, health checks excluded), 200 to the others.
    FailEvery(u16, usize),
}

struct State {
    mode: Mutex<Mode>,
    /// Health endpoint (`/health`) status.
    health: Mutex<u16>,
    requests: AtomicUsize,
    health_checks: AtomicUsize,
    /// Requests whose handling was dropped unanswered (the client closed
    /// the connection or reset the stream).
    cancelled: AtomicUsize,
    bodies: Mutex<Vec<usize>>,
}

pub struct Faulty {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Faulty {
    pub async fn start(name: &str) -> Arc<Faulty> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Ok),
            health: Mutex::new(200),
            requests: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
        });
        let f = Arc::new(Faulty {
            addr,
            name: name.to_owned(),
            state,
            server: Mutex::new(None),
        });
        f.serve(listener);
        f
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let name: Arc<str> = Arc::from(self.name.as_str());
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the server task drops them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((stream, _)) = r else { continue };
                        let state = state.clone();
                        let name = name.clone();
                        conns.spawn(async move {
                            let svc = service_fn(move |req| {
                                let state = state.clone();
                                let name = name.clone();
                                async move { handle(&state, &name, req).await }
                            });
                            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn set_health(&self, status: u16) {
        *self.state.health.lock().unwrap() = status;
    }

    /// Requests answered or attempted (health checks excluded).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests dropped before they were answered: the caller closed the
    /// connection (HTTP/1) or reset the stream (HTTP/2) while they waited.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Sizes of the request bodies received.
    pub fn bodies(&self) -> Vec<usize> {
        self.state.bodies.lock().unwrap().clone()
    }

    /// Stops listening and drops every open connection, like a crash.
    pub fn kill(&self) {
        if let Some(t) = self.server.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listens again on the same address after [`kill`].
    pub async fn revive(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.kill();
    }
}

struct ResetSignal;

impl std::fmt::Debug for ResetSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset")
    }
}
impl std::fmt::Display for ResetSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset")
    }
}
impl std::error::Error for ResetSignal {}

/// Counts a request as cancelled when its handling is dropped unfinished.
struct Unfinished<'a>(&'a AtomicUsize, bool);

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(
    state: &State,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetSignal> {
    let mut watch = Unfinished(&state.cancelled, true);
    let r = answer(state, name, req).await;
    watch.1 = false;
    r
}

async fn answer(
    state: &State,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ResetSignal> {
    if req.uri().path() == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let code = *state.health.lock().unwrap();
        let mut r = Response::new(Full::new(Bytes::from(format!("{name} health {code}\n"))));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
        return Ok(r);
    }
    let nth = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let mode = match state.mode.lock().unwrap().clone() {
        Mode::FailEvery(code, n) if nth.is_multiple_of(n.max(1)) => Mode::Status(code, None),
        Mode::FailEvery(..) => Mode::Ok,
        mode => mode,
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    state.bodies.lock().unwrap().push(body);
    let mut resp = match mode {
        // FailEvery was resolved to Status or Ok above.
        Mode::Ok | Mode::FailEvery(..) => {
            Response::new(Full::new(Bytes::from(format!("{name} ok\n"))))
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            Response::new(Full::new(Bytes::from(format!("{name} slow ok\n"))))
        }
        Mode::Status(code, retry_after) => {
            let mut r = Response::new(Full::new(Bytes::from(format!("{name} failing {code}\n"))));
            *r.status_mut() =
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        // An error from the service makes hyper close the connection unanswered.
        Mode::Reset => return Err(ResetSignal),
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    Ok(resp)
}
