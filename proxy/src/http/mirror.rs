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
/// request is in its share; `req` keeps its half of the body. An upgrade
/// is never mirrored (it cannot become two tunnels). The request is
/// borrowed, not moved: the path without a mirror copies nothing.
pub(crate) fn fork(
    proxy: &Arc<Proxy>,
    conn: &ConnInfo,
    rule: &Arc<Rule>,
    req: &mut Request<RequestBody>,
    prefix: Option<&str>,
    started: Instant,
) {
    let Some(m) = &rule.mirror else { return };
    let sampled = m.per_million >= 1_000_000 || rand::random_range(0..1_000_000) < m.per_million;
    if !sampled || req.headers().contains_key(http::header::UPGRADE) {
        return;
    }
    let (body, copy) = tee(std::mem::take(req.body_mut()));
    *req.body_mut() = body;
    let mut copy_req = Request::new(copy);
    *copy_req.method_mut() = req.method().clone();
    *copy_req.uri_mut() = req.uri().clone();
    *copy_req.version_mut() = req.version();
    *copy_req.headers_mut() = req.headers().clone();
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
}
