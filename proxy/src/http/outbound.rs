//! A request from the local app (the outbound listener): find its route
//! (by the Service at the original destination of an intercepted
//! connection, when there is one; else by authority), apply the rule's
//! filters, choose a backend, inject its TrafficPolicy's fault if it has
//! one, fork a mirror copy, forward with retries — or
//! send it where the app was sending it when it was intercepted and no
//! config knows the destination.

use crate::body::{RequestBody, ResponseBody};
use crate::http::checks;
use crate::http::errors::ProxyError;
use crate::http::forward::{Outgoing, Target, Wire};
use crate::http::headers::authority_in;
use crate::http::observe::{Observer, Report};
use crate::http::rewrite::{prepare, redirect_response};
use crate::http::ConnInfo;
use crate::proxy::Proxy;
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::Record;
use http::{Method, Request, Response, Version};
use opentelemetry::trace::SpanKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Handles a request from the local app.
pub(crate) async fn outbound(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    mut req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let span = proxy
        .tracing
        .start(SpanKind::Client, req.method(), req.headers());
    let log = proxy.access_log.load(Ordering::Relaxed);
    // The next hop gets the context even of a sampled-out span; only a
    // recorded span (or the access log) needs what the request looked like.
    if let Some(s) = &span {
        s.inject(req.headers_mut());
    }
    let Some(mut report) = Report::of(&req, log, span) else {
        return serve(proxy, &conn, req, started, None).await;
    };
    let resp = serve(proxy, &conn, req, started, Some(&mut report.record)).await;
    let identity = report.record.upstream.identity.clone();
    report.finish("outbound", resp, started, conn.peer, identity)
}

async fn serve(
    proxy: Arc<Proxy>,
    conn: &ConnInfo,
    mut req: Request<RequestBody>,
    started: Instant,
    record: Option<&mut Record>,
) -> Response<ResponseBody> {
    let mut snap = proxy.snapshot.load_full();
    let mut obs = Observer::new(started, &proxy.no_route_metrics, record);
    obs.grpc(&req);
    if let Err(e) = checks::request(&mut req, true) {
        obs.watch(&proxy.failures, "outbound", &req);
        let resp = obs.fail(e);
        return obs.answer(resp);
    }
    if req.method() == Method::CONNECT {
        return crate::http::connect::tunnel(&proxy, &snap, req).await;
    }
    // One lookup of Host, for the route and for `/failures`.
    let host = req.headers().get(http::header::HOST);
    obs.watch_host(&proxy.failures, "outbound", &req, host);
    let Some(authority) = authority_in(req.uri(), host) else {
        let resp = obs.fail(ProxyError::BadRequest("no Host header or authority"));
        return obs.answer(resp);
    };
    // Intercepted for a Service's ClusterIP:port: that Service's routes,
    // whatever the Host says (mesh ClusterIP matching).
    let by_dst = conn
        .orig_name
        .as_deref()
        .filter(|n| snap.names.get_exact(n).is_some());
    if by_dst.is_none() && snap.host(authority).is_none() {
        // Mesh mode: the scoped config has only names asked for so far.
        if let Some(lookups) = &proxy.lookups {
            if lookups.discover(authority).await {
                snap = proxy.snapshot.load_full();
            }
        }
    }
    let vh = match by_dst {
        Some(name) => snap.names.get_exact(name),
        None => snap.host(authority),
    };
    let Some(vh) = vh else {
        if let Some(dst) = conn.orig_dst {
            return passthrough(&proxy, dst, req, obs).await;
        }
        let resp = obs.fail(ProxyError::NoRoute(authority.to_owned()));
        return obs.answer(resp);
    };
    let path = req.uri().path();
    let query = req.uri().query();
    let Some((matcher, rule)) = vh
        .matches
        .iter()
        .find(|(m, _)| m.matches(req.method(), path, query, req.headers()))
    else {
        let resp = obs.fail(ProxyError::NoRuleMatch(vh.name.to_string()));
        return obs.answer(resp);
    };
    obs.route(rule);
    let prefix = matcher.prefix().map(str::to_owned);
    if let Some(redirect) = &rule.filters.redirect {
        let resp = redirect_response(&req, authority, redirect, prefix.as_deref());
        return obs.answer(resp);
    }
    let Some(wb) = pick_backend(rule) else {
        let resp = obs.fail(ProxyError::NoBackend);
        return obs.answer(resp);
    };
    obs.backend(wb);
    if let Some(f) = &wb.backend.fault {
        // Boxed: the wait lives on the heap of faulted requests only, so
        // the future of every request stays as small as without faults.
        let injected = crate::http::fault::inject(f, &req, rule.request_timeout, &mut obs);
        if let Err(e) = Box::pin(injected).await {
            let resp = obs.fail(e);
            return obs.answer(resp);
        }
    }
    if rule.mirror.is_some() {
        let (p, s) = (prefix.as_deref(), started);
        crate::http::mirror::fork(&proxy, conn, rule, &mut req, p, s, &mut obs);
    }
    let (out, hash) = prepare(conn, rule, wb, req, prefix.as_deref(), started);
    let mut resp = match crate::http::retry::call(&proxy, wb, rule, out, hash, &mut obs).await {
        Ok(mut resp) => {
            if let Some(m) = &rule.filters.response_headers {
                m.apply(resp.headers_mut());
            }
            if let Some(m) = &wb.filters.response_headers {
                m.apply(resp.headers_mut());
            }
            resp
        }
        Err(e) => {
            let (_, cause) = e.kind();
            tracing::debug!(route = %rule.route, backend = %wb.backend.key, error = %e, cause, "request failed");
            obs.fail(e)
        }
    };
    if proxy.debug_headers.load(Ordering::Relaxed) {
        obs.debug_headers(resp.headers_mut());
    }
    obs.answer(resp)
}

/// One of the rule's backends, by weight.
fn pick_backend(rule: &Rule) -> Option<&WeightedBackend> {
    match rule.backends.len() {
        0 => None,
        1 => rule.backends.first().filter(|b| b.weight > 0),
        _ if rule.total_weight == 0 => None,
        _ => {
            let mut x = rand::random_range(0..rule.total_weight);
            rule.backends.iter().find(|b| {
                if x < b.weight as u64 {
                    true
                } else {
                    x -= b.weight as u64;
                    false
                }
            })
        }
    }
}

/// An intercepted request for a destination with no config: send it where
/// the app was sending it.
async fn passthrough(
    proxy: &Arc<Proxy>,
    dst: SocketAddr,
    req: Request<RequestBody>,
    mut obs: Observer<'_>,
) -> Response<ResponseBody> {
    obs.passthrough(&proxy.passthrough_metrics, dst);
    let ep = proxy.passthrough_endpoint(dst);
    let target = Target {
        endpoint: &ep,
        wire: match req.version() {
            Version::HTTP_2 => Wire::Http2,
            _ => Wire::Http1,
        },
        settings: &proxy.passthrough_settings,
        limits: None,
        mesh: None,
        metrics: &proxy.metrics,
    };
    let out = Outgoing::new(req, None, obs.started(), &[]);
    let resp = match target.call(out).await {
        Ok(r) => r,
        Err(e) => obs.fail(e),
    };
    obs.answer(resp)
}
