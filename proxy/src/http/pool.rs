//! Upstream connections per endpoint: lock-free queues of idle HTTP/1
//! connections (oldest reused first; idle expiry closes the surplus) — one
//! for the lean client of bodiless requests, one for hyper's — and one
//! shared, multiplexed HTTP/2 connection.

use crate::body::RequestBody;
use crate::http::h1client;
use crate::resilience::limits::{Kind, Limits, Permit};
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwapOption;
use crossbeam_queue::SegQueue;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How a backend wants its connections kept.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
    #[error("at the limit of concurrent {0}")]
    Overloaded(&'static str),
    /// The mTLS handshake failed (wrong peer identity, foreign CA, ...).
    #[error("mTLS handshake with {0}: {1}")]
    Tls(SocketAddr, std::io::Error),
    /// No usable TLS config for the endpoint (an invalid identity).
    #[error("mTLS to {0}: {1}")]
    TlsConfig(SocketAddr, String),
}

/// Wraps a fresh connection in mTLS under the connect deadline.
async fn tls_handshake(
    addr: SocketAddr,
    stream: TcpStream,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
    metrics: &Metrics,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    // The SPIFFE verifier ignores the server name: the IP is a placeholder.
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let connect = tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => {
            metrics.tls_handshake("outbound", Ok(()));
            Ok(s)
        }
        Ok(Err(e)) => {
            metrics.tls_handshake("outbound", Err(&e));
            Err(ConnectError::Tls(addr, e))
        }
        Err(_) => {
            let e = std::io::Error::from(std::io::ErrorKind::TimedOut);
            metrics.tls_handshake("outbound", Err(&e));
            Err(ConnectError::Timeout(addr))
        }
    }
}

/// HTTP/2 client handshake on any connection; the connection task keeps
/// `permit` for its life.
async fn h2_handshake<I>(
    addr: SocketAddr,
    io: I,
    permit: Option<Permit>,
) -> Result<http2::SendRequest<RequestBody>, ConnectError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .adaptive_window(true)
        .handshake(io)
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream h2 connection ended");
        }
    });
    Ok(tx)
}

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A lock-free queue that knows its length.
struct Queue<T> {
    items: SegQueue<T>,
    len: AtomicUsize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: SegQueue::new(),
            len: AtomicUsize::new(0),
        }
    }
}

impl<T> Queue<T> {
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Adds `item` unless `max` are already queued.
    fn push(&self, item: T, max: usize) {
        if self.len() >= max {
            return;
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        self.items.push(item);
    }

    fn pop(&self) -> Option<T> {
        let item = self.items.pop()?;
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(item)
    }

    /// Keeps only the items `keep` accepts (one pass over what is queued now).
    fn retain(&self, keep: impl Fn(&T) -> bool) {
        for _ in 0..self.len() {
            match self.pop() {
                Some(i) if keep(&i) => self.push(i, usize::MAX),
                Some(_) => {}
                None => break,
            }
        }
    }
}

/// The connections of one endpoint.
#[derive(Default)]
pub struct Pool {
    idle: Queue<Idle>,
    raw: Queue<h1client::Conn>,
    h2: ArcSwapOption<http2::SendRequest<RequestBody>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

/// An HTTP/1 sender checked out of a pool, returned by [`Reusable::reuse`]
/// once its response has been read to the end.
pub struct Reusable {
    pool: Arc<Pool>,
    max_idle: usize,
    tx: http1::SendRequest<RequestBody>,
    /// When the request that used it began: its idle age is counted from
    /// there (a little early, so expiry errs on the safe side) without
    /// another clock read.
    since: Instant,
}

impl Reusable {
    pub fn reuse(self) {
        self.pool.put(self.tx, self.max_idle, self.since);
    }
}

/// Opens a TCP connection with a deadline and without Nagle's delay.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(addr))?
        .map_err(|e| ConnectError::Io(addr, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A new plain HTTP/1.1 connection for hyper's client, its connection task
/// holding the connection slot.
async fn h1_connect(
    addr: SocketAddr,
    settings: &PoolSettings,
    metrics: &Metrics,
    limits: Option<&Limits>,
) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
    let (stream, permit) = connect_counted(addr, settings, metrics, limits).await?;
    h1_handshake(addr, stream, permit).await
}

/// HTTP/1.1 client handshake on any connection; the connection task keeps
/// `permit` for its life.
async fn h1_handshake<S>(
    addr: SocketAddr,
    stream: S,
    permit: Option<Permit>,
) -> Result<http1::SendRequest<RequestBody>, ConnectError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        let _permit = permit;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(tx)
}

/// [`connect_tcp`] under the backend's limits (a pending-request slot while
/// connecting, a connection slot for the connection's life), counted in
/// `weft_upstream_connects_total`.
async fn connect_counted(
    addr: SocketAddr,
    settings: &PoolSettings,
    metrics: &Metrics,
    limits: Option<&Limits>,
) -> Result<(TcpStream, Option<Permit>), ConnectError> {
    let (pending, conn) = match limits {
        Some(l) => {
            let pending = l
                .try_acquire(Kind::Pending)
                .ok_or(ConnectError::Overloaded(Kind::Pending.label()))?;
            let conn = l
                .try_acquire(Kind::Connections)
                .ok_or(ConnectError::Overloaded(Kind::Connections.label()))?;
            (Some(pending), Some(conn))
        }
        None => (None, None),
    };
    let r = connect_tcp(addr, settings.connect_timeout).await;
    drop(pending);
    metrics.upstream_connect(r.is_ok());
    Ok((r?, conn))
}

impl Pool {
    fn put(&self, tx: http1::SendRequest<RequestBody>, max_idle: usize, since: Instant) {
        if !tx.is_closed() {
            self.idle.push(Idle { tx, since }, max_idle);
        }
    }

    /// Takes back a lean-client connection whose exchange ended cleanly.
    pub fn put_raw(&self, conn: h1client::Conn, max_idle: usize) {
        self.raw.push(conn, max_idle);
    }

    /// Idle HTTP/1 connections now.
    pub fn idle(&self) -> usize {
        self.idle.len() + self.raw.len()
    }

    /// Whether an HTTP/2 connection is open.
    pub fn h2_open(&self) -> bool {
        self.h2.load().as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Closes idle connections older than the idle timeout.
    pub fn evict_idle(&self, idle_timeout: Duration) {
        self.idle
            .retain(|i| i.since.elapsed() < idle_timeout && !i.tx.is_closed());
        self.raw
            .retain(|c| c.since.elapsed() < idle_timeout && c.usable());
    }

    /// A connection for the lean HTTP/1 client: an idle one that is still
    /// good, or a new one.
    pub async fn raw(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        now: Instant,
    ) -> Result<h1client::Conn, ConnectError> {
        while let Some(conn) = self.raw.pop() {
            if now.saturating_duration_since(conn.since) < settings.idle_timeout && conn.usable() {
                return Ok(conn);
            }
        }
        // Boxed: the connect future is large and rarely needed, and would
        // otherwise grow every request's future.
        let (stream, permit) = Box::pin(connect_counted(addr, settings, metrics, limits)).await?;
        Ok(h1client::Conn::new(stream, permit, now))
    }

    /// An HTTP/1 connection: an idle one that is still good, or a new one.
    /// `upgrade` connections are made fresh and never pooled.
    pub async fn h1(
        self: &Arc<Self>,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        now: Instant,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        while let Some(mut idle) = self.idle.pop() {
            if now.saturating_duration_since(idle.since) >= settings.idle_timeout
                || idle.tx.is_closed()
            {
                continue;
            }
            // Usually ready at once; an error means the server closed it.
            if idle.tx.ready().await.is_ok() {
                return Ok(idle.tx);
            }
        }
        Box::pin(h1_connect(addr, settings, metrics, limits)).await
    }

    /// The endpoint's HTTP/2 connection, made on first use and remade when it
    /// closes; over mTLS with `tls` (a mesh peer).
    pub async fn h2(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectError> {
        if let Some(tx) = self.h2.load().as_ref() {
            if !tx.is_closed() && tx.is_ready() {
                return Ok((**tx).clone());
            }
        }
        Box::pin(self.h2_connect(addr, settings, metrics, limits, tls)).await
    }

    async fn h2_connect(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectError> {
        // One connect at a time per endpoint; others wait and share it.
        let _guard = self.h2_connecting.lock().await;
        if let Some(tx) = self.h2.load().as_ref() {
            if !tx.is_closed() && tx.is_ready() {
                return Ok((**tx).clone());
            }
        }
        let (stream, permit) = connect_counted(addr, settings, metrics, limits).await?;
        let tx = match tls {
            None => h2_handshake(addr, TokioIo::new(stream), permit).await?,
            Some(config) => {
                let stream =
                    tls_handshake(addr, stream, config, settings.connect_timeout, metrics).await?;
                h2_handshake(addr, TokioIo::new(stream), permit).await?
            }
        };
        self.h2.store(Some(Arc::new(tx.clone())));
        Ok(tx)
    }

    /// A fresh HTTP/1.1 connection over mTLS (never taken from the idle
    /// queue), for upgrades to a mesh peer.
    pub async fn h1_tls(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        let (stream, permit) = connect_counted(addr, settings, metrics, limits).await?;
        let stream = tls_handshake(addr, stream, tls, settings.connect_timeout, metrics).await?;
        h1_handshake(addr, stream, permit).await
    }

    /// Wraps a sender so it comes back here after its response is read.
    pub fn reusable(
        self: &Arc<Self>,
        tx: http1::SendRequest<RequestBody>,
        max_idle: usize,
        since: Instant,
    ) -> Reusable {
        Reusable {
            pool: self.clone(),
            max_idle,
            tx,
            since,
        }
    }
}
