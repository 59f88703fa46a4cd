//! Upstream connections per endpoint: lock-free queues of idle HTTP/1
//! connections (oldest reused first; idle expiry closes the surplus) — one
//! for the lean client of bodiless requests, one for hyper's — and one
//! shared, multiplexed HTTP/2 connection. `B` is the request body type
//! hyper's clients send.

use super::connect::{connect_counted, tls_handshake, ConnectError, PoolSettings};
use super::handshake::{h1_handshake, h2_handshake, SendBody};
use super::queue::Queue;
use super::raw::RawConn;
use crate::resilience::limits::Limits;
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwapOption;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Idle<B> {
    tx: http1::SendRequest<B>,
    since: Instant,
}

/// The connections of one endpoint.
pub(crate) struct Pool<B> {
    idle: Queue<Idle<B>>,
    raw: Queue<RawConn>,
    h2: ArcSwapOption<http2::SendRequest<B>>,
    h2_connecting: tokio::sync::Mutex<()>,
}

impl<B> Default for Pool<B> {
    fn default() -> Self {
        Pool {
            idle: Queue::default(),
            raw: Queue::default(),
            h2: ArcSwapOption::default(),
            h2_connecting: tokio::sync::Mutex::default(),
        }
    }
}

/// An HTTP/1 sender checked out of a pool, returned by [`Reusable::reuse`]
/// once its response has been read to the end.
pub(crate) struct Reusable<B> {
    pool: Arc<Pool<B>>,
    max_idle: usize,
    tx: http1::SendRequest<B>,
    /// When the request that used it began: its idle age is counted from
    /// there (a little early, so expiry errs on the safe side) without
    /// another clock read.
    since: Instant,
}

impl<B> Reusable<B> {
    pub(crate) fn reuse(self) {
        self.pool.put(self.tx, self.max_idle, self.since);
    }
}

/// A new plain HTTP/1.1 connection for hyper's client, its connection task
/// holding the connection slot.
async fn h1_connect<B: SendBody>(
    addr: SocketAddr,
    settings: &PoolSettings,
    metrics: &Metrics,
    limits: Option<&Limits>,
) -> Result<http1::SendRequest<B>, ConnectError> {
    let (stream, permit) = connect_counted(addr, settings, metrics, limits).await?;
    h1_handshake(addr, stream, permit).await
}

impl<B> Pool<B> {
    fn put(&self, tx: http1::SendRequest<B>, max_idle: usize, since: Instant) {
        if !tx.is_closed() {
            self.idle.push(Idle { tx, since }, max_idle);
        }
    }

    /// Takes back a lean-client connection whose exchange ended cleanly.
    pub(crate) fn put_raw(&self, conn: RawConn, max_idle: usize) {
        self.raw.push(conn, max_idle);
    }

    /// Idle HTTP/1 connections now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.len() + self.raw.len()
    }

    /// Whether an HTTP/2 connection is open.
    pub(crate) fn h2_open(&self) -> bool {
        self.h2.load().as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Closes idle connections older than the idle timeout.
    pub(crate) fn evict_idle(&self, idle_timeout: Duration) {
        self.idle
            .retain(|i| i.since.elapsed() < idle_timeout && !i.tx.is_closed());
        self.raw
            .retain(|c| c.since.elapsed() < idle_timeout && c.usable());
    }

    /// A connection for the lean HTTP/1 client: an idle one that is still
    /// good, or a new one.
    pub(crate) async fn raw(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        now: Instant,
    ) -> Result<RawConn, ConnectError> {
        while let Some(conn) = self.raw.pop() {
            if now.saturating_duration_since(conn.since) < settings.idle_timeout && conn.usable() {
                return Ok(conn);
            }
        }
        // Boxed: the connect future is large and rarely needed, and would
        // otherwise grow every request's future.
        let (stream, permit) = Box::pin(connect_counted(addr, settings, metrics, limits)).await?;
        Ok(RawConn::new(stream, permit, now))
    }

    /// Wraps a sender so it comes back here after its response is read.
    pub(crate) fn reusable(
        self: &Arc<Self>,
        tx: http1::SendRequest<B>,
        max_idle: usize,
        since: Instant,
    ) -> Reusable<B> {
        Reusable {
            pool: self.clone(),
            max_idle,
            tx,
            since,
        }
    }
}

impl<B: SendBody> Pool<B> {
    /// An HTTP/1 connection: an idle one that is still good, or a new one.
    /// `upgrade` connections are made fresh and never pooled.
    pub(crate) async fn h1(
        self: &Arc<Self>,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        now: Instant,
    ) -> Result<http1::SendRequest<B>, ConnectError> {
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
    pub(crate) async fn h2(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<http2::SendRequest<B>, ConnectError> {
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
    ) -> Result<http2::SendRequest<B>, ConnectError> {
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
    pub(crate) async fn h1_tls(
        &self,
        addr: SocketAddr,
        settings: &PoolSettings,
        metrics: &Metrics,
        limits: Option<&Limits>,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<http1::SendRequest<B>, ConnectError> {
        let (stream, permit) = connect_counted(addr, settings, metrics, limits).await?;
        let stream = tls_handshake(addr, stream, tls, settings.connect_timeout, metrics).await?;
        h1_handshake(addr, stream, permit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn settings() -> PoolSettings {
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_idle: 2,
        }
    }

    fn port(c: &RawConn) -> u16 {
        c.io.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn raw_connections_are_reused_while_fresh_and_usable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, metrics, now) = (settings(), Metrics::default(), Instant::now());
        let pool = Pool::<()>::default();
        let a = pool.raw(addr, &s, &metrics, None, now).await.unwrap();
        let _server_a = listener.accept().await.unwrap();
        let a_port = port(&a);
        pool.put_raw(a, s.max_idle);
        assert_eq!(pool.idle(), 1);
        let a = pool.raw(addr, &s, &metrics, None, now).await.unwrap();
        assert_eq!(port(&a), a_port, "the idle one is reused");
        assert_eq!(pool.idle(), 0);
        pool.put_raw(a, s.max_idle);
        let b = pool
            .raw(addr, &s, &metrics, None, now + s.idle_timeout)
            .await
            .unwrap();
        let _server_b = listener.accept().await.unwrap();
        assert_ne!(port(&b), a_port, "an expired one is closed, not reused");
        assert_eq!(pool.idle(), 0);
        assert!(!pool.h2_open());
    }

    #[tokio::test]
    async fn idle_connections_are_capped_and_evicted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (s, metrics, now) = (settings(), Metrics::default(), Instant::now());
        let pool = Pool::<()>::default();
        let mut conns = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            conns.push(pool.raw(addr, &s, &metrics, None, now).await.unwrap());
            servers.push(listener.accept().await.unwrap().0);
        }
        for c in conns {
            pool.put_raw(c, s.max_idle);
        }
        assert_eq!(pool.idle(), 2, "max_idle kept");
        pool.evict_idle(s.idle_timeout);
        assert_eq!(pool.idle(), 2, "fresh and open");
        // The servers close: the connections go at the next sweep the
        // reactor has seen it by.
        servers.clear();
        for _ in 0..200 {
            pool.evict_idle(s.idle_timeout);
            if pool.idle() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = Pool::<()>::default();
        let r = pool
            .raw(addr, &settings(), &Metrics::default(), None, Instant::now())
            .await;
        assert!(matches!(r, Err(ConnectError::Io(a, _)) if a == addr));
    }
}
