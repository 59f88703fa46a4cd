//! `RequestMirror`: a copy of a share of a rule's requests goes to another
//! backend, and its answer is dropped. The copy is sent from its own task
//! with its own body (the client's frames copied as they pass, see
//! `body::tee`), so the real request neither waits for the mirror nor
//! fails with it; a mirror that falls behind is abandoned. Copies are not
//! retried; they are counted in the metrics of the mirror's backend and in
//! `weft_mirrors_total{backend,result}`.
//!
//! Bounds, so a slow or hanging mirror target costs the proxy little: a
//! copy is made only of a body within `MIRROR_MAX_BODY` (a larger
//! Content-Length skips it; a streamed body crossing it cuts the copy off,
//! never sent short); at most `MIRROR_MAX_IN_FLIGHT` copies are in flight
//! per proxy (beyond, copies are skipped); each copy is abandoned after
//! `MIRROR_TIMEOUT` or the rule's request timeout, whichever is shorter.
//!
//! The copy's Host/authority gets `-shadow` after its host part
//! (`reviews.shop:8080` -> `reviews.shop-shadow:8080`), so the mirror
//! target can tell copies from real traffic; an IP-literal host is left as
//! it is (a suffix would make it no address at all).

use crate::body::tee::tee;
use crate::body::RequestBody;
use crate::http::headers::authority_in;
use crate::http::observe::Observer;
use crate::http::rewrite::prepare;
use crate::http::ConnInfo;
use crate::proxy::Proxy;
use crate::snapshot::Rule;
use http::uri::Authority;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use weft_mesh::config::defaults::{MIRROR_MAX_BODY, MIRROR_MAX_IN_FLIGHT};

/// Copies in flight in this proxy (one process, one count).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// A place among the copies in flight, given back when the copy ends.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        let before = IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        if before >= MIRROR_MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `authority` with `-shadow` after the host (see the module header).
pub(crate) fn shadow(authority: &str) -> Option<Authority> {
    if authority.starts_with('[') {
        return authority.parse().ok();
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() {
        return authority.parse().ok();
    }
    let shadowed = match port {
        Some(p) => format!("{host}-shadow:{p}"),
        None => format!("{host}-shadow"),
    };
    shadowed.parse().ok()
}

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
    obs: &mut Observer<'_>,
) {
    let Some(m) = &rule.mirror else { return };
    let sampled = m.per_million >= 1_000_000 || rand::random_range(0..1_000_000) < m.per_million;
    if !sampled || req.headers().contains_key(http::header::UPGRADE) {
        return;
    }
    if req.body().size_hint().lower() > MIRROR_MAX_BODY {
        m.metrics.skipped_body.inc();
        obs.mirror_skipped("body");
        return;
    }
    let Some(slot) = Slot::take() else {
        m.metrics.skipped_limit.inc();
        obs.mirror_skipped("limit");
        return;
    };
    let (body, copy) = tee(std::mem::take(req.body_mut()), MIRROR_MAX_BODY);
    *req.body_mut() = body;
    let mut copy_req = Request::new(copy);
    *copy_req.method_mut() = req.method().clone();
    *copy_req.uri_mut() = req.uri().clone();
    *copy_req.version_mut() = req.version();
    *copy_req.headers_mut() = req.headers().clone();
    let (mut out, hash) = prepare(conn, rule, &m.backend, copy_req, prefix, started);
    let to = match &out.authority {
        Some(a) => Some(a.as_str()),
        None => authority_in(out.req.uri(), out.req.headers().get(http::header::HOST)),
    };
    if let Some(a) = to.and_then(shadow) {
        out.authority = Some(a);
    }
    let proxy = proxy.clone();
    let rule = rule.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let Some(m) = &rule.mirror else { return };
        let mut answered = false;
        let copy = async {
            let mut obs = Observer::new(started, &m.backend.metrics, None);
            let call = crate::http::retry::call(&proxy, &m.backend, &rule, out, hash, &mut obs);
            let resp = match call.await {
                Ok(r) => {
                    answered = true;
                    r
                }
                Err(e) => {
                    tracing::debug!(route = %rule.route, backend = %m.backend.backend.key, error = %e, "mirror failed");
                    obs.fail(e)
                }
            };
            // Read to the end, so the connection can serve again.
            let _ = obs.answer(resp).into_body().collect().await;
        };
        let finished = tokio::time::timeout(m.timeout, copy).await.is_ok();
        if !finished {
            tracing::debug!(route = %rule.route, backend = %m.backend.backend.key, timeout = ?m.timeout, "mirror abandoned");
        }
        match answered {
            true => m.metrics.sent.inc(),
            false => m.metrics.failed.inc(),
        };
    });
}

#[cfg(test)]
mod tests {
    use super::shadow;

    #[test]
    fn the_copy_host_gets_a_shadow_suffix() {
        let s = |a: &str| shadow(a).map(|a| a.to_string());
        assert_eq!(
            s("reviews.shop:8080").as_deref(),
            Some("reviews.shop-shadow:8080")
        );
        assert_eq!(s("reviews").as_deref(), Some("reviews-shadow"));
        assert_eq!(s("127.0.0.1:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(s("[::1]:80").as_deref(), Some("[::1]:80"));
        assert_eq!(s("10.0.0.7").as_deref(), Some("10.0.0.7"));
    }
}
