//! Starting hyper's HTTP/1.1 and HTTP/2 clients on an open connection. The
//! connection task each one spawns holds the backend's connection slot for
//! as long as the connection lives.

use super::connect::ConnectError;
use crate::resilience::limits::Permit;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

/// What hyper's clients need of a request body: frames that can move to the
/// connection task, and errors they can report.
pub(crate) trait SendBody:
    http_body::Body<Data: Send, Error: Into<Box<dyn Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> SendBody for B where
    B: http_body::Body<Data: Send, Error: Into<Box<dyn Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// HTTP/1.1 client handshake on any connection; the connection task keeps
/// `permit` for its life.
pub(super) async fn h1_handshake<S, B: SendBody>(
    addr: SocketAddr,
    stream: S,
    permit: Option<Permit>,
) -> Result<http1::SendRequest<B>, ConnectError>
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

/// HTTP/2 client handshake on any connection; the connection task keeps
/// `permit` for its life.
pub(super) async fn h2_handshake<I, B: SendBody>(
    addr: SocketAddr,
    io: I,
    permit: Option<Permit>,
) -> Result<http2::SendRequest<B>, ConnectError>
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
