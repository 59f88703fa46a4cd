//! Opening an upstream connection: TCP with a deadline and without Nagle's
//! delay, counted under the backend's limits, and the mTLS client
//! handshake to a mesh peer.

use crate::resilience::limits::{Kind, Limits, Permit};
use crate::telemetry::metrics::Metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How a backend wants its connections kept.
#[derive(Clone, Debug)]
pub(crate) struct PoolSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
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

/// Opens a TCP connection with a deadline and without Nagle's delay.
pub(crate) async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(addr))?
        .map_err(|e| ConnectError::Io(addr, e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// [`connect_tcp`] under the backend's limits (a pending-request slot while
/// connecting, a connection slot for the connection's life), counted in
/// `weft_upstream_connects_total`.
pub(super) async fn connect_counted(
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

/// Wraps a fresh connection in mTLS under the connect deadline.
pub(crate) async fn tls_handshake(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        PoolSettings {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_idle: 1,
        }
    }

    #[tokio::test]
    async fn counted_connects_hold_a_connection_slot_and_respect_limits() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::default();
        let limits = Limits::new(1, 1, 1, 1);
        let (stream, permit) = connect_counted(addr, &settings(), &metrics, Some(&limits))
            .await
            .unwrap();
        assert!(stream.nodelay().unwrap());
        assert!(permit.is_some());
        assert_eq!(limits.active(Kind::Connections), 1);
        assert_eq!(limits.active(Kind::Pending), 0, "freed once connected");
        let refused = connect_counted(addr, &settings(), &metrics, Some(&limits)).await;
        assert!(matches!(
            refused,
            Err(ConnectError::Overloaded("connections"))
        ));
        assert_eq!(limits.active(Kind::Pending), 0, "freed on refusal");
        drop(permit);
        assert_eq!(limits.active(Kind::Connections), 0);
        let (_, none) = connect_counted(addr, &settings(), &metrics, None)
            .await
            .unwrap();
        assert!(none.is_none());
    }
}
