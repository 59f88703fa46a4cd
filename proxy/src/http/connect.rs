//! `CONNECT host:port`: a tunnel to an endpoint of the Backend of that
//! name, bytes copied both ways once the client has its 200.

use crate::body::{RequestBody, ResponseBody};
use crate::http::errors::ProxyError;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;
use crate::tcp::pick_endpoint;
use crate::transport::connect_tcp;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// `CONNECT host:port`: tunnel to an endpoint of the Backend of that name.
/// We connect before answering, so a failure is a clear 502 rather than a
/// 200 followed by a closed tunnel.
pub(crate) async fn tunnel(
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
