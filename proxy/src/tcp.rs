//! Opaque TCP: bytes forwarded both ways, nothing parsed. Used for
//! `protocol: tcp` backends, intercepted non-HTTP traffic, and CONNECT tunnels.

use crate::backend::Backend;
use crate::body::RequestBody;
use crate::body::ResponseBody;
use crate::http::errors::ProxyError;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use crate::transport::connect_tcp;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Picks an endpoint of a backend for a connection (no request to hash on).
pub fn pick_endpoint(backend: &Backend) -> Option<SocketAddr> {
    let set = backend.endpoints.load();
    let idx = set.balancer.pick(&set.endpoints, None)?;
    set.endpoints.get(idx).map(|e| e.addr)
}

/// Copies bytes between a client connection and `target` until both close.
pub async fn forward(
    proxy: &Proxy,
    mut client: TcpStream,
    target: SocketAddr,
    connect_timeout: Duration,
    direction: &'static str,
) {
    let mut upstream = match connect_tcp(target, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            proxy.metrics.upstream_connect(false);
            tracing::debug!(%target, error = %e, "tcp connect failed");
            return;
        }
    };
    proxy.metrics.upstream_connect(true);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((a, b)) => proxy.metrics.tcp_bytes_add(direction, a + b),
        Err(e) => tracing::debug!(%target, error = %e, "tcp stream ended with error"),
    }
}

/// `CONNECT host:port`: tunnel to an endpoint of the Backend of that name.
/// We connect before answering, so a failure is a clear 502 rather than a
/// 200 followed by a closed tunnel.
pub async fn connect_tunnel(
    proxy: &Arc<Proxy>,
    snap: &Snapshot,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_owned()) else {
        return ProxyError::BadRequest("CONNECT needs host:port").into_response();
    };
    let Some(backend) = snap.host(&authority).and_then(|vh| vh.backend.clone()) else {
        return ProxyError::NoRoute(authority).into_response();
    };
    let Some(target) = pick_endpoint(&backend) else {
        return ProxyError::NoEndpoints(backend.key.to_string()).into_response();
    };
    let mut upstream = match connect_tcp(target, backend.settings.connect_timeout).await {
        Ok(s) => s,
        Err(e) => return ProxyError::Connect(e).into_response(),
    };
    let metrics = proxy.metrics.clone();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    metrics.tcp_bytes_add("outbound", a + b);
                }
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}
