//! Opaque TCP: bytes forwarded both ways, nothing parsed. Used for
//! `protocol: tcp` backends, intercepted non-HTTP traffic, and (through
//! `http::connect`) CONNECT tunnels.

use crate::backend::Backend;
use crate::telemetry::metrics::Metrics;
use crate::transport::connect_tcp;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// Picks an endpoint of a backend for a connection (no request to hash on).
pub(crate) fn pick_endpoint(backend: &Backend) -> Option<SocketAddr> {
    let set = backend.endpoints.load();
    let idx = set.balancer.pick(&set.endpoints, None)?;
    set.endpoints.get(idx).map(|e| e.addr)
}

/// Copies bytes between a client connection and `target` until both close.
pub(crate) async fn forward(
    metrics: &Metrics,
    mut client: TcpStream,
    target: SocketAddr,
    connect_timeout: Duration,
    direction: &'static str,
) {
    let mut upstream = match connect_tcp(target, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            metrics.upstream_connect(false);
            tracing::debug!(%target, error = %e, "tcp connect failed");
            return;
        }
    };
    metrics.upstream_connect(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((a, b)) => metrics.tcp_bytes_add(direction, a + b),
        Err(e) => tracing::debug!(%target, error = %e, "tcp stream ended with error"),
    }
}
