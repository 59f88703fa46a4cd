//! What happens to one request: find its route, apply the rule's filters,
//! choose a backend and an endpoint, forward, and account for the result.

use crate::backend::{Backend, HashKey};
use crate::balance::hash_bytes;
use crate::body::{RequestBody, ResponseBody};
use crate::http::errors::ProxyError;
use crate::http::forward::{self, Outgoing, Wire};
use crate::http::headers::upgrade_requested;
use crate::proxy::Proxy;
use crate::route::{modify_path, Filters};
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::{self, Line, Record};
use crate::telemetry::trace::Span;
use http::uri::Authority;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Body as _;
use opentelemetry::trace::SpanKind;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// What we know of the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// Where the client was really going, for connections redirected to us.
    pub orig_dst: Option<SocketAddr>,
    /// The client's verified SPIFFE ID, on an inbound mTLS connection.
    pub peer_identity: Option<Arc<str>>,
}

/// The authority a request is addressed to: the absolute URI's (proxy form,
/// HTTP/2) or the Host header's.
fn authority_of(req: &Request<RequestBody>) -> Option<&str> {
    authority_in(req.uri(), req.headers().get(header::HOST))
}

/// The URI's authority, else the Host value's, without any userinfo.
fn authority_in<'a>(uri: &'a http::Uri, host: Option<&'a HeaderValue>) -> Option<&'a str> {
    let a = match uri.authority() {
        Some(a) => a.as_str(),
        None => host?.to_str().ok()?,
    };
    Some(a.rsplit_once('@').map_or(a, |(_, host)| host))
}

/// Splits off what the upstream request needs from the client's request.
fn outgoing(
    mut req: Request<RequestBody>,
    authority: Option<Authority>,
    started: Instant,
) -> Outgoing {
    // An upgrade offer on a request with a body (curl's h2c offer on a POST)
    // is answered as the plain request it also is: the body must go through.
    let upgrade = match req.version() {
        Version::HTTP_11 if req.body().is_end_stream() => {
            upgrade_requested(req.headers()).map(|p| (p, hyper::upgrade::on(&mut req)))
        }
        _ => None,
    };
    let (parts, body) = req.into_parts();
    let body = if upgrade.is_some() {
        RequestBody::Empty
    } else {
        body
    };
    Outgoing {
        req: Request::from_parts(parts, body),
        authority,
        upgrade,
        started,
    }
}

/// Handles a request from the local app (outbound listener).
pub async fn outbound(
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
    if !log && !span.as_ref().is_some_and(Span::recording) {
        return serve_outbound(proxy, &conn, req, started, None).await;
    }
    let seen = Seen::of(&req, log, span);
    let mut rec = Record::default();
    let resp = serve_outbound(proxy, &conn, req, started, Some(&mut rec)).await;
    let identity = rec.upstream.identity.clone();
    seen.finish("outbound", resp, started, &conn, &rec, identity)
}

/// What the access log and the trace span need of a request, kept before
/// the request moves on.
struct Seen {
    method: Method,
    /// The request's URI and, when it has no authority, its Host: both
    /// shared with the request's own bytes, so keeping them costs no copy.
    uri: http::Uri,
    host: Option<HeaderValue>,
    http2: bool,
    log: bool,
    span: Option<Span>,
}

impl Seen {
    fn of(req: &Request<RequestBody>, log: bool, span: Option<Span>) -> Seen {
        let uri = req.uri().clone();
        let host = match uri.authority() {
            Some(_) => None,
            None => req.headers().get(header::HOST).cloned(),
        };
        Seen {
            method: req.method().clone(),
            uri,
            host,
            http2: req.version() == Version::HTTP_2,
            log,
            span,
        }
    }

    /// Writes the access log line and records the span, as they are on;
    /// the span ends with the response body. `identity`: the peer's SPIFFE
    /// ID (the caller's inbound, the upstream's expected one outbound).
    fn finish(
        self,
        direction: &'static str,
        resp: Response<ResponseBody>,
        started: Instant,
        conn: &ConnInfo,
        rec: &Record,
        identity: Option<Arc<str>>,
    ) -> Response<ResponseBody> {
        let line = Line {
            direction,
            method: self.method.as_str(),
            authority: authority_in(&self.uri, self.host.as_ref()).unwrap_or(""),
            path: self.uri.path(),
            status: resp.status().as_u16(),
            duration: started.elapsed(),
            peer: conn.peer,
            record: rec,
        };
        if self.log {
            access_log::emit(&line);
        }
        match self
            .span
            .and_then(|s| s.finish(&line, identity, self.http2))
        {
            Some(pending) => resp.map(|b| b.with_trace(pending)),
            None => resp,
        }
    }
}

/// Answers with `e`, noting its cause for the access log.
fn fail(e: ProxyError, rec: &mut Option<&mut Record>) -> Response<ResponseBody> {
    if let Some(r) = rec.as_deref_mut() {
        r.cause = Some(e.kind().1);
    }
    e.into_response()
}

async fn serve_outbound(
    proxy: Arc<Proxy>,
    conn: &ConnInfo,
    req: Request<RequestBody>,
    started: Instant,
    mut rec: Option<&mut Record>,
) -> Response<ResponseBody> {
    let mut snap = proxy.snapshot.load_full();
    if req.method() == Method::CONNECT {
        return crate::tcp::connect_tunnel(&proxy, &snap, req).await;
    }
    let Some(authority) = authority_of(&req) else {
        proxy.no_route_metrics.record(400, started.elapsed());
        return fail(
            ProxyError::BadRequest("no Host header or authority"),
            &mut rec,
        );
    };
    if snap.host(authority).is_none() {
        // Mesh mode: the scoped config has only names asked for so far.
        if let Some(lookups) = &proxy.lookups {
            if lookups.discover(authority).await {
                snap = proxy.snapshot.load_full();
            }
        }
    }
    let Some(vh) = snap.host(authority) else {
        if let Some(dst) = conn.orig_dst {
            return passthrough(&proxy, dst, req, started, rec).await;
        }
        let resp = fail(ProxyError::NoRoute(authority.to_owned()), &mut rec);
        proxy
            .no_route_metrics
            .record(resp.status().as_u16(), started.elapsed());
        return resp;
    };
    let path = req.uri().path();
    let query = req.uri().query();
    let Some((matcher, rule)) = vh
        .matches
        .iter()
        .find(|(m, _)| m.matches(req.method(), path, query, req.headers()))
    else {
        let resp = fail(ProxyError::NoRuleMatch(vh.name.to_string()), &mut rec);
        proxy
            .no_route_metrics
            .record(resp.status().as_u16(), started.elapsed());
        return resp;
    };
    if let Some(r) = rec.as_deref_mut() {
        r.route = Some(rule.route.clone());
    }
    let prefix = matcher.prefix().map(str::to_owned);
    if let Some(redirect) = &rule.filters.redirect {
        let resp = redirect_response(&req, authority, redirect, prefix.as_deref());
        rule.local_metrics
            .record(resp.status().as_u16(), started.elapsed());
        return resp;
    }
    let Some(wb) = pick_backend(rule) else {
        let resp = fail(ProxyError::NoBackend, &mut rec);
        rule.local_metrics
            .record(resp.status().as_u16(), started.elapsed());
        return resp;
    };
    let up = match rec.as_deref_mut() {
        Some(r) => {
            r.backend = Some(wb.backend.key.clone());
            Some(&mut r.upstream)
        }
        None => None,
    };
    let (out, hash) = prepare(conn, rule, wb, req, prefix.as_deref(), started);
    let resp = match crate::http::retry::call(&proxy, wb, rule, out, hash, up).await {
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
            fail(e, &mut rec)
        }
    };
    wb.metrics.record(resp.status().as_u16(), started.elapsed());
    resp
}

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

/// Applies request filters; a hostname rewrite sets the authority to send.
fn apply_filters(
    f: &Filters,
    req: &mut Request<RequestBody>,
    authority: &mut Option<Authority>,
    prefix: Option<&str>,
) {
    if f.is_empty() {
        return;
    }
    if let Some(m) = &f.request_headers {
        m.apply(req.headers_mut());
    }
    if let Some(rw) = &f.rewrite {
        if let Some(h) = &rw.hostname {
            *authority = h.parse().ok();
        }
        if let Some(pm) = &rw.path {
            let new_path = modify_path(req.uri().path(), pm, prefix);
            let pq = match req.uri().query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            if let Ok(pq) = pq.parse::<http::uri::PathAndQuery>() {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(u) = http::Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
        }
    }
}

/// The request to send upstream (filters applied) and its balancer hash.
fn prepare(
    conn: &ConnInfo,
    rule: &Rule,
    wb: &WeightedBackend,
    mut req: Request<RequestBody>,
    prefix: Option<&str>,
    started: Instant,
) -> (Outgoing, Option<u64>) {
    // The client's authority goes upstream as is, unless a filter rewrites it.
    let mut authority = None;
    apply_filters(&rule.filters, &mut req, &mut authority, prefix);
    apply_filters(&wb.filters, &mut req, &mut authority, prefix);
    let backend = &wb.backend;
    let hash = request_hash(backend, &req, conn);
    (outgoing(req, authority, started), hash)
}

fn request_hash(backend: &Backend, req: &Request<RequestBody>, conn: &ConnInfo) -> Option<u64> {
    match &backend.hash_key {
        HashKey::None => None,
        HashKey::Header(name) => req.headers().get(name).map(|v| hash_bytes(v.as_bytes())),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(hash_bytes(conn.peer.ip().to_string().as_bytes())),
    }
}

fn redirect_response(
    req: &Request<RequestBody>,
    authority: &str,
    r: &weft_mesh::config::route::Redirect,
    prefix: Option<&str>,
) -> Response<ResponseBody> {
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| req.uri().scheme_str().unwrap_or("http").to_owned());
    let host = r
        .hostname
        .clone()
        .unwrap_or_else(|| weft_mesh::names::strip_port(authority).to_owned());
    // Gateway API: an explicit port wins; a new scheme implies its well-known port.
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok()),
    };
    let port =
        port.filter(|p| !((scheme == "http" && *p == 80) || (scheme == "https" && *p == 443)));
    let path = match &r.path {
        Some(pm) => modify_path(req.uri().path(), pm, prefix),
        None => req.uri().path().to_owned(),
    };
    let mut location = format!("{scheme}://{host}");
    if let Some(p) = port {
        location.push_str(&format!(":{p}"));
    }
    location.push_str(&path);
    if let Some(q) = req.uri().query() {
        location.push('?');
        location.push_str(q);
    }
    let status = StatusCode::from_u16(r.status_code.unwrap_or(302)).unwrap_or(StatusCode::FOUND);
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// An intercepted request for a destination with no config: send it where
/// the app was sending it.
async fn passthrough(
    proxy: &Arc<Proxy>,
    dst: SocketAddr,
    req: Request<RequestBody>,
    started: Instant,
    mut rec: Option<&mut Record>,
) -> Response<ResponseBody> {
    if let Some(r) = rec.as_deref_mut() {
        r.route = Some(Arc::from("passthrough"));
        r.upstream.endpoint = Some(dst);
    }
    let ep = proxy.passthrough_endpoint(dst);
    let wire = if req.version() == Version::HTTP_2 {
        Wire::Http2
    } else {
        Wire::Http1
    };
    let out = outgoing(req, None, started);
    let resp = forward::call(&ep, wire, &proxy.passthrough_settings, &proxy.metrics, out)
        .await
        .unwrap_or_else(|e| fail(e, &mut rec));
    proxy
        .passthrough_metrics
        .record(resp.status().as_u16(), started.elapsed());
    resp
}

/// Handles a request for the local app (inbound listener).
pub async fn inbound(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<RequestBody>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let mut req = req;
    let span = proxy
        .tracing
        .start(SpanKind::Server, req.method(), req.headers());
    let log = proxy.access_log.load(Ordering::Relaxed);
    {
        let snap = proxy.snapshot.load();
        if !snap.authz.is_empty()
            && !snap.authz.allows(&crate::authz::Subject {
                identity: conn.peer_identity.as_deref(),
                request: Some((req.method().as_str(), req.uri().path())),
            })
        {
            drop(snap);
            proxy.metrics.inbound_rejected("forbidden");
            let resp = ProxyError::Forbidden.into_response();
            proxy
                .inbound_metrics
                .record(resp.status().as_u16(), started.elapsed());
            if log || span.is_some() {
                let rec = Record {
                    cause: Some("forbidden"),
                    ..Record::default()
                };
                let id = conn.peer_identity.clone();
                return Seen::of(&req, log, span).finish("inbound", resp, started, &conn, &rec, id);
            }
            return resp;
        }
    }
    if proxy.mesh_mode || proxy.mesh.load().is_some() {
        set_peer_identity(&mut req, &conn);
    }
    // The next hop gets the context even of a sampled-out span; only a
    // recorded span (or the access log) needs what the request looked like.
    if let Some(s) = &span {
        s.inject(req.headers_mut());
    }
    if !log && !span.as_ref().is_some_and(Span::recording) {
        return serve_inbound(&proxy, req, started, None).await;
    }
    let seen = Seen::of(&req, log, span);
    let mut rec = Record {
        backend: Some(Arc::from("app")),
        ..Record::default()
    };
    rec.upstream.endpoint = Some(proxy.app.addr);
    let resp = serve_inbound(&proxy, req, started, Some(&mut rec)).await;
    let id = conn.peer_identity.clone();
    seen.finish("inbound", resp, started, &conn, &rec, id)
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
/// in [`crate::http::forward::ORIG_PROTO_HEADER`], removed here) goes as
/// HTTP/1.1 again; other HTTP/2 (gRPC) stays HTTP/2.
fn app_wire(req: &mut Request<RequestBody>) -> Wire {
    let orig_h1 = req
        .headers_mut()
        .remove(crate::http::forward::ORIG_PROTO_HEADER)
        .is_some_and(|v| v.as_bytes().starts_with(b"HTTP/1"));
    if req.version() == Version::HTTP_2 && !orig_h1 {
        Wire::Http2
    } else {
        Wire::Http1
    }
}

async fn serve_inbound(
    proxy: &Proxy,
    req: Request<RequestBody>,
    started: Instant,
    mut rec: Option<&mut Record>,
) -> Response<ResponseBody> {
    let mut req = req;
    let wire = app_wire(&mut req);
    let out = outgoing(req, None, started);
    let resp = forward::call(&proxy.app, wire, &proxy.app_settings, &proxy.metrics, out)
        .await
        .unwrap_or_else(|e| fail(e, &mut rec));
    proxy
        .inbound_metrics
        .record(resp.status().as_u16(), started.elapsed());
    resp
}
