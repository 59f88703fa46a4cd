//! A request for the local app (the inbound listener): authorized against
//! the service's AuthorizationPolicies, held to its local rate limits,
//! given the caller's verified identity, and forwarded to the app in the
//! protocol it speaks. An upgrade is authorized (and counted against the
//! rate limits) like any request before it can become a tunnel.

use crate::body::{RequestBody, ResponseBody};
use crate::http::checks;
use crate::http::errors::ProxyError;
use crate::http::forward::{Outgoing, Target, Wire, ORIG_PROTO_HEADER};
use crate::http::headers::authority_of;
use crate::http::observe::{Observer, Report};
use crate::http::ConnInfo;
use crate::proxy::Proxy;
use crate::telemetry::access_log::{EventKind, Record};
use http::{HeaderValue, Request, Response, Version};
use opentelemetry::trace::SpanKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Handles a request for the local app.
pub(crate) async fn inbound(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    mut req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let span = proxy
        .tracing
        .start(SpanKind::Server, req.method(), req.headers());
    let log = proxy.access_log.load(Ordering::Relaxed);
    // Checks, then authorization, then the service's rate limits: the
    // first refusal is the answer. Unconfigured, each is one branch.
    let verdict = checks::request(&mut req, false).and_then(|()| {
        let snap = proxy.snapshot.load();
        let allowed = snap.authz.is_empty()
            || snap.authz.allows(&crate::authz::Subject {
                identity: conn.peer_identity.as_deref(),
                request: Some((req.method().as_str(), req.uri().path())),
            });
        if !allowed {
            proxy.metrics.inbound_rejected("forbidden");
            return Err(ProxyError::Forbidden);
        }
        match &snap.rate_limit {
            None => Ok(()),
            Some(rl) => rl
                .check(conn.peer_identity.as_ref())
                .map_err(ProxyError::RateLimited),
        }
    });
    if let Err(error) = verdict {
        let limited = match &error {
            ProxyError::RateLimited(l) => Some(*l),
            _ => None,
        };
        let mut report = Report::of(&req, log, span);
        if let (Some(r), Some(l)) = (report.as_mut(), limited) {
            r.record.upstream.event(EventKind::RateLimited {
                limit: l.limit.name(),
            });
        }
        let mut obs = Observer::new(
            started,
            &proxy.inbound_metrics,
            report.as_mut().map(|r| &mut r.record),
        );
        obs.grpc(&req);
        obs.watch(&proxy.failures, "inbound", &req);
        let mut resp = obs.fail(error);
        if let Some(l) = limited {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(l.retry_after));
        }
        let resp = obs.answer(resp);
        return match report {
            Some(r) => r.finish(
                "inbound",
                resp,
                started,
                conn.peer,
                conn.peer_identity.clone(),
            ),
            None => resp,
        };
    }
    if proxy.mesh_mode || proxy.mesh.load().is_some() {
        set_peer_identity(&mut req, &conn);
    }
    // The next hop gets the context even of a sampled-out span; only a
    // recorded span (or the access log) needs what the request looked like.
    if let Some(s) = &span {
        s.inject(req.headers_mut());
    }
    let Some(mut report) = Report::of(&req, log, span) else {
        return serve(&proxy, req, started, None).await;
    };
    report.record.backend = Some(Arc::from("app"));
    report.record.upstream.endpoint = Some(proxy.app.addr);
    let resp = serve(&proxy, req, started, Some(&mut report.record)).await;
    report.finish(
        "inbound",
        resp,
        started,
        conn.peer,
        conn.peer_identity.clone(),
    )
}

/// Replaces whatever the client sent as its identity with the verified one
/// (none on a plaintext connection), so the app can trust the header.
fn set_peer_identity(req: &mut Request<RequestBody>, conn: &ConnInfo) {
    use crate::tls::mesh::PEER_IDENTITY_HEADER;
    let headers = req.headers_mut();
    headers.remove(PEER_IDENTITY_HEADER);
    if let Some(v) = conn
        .peer_identity
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(PEER_IDENTITY_HEADER, v);
    }
}

/// The protocol to speak to the local app: the request's own, except that a
/// request the calling sidecar carried from HTTP/1 over HTTP/2 (it says so
/// in [`ORIG_PROTO_HEADER`], removed here) goes as
/// HTTP/1.1 again; other HTTP/2 (gRPC) stays HTTP/2.
fn app_wire(req: &mut Request<RequestBody>) -> Wire {
    let orig_h1 = req
        .headers_mut()
        .remove(ORIG_PROTO_HEADER)
        .is_some_and(|v| v.as_bytes().starts_with(b"HTTP/1"));
    if req.version() == Version::HTTP_2 && !orig_h1 {
        Wire::Http2
    } else {
        Wire::Http1
    }
}

async fn serve(
    proxy: &Proxy,
    mut req: Request<RequestBody>,
    started: Instant,
    record: Option<&mut Record>,
) -> Response<ResponseBody> {
    let mut obs = Observer::new(started, &proxy.inbound_metrics, record);
    obs.grpc(&req);
    obs.watch(&proxy.failures, "inbound", &req);
    obs.sent_to(proxy.app.addr);
    let target = Target {
        endpoint: &proxy.app,
        wire: app_wire(&mut req),
        settings: &proxy.app_settings,
        limits: None,
        mesh: None,
        metrics: &proxy.metrics,
    };
    // WebSocket aside, an upgrade becomes a tunnel only when the service's
    // own Backend (the one its callers reach it by) lists it.
    let own = req
        .headers()
        .contains_key(http::header::UPGRADE)
        .then(|| {
            let snap = proxy.snapshot.load();
            authority_of(&req)
                .and_then(|a| snap.host(a))
                .and_then(|vh| vh.backend.clone())
        })
        .flatten();
    let upgrades = own.as_deref().map_or(&[][..], |b| &b.upgrades[..]);
    let resp = match target
        .call(Outgoing::new(req, None, started, upgrades))
        .await
    {
        Ok(r) => r,
        Err(e) => obs.fail(e),
    };
    obs.answer(resp)
}
