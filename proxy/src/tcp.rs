//! Opaque TCP: bytes forwarded both ways, nothing parsed. Used for
//! `protocol: tcp` backends and intercepted non-HTTP traffic (to a meshed
//! endpoint over mTLS with ALPN [`TCP_ALPN`]), the inbound side of that
//! (decrypted bytes to the app), and (through `http::connect`) CONNECT
//! tunnels.

use crate::backend::{Backend, Endpoint};
use crate::telemetry::metrics::Metrics;
use crate::tls::mesh::{Alpn, MeshTls};
use crate::transport::{connect_tcp, tls_handshake};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

#[cfg(doc)]
use crate::tls::mesh::TCP_ALPN;

/// Picks an endpoint of a backend for a connection (no request to hash on).
pub(crate) fn pick_endpoint(backend: &Backend) -> Option<SocketAddr> {
    pick(backend).map(|e| e.addr)
}

fn pick(backend: &Backend) -> Option<Arc<Endpoint>> {
    let set = backend.endpoints.load();
    let idx = set.balancer.pick(&set.endpoints, None)?;
    set.endpoints.get(idx).cloned()
}

/// Copies bytes between a client connection and `target` until both close.
pub(crate) async fn forward<C>(
    metrics: &Metrics,
    client: C,
    target: SocketAddr,
    connect_timeout: Duration,
    direction: &'static str,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = match connect_tcp(target, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            metrics.upstream_connect(false);
            tracing::debug!(%target, error = %e, "tcp connect failed");
            return;
        }
    };
    metrics.upstream_connect(true);
    splice(metrics, client, upstream, target, direction).await
}

/// An intercepted connection for `backend`: to one of its endpoints, over
/// mTLS (ALPN `weft-tcp`, the peer verified as the endpoint's identity)
/// when the endpoint names one and this proxy has a mesh identity, else in
/// plaintext. With no endpoint at all, to `fallback` (where the app was
/// going).
pub(crate) async fn to_backend(
    metrics: &Metrics,
    mesh: Option<&MeshTls>,
    client: TcpStream,
    backend: &Backend,
    fallback: SocketAddr,
) {
    let timeout = backend.settings.connect_timeout;
    let Some(ep) = pick(backend) else {
        return forward(metrics, client, fallback, timeout, "outbound").await;
    };
    let (Some(mesh), Some(peer)) = (mesh, &ep.identity) else {
        return forward(metrics, client, ep.addr, timeout, "outbound").await;
    };
    let target = ep.addr;
    let config = match mesh.client_for(peer, Alpn::Tcp) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%target, %peer, error = %e, "no mTLS config for the endpoint");
            return;
        }
    };
    let stream = match connect_tcp(target, timeout).await {
        Ok(s) => s,
        Err(e) => {
            metrics.upstream_connect(false);
            tracing::debug!(%target, error = %e, "tcp connect failed");
            return;
        }
    };
    metrics.upstream_connect(true);
    match tls_handshake(target, stream, &config, timeout, metrics).await {
        Ok(tls) => splice(metrics, client, tls, target, "outbound").await,
        Err(e) => tracing::debug!(%target, %peer, error = %e, "opaque TCP: mTLS failed"),
    }
}

/// Copies bytes both ways until both sides close.
async fn splice<A, B>(metrics: &Metrics, mut a: A, mut b: B, target: SocketAddr, dir: &'static str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional(&mut a, &mut b).await {
        Ok((x, y)) => metrics.tcp_bytes_add(dir, x + y),
        Err(e) => tracing::debug!(%target, error = %e, "tcp stream ended with error"),
    }
}
