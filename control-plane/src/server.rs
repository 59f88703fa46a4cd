//! The API endpoint: TLS 1.3 with the control plane's own SPIFFE ID
//! (client certificates optional, verified when sent), HTTP/2 or HTTP/1.1,
//! routed to the certificate authority or the config watch (see
//! [`weft_mesh::api`]).

use crate::body::{text, CpBody};
use crate::state::ControlPlane;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_mesh::api;

/// Serves the API on `listener` (TLS; HTTP/2, or HTTP/1.1 for curl).
pub(crate) async fn serve_api(cp: Arc<ControlPlane>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let cp = cp.clone();
        tokio::spawn(async move {
            let acceptor = cp.acceptor.load_full();
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = weft_mesh::identity::peer_identity(tls.get_ref().1);
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handle_api(&cp, req, identity, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn handle_api(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: Option<String>,
    peer: SocketAddr,
) -> Response<CpBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, api::CERTIFICATE_PATH) => {
            crate::certificates::certificate(cp, req, identity).await
        }
        (&Method::POST, api::WATCH_PATH) => match identity {
            Some(id) => crate::watch::start(cp, req, id, peer),
            None => text(
                StatusCode::UNAUTHORIZED,
                "the watch needs a mesh certificate (get one from /v1/certificate)\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "weft-control-plane: POST /v1/certificate, POST /v1/watch\n",
        ),
    }
}
