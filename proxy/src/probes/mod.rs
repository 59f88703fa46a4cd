//! The probe listener (`--probes`, port 15020 on the pod IP in Kubernetes):
//! with Strict mTLS the kubelet can no longer reach the app's own HTTP
//! probes through the inbound listener, so the injector rewrites them to
//! this plain HTTP/1.1 listener, which serves only
//!
//! - `GET /ready`: the proxy's readiness, exactly as the admin `/ready`;
//! - `GET /app-health/...`: the app probes listed in `--app-probes`
//!   ([`app`]), each forwarded to the app on loopback ([`forward`]), with
//!   the app's status as the answer;
//!
//! and 404 for anything else. The admin endpoint stays on loopback. This
//! listener shares nothing with request handling but the readiness state.

pub(crate) mod app;
mod forward;

use crate::body::ResponseBody;
use crate::drain::{Drain, Watch};
use crate::proxy::Proxy;
use app::AppProbes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most probe connections open at once: the kubelet needs a handful, and
/// the listener is reachable from the whole cluster network.
const MAX_CONNECTIONS: usize = 64;
/// A probe request's head must arrive within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

struct Probes {
    proxy: Arc<Proxy>,
    app: AppProbes,
}

/// Serves probes on every listener (the `--probes` address and its IPv6
/// twin, for pods whose IP the kubelet probes over IPv6) until shutdown.
pub(crate) async fn serve(
    listeners: Vec<TcpListener>,
    proxy: Arc<Proxy>,
    app: AppProbes,
    drain: &Drain,
) {
    let probes = Arc::new(Probes { proxy, app });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        loops.spawn(accept(l, probes.clone(), slots.clone(), drain.watch()));
    }
    while loops.join_next().await.is_some() {}
}

async fn accept(
    listener: TcpListener,
    probes: Arc<Probes>,
    slots: Arc<Semaphore>,
    mut stop: Watch,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.signalled() => return,
        };
        // Past the limit a connection is closed at once rather than queued.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(handle(&probes, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(slot);
        });
    }
}

async fn handle(probes: &Probes, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    let known = path == "/ready" || probes.app.get(path).is_some();
    if !known {
        return text(StatusCode::NOT_FOUND, "not a probe of this pod\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "probes are GET\n".into());
    }
    match probes.app.get(path) {
        Some(probe) => forward::forward(probe, req.headers()).await,
        None => match crate::admin::readiness(&probes.proxy) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
    }
}

fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
