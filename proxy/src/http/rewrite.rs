//! What a matched rule does to a request before it goes upstream: its
//! filters (header changes, URL and hostname rewrites), the balancer hash
//! its backend asks for, or a redirect answered at once.

use crate::backend::{Backend, HashKey};
use crate::balance::hash_bytes;
use crate::body::{RequestBody, ResponseBody};
use crate::http::forward::Outgoing;
use crate::http::ConnInfo;
use crate::route::{modify_path, Filters};
use crate::snapshot::{Rule, WeightedBackend};
use http::uri::Authority;
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::time::Instant;

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
pub(super) fn prepare(
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
    (
        Outgoing::new(req, authority, started, &backend.upgrades),
        hash,
    )
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

/// The answer to a request that a `RequestRedirect` filter sends elsewhere.
pub(super) fn redirect_response(
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
