//! `RequestMirror`: a copy of a share of a rule's requests goes to another
//! backend, and its answer is dropped. The copy is sent from its own task
//! with its own body (the client's frames copied as they pass, see
//! `body::tee`), so the real request neither waits for the mirror nor
//! fails with it; a mirror that falls behind is abandoned. Copies are not
//! retried; they are counted in the metrics of the mirror's backend.

use crate::body::tee::tee;
use crate::body::RequestBody;
use crate::http::observe::Observer;
use crate::http::rewrite::prepare;
use crate::http::ConnInfo;
use crate::proxy::Proxy;
use crate::snapshot::Rule;
use http::Request;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

/// Sends a copy of `req` to the rule's mirror, if it has one and this
/// request is in its share; returns the request to send on. An upgrade is
/// never mirrored (it cannot become two tunnels).
#[inline]
pub(crate) fn fork(
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    rule: &Arc<Rule>,
    req: Request<RequestBody>,
    prefix: Option<&str>,
    started: Instant,
) -> Request<RequestBody> {
    match &rule.mirror {
        None => req,
        Some(m) => {
            let sampled =
                m.per_million >= 1_000_000 || rand::random_range(0..1_000_000) < m.per_million;
            if !sampled || req.headers().contains_key(http::header::UPGRADE) {
                return req;
            }
            send_copy(proxy, conn, rule, req, prefix, started)
        }
    }
}

fn send_copy(
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    rule: &Arc<Rule>,
    req: Request<RequestBody>,
    prefix: Option<&str>,
    started: Instant,
) -> Request<RequestBody> {
    let Some(m) = &rule.mirror else { return req };
    let (parts, body) = req.into_parts();
    let (body, copy) = tee(body);
    let mut copy_req = Request::new(copy);
    *copy_req.method_mut() = parts.method.clone();
    *copy_req.uri_mut() = parts.uri.clone();
    *copy_req.version_mut() = parts.version;
    *copy_req.headers_mut() = parts.headers.clone();
    let (out, hash) = prepare(conn, rule, &m.backend, copy_req, prefix, started);
    let proxy = proxy.clone();
    let rule = rule.clone();
    tokio::spawn(async move {
        let Some(m) = &rule.mirror else { return };
        let mut obs = Observer::new(started, &m.backend.metrics, None);
        let resp = match crate::http::retry::call(&proxy, &m.backend, &rule, out, hash, &mut obs)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(route = %rule.route, backend = %m.backend.backend.key, error = %e, "mirror failed");
                obs.fail(e)
            }
        };
        // Read to the end, so the connection can serve again.
        let _ = obs.answer(resp).into_body().collect().await;
    });
    Request::from_parts(parts, body)
}
