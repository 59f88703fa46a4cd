//! A failed request's trail — each try with its outcome and the backoff
//! before it — begun (one allocation) at the request's first failure and
//! turned into a `/failures` entry when the request is answered; and the
//! debug headers, which read the same plain fields of the observer.

use crate::backend::Backend;
use crate::http::errors::ProxyError;
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::{flags, UpstreamInfo};
use crate::telemetry::failures::{trace_id_of, EndpointsState, Entry, Outcome, Stop, Try};
use crate::transport::ConnectError;
use http::{HeaderMap, HeaderValue, Method, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(crate) const ROUTE_HEADER: &str = "x-weft-route";
pub(crate) const BACKEND_HEADER: &str = "x-weft-backend";
pub(crate) const ENDPOINT_HEADER: &str = "x-weft-endpoint";
pub(crate) const TRIES_HEADER: &str = "x-weft-tries";

/// What an entry needs of the request itself, kept before it moves on: the
/// URI and Host share the request's own bytes, so keeping them copies
/// nothing.
pub(crate) struct Head {
    direction: &'static str,
    method: Method,
    uri: http::Uri,
    host: Option<HeaderValue>,
    trace: Option<[u8; 16]>,
}

impl Head {
    /// The trace id is the `traceparent` the request carries on (the
    /// proxy's span's, once injected; else the caller's).
    /// `host` is the request's Host field, looked up once by the caller.
    #[inline]
    pub(crate) fn of<B>(
        direction: &'static str,
        req: &Request<B>,
        host: Option<&HeaderValue>,
    ) -> Head {
        let uri = req.uri().clone();
        let host = match uri.authority() {
            Some(_) => None,
            None => host.cloned(),
        };
        Head {
            direction,
            method: req.method().clone(),
            trace: req
                .headers()
                .get(&crate::telemetry::propagation::TRACEPARENT)
                .and_then(|v| trace_id_of(v.as_bytes())),
            uri,
            host,
        }
    }
}

/// The tries of a request once one failed, and what else went wrong.
#[derive(Default)]
pub(crate) struct Trail {
    tries: Vec<Try>,
    /// The backoff waited before the next try.
    pending: Duration,
    pub(crate) ejected: Vec<SocketAddr>,
    pub(crate) overflow: Option<&'static str>,
    pub(crate) stop: Option<Stop>,
    /// The proxy's error, when it says more than the last try's outcome.
    error: Option<String>,
    endpoints: Option<EndpointsState>,
}

/// What the observer knows of where the request went.
pub(crate) struct Served<'a> {
    pub(crate) rule: Option<&'a Rule>,
    pub(crate) backend: Option<&'a WeightedBackend>,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) status: u16,
    pub(crate) cause: Option<&'static str>,
}

impl Trail {
    pub(crate) fn tried(&mut self, endpoint: SocketAddr, outcome: Outcome, ejected: bool) {
        self.tries.push(Try {
            endpoint,
            outcome,
            waited: std::mem::take(&mut self.pending),
            ejected,
        });
    }

    /// Retry `attempt` follows `last` at `endpoint` after `wait`. A try
    /// whose answer looked fine to `/failures` (a status below 500 the
    /// policy retries) is added now.
    pub(crate) fn retrying(
        &mut self,
        attempt: u32,
        endpoint: SocketAddr,
        last: Outcome,
        wait: Duration,
    ) {
        if self.tries.len() < attempt as usize {
            self.tried(endpoint, last, false);
        }
        self.pending = wait;
    }

    /// The proxy answers with `e`: the last try's own error, a single try
    /// made outside the retry engine (to the local app, passthrough), or a
    /// reason of its own (kept in its words).
    pub(crate) fn failed(
        &mut self,
        e: &ProxyError,
        endpoint: Option<SocketAddr>,
        backend: Option<&WeightedBackend>,
    ) {
        let outcome = outcome_of(e);
        match (self.tries.last(), endpoint) {
            (Some(t), _) if t.outcome == outcome => {}
            (None, Some(ep)) if !matches!(outcome, Outcome::Other(_)) => {
                self.tried(ep, outcome, false)
            }
            _ => self.error = Some(bounded(&e.to_string(), MAX_TEXT)),
        }
        if matches!(e, ProxyError::NoEndpoints(_)) {
            self.endpoints = backend.map(|wb| endpoints_state(&wb.backend));
        }
    }

    pub(crate) fn entry(self, head: Head, s: Served<'_>) -> Entry {
        let exhausted = matches!(
            self.stop,
            Some(Stop::Attempts | Stop::Budget | Stop::RetryLimit)
        );
        let up = UpstreamInfo {
            retries_exhausted: exhausted,
            ..UpstreamInfo::default()
        };
        let outbound = head.direction == "outbound";
        let route = match s.rule {
            Some(r) => Some(r.route.clone()),
            None if outbound && s.endpoint.is_some() => Some(Arc::from("passthrough")),
            None => None,
        };
        let backend = match s.backend {
            Some(wb) => Some(wb.backend.key.clone()),
            None if !outbound => Some(Arc::from("app")),
            None => None,
        };
        Entry {
            time: SystemTime::now(),
            direction: head.direction,
            authority: bounded(
                crate::http::headers::authority_in(&head.uri, head.host.as_ref()).unwrap_or(""),
                MAX_TEXT,
            ),
            method: bounded(head.method.as_str(), 32),
            path: bounded(head.uri.path(), MAX_TEXT),
            route,
            rule: s.rule.map(|r| r.index),
            backend,
            endpoint: s.endpoint,
            status: s.status,
            error_kind: s.cause,
            error: self.error,
            flags: flags(s.cause, &up).into_owned(),
            tries: self.tries,
            stop: self.stop,
            ejected: self.ejected,
            endpoints: self.endpoints,
            overflow: self.overflow,
            trace_id: head.trace,
        }
    }
}

/// The longest authority, path or error text an entry keeps, so that the
/// ring's memory stays bounded whatever the requests look like.
const MAX_TEXT: usize = 512;

/// `s`, cut to at most `max` bytes (at a character boundary) with `…`.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The outcome of an error a try ended with.
pub(crate) fn outcome_of(e: &ProxyError) -> Outcome {
    match e {
        ProxyError::Connect(ConnectError::Io(_, io))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            Outcome::ConnectRefused
        }
        ProxyError::Connect(ConnectError::Timeout(_)) => Outcome::ConnectTimeout,
        ProxyError::Connect(ConnectError::Overloaded(limit)) => Outcome::Overloaded(limit),
        ProxyError::Connect(ConnectError::Tls(..) | ConnectError::TlsConfig(..)) => Outcome::Tls,
        ProxyError::Connect(_) => Outcome::ConnectFailed,
        ProxyError::Timeout(d) => Outcome::Timeout(*d),
        ProxyError::Upstream(_) | ProxyError::UpstreamIo(_) | ProxyError::StaleConnection => {
            Outcome::Reset
        }
        ProxyError::UpstreamProtocol(_) => Outcome::Protocol,
        other => Outcome::Other(other.kind().1),
    }
}

/// Why no endpoint of `b` could be picked.
fn endpoints_state(b: &Backend) -> EndpointsState {
    let set = b.endpoints.load();
    let eps = &set.endpoints;
    EndpointsState {
        total: eps.len(),
        ejected: eps.iter().filter(|e| e.outlier.is_ejected()).count(),
        unhealthy: eps.iter().filter(|e| e.health.is_unhealthy()).count(),
    }
}

/// Sets the debug headers (`x-weft-route`, `-backend`, `-endpoint`,
/// `-tries`), replacing any the upstream sent. A Backend's implicit route
/// has no name, so no `x-weft-route`.
pub(crate) fn debug_headers(
    h: &mut HeaderMap,
    rule: Option<&Rule>,
    backend: Option<&WeightedBackend>,
    endpoint: Option<SocketAddr>,
    tries: u32,
) {
    for name in [ROUTE_HEADER, BACKEND_HEADER, ENDPOINT_HEADER, TRIES_HEADER] {
        h.remove(name);
    }
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::try_from(v) {
            h.insert(name, v);
        }
    };
    if let Some(r) = rule.filter(|r| !r.route.is_empty()) {
        set(ROUTE_HEADER, format!("{}#{}", r.route, r.index));
    }
    if let Some(wb) = backend {
        set(BACKEND_HEADER, wb.backend.key.to_string());
    }
    if let Some(ep) = endpoint {
        set(ENDPOINT_HEADER, ep.to_string());
    }
    h.insert(TRIES_HEADER, HeaderValue::from(tries));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("short", 8), "short");
        assert_eq!(bounded("abcdefghij", 4), "abcd…");
        assert_eq!(bounded("aé", 2), "a…", "é is two bytes: not split");
        let long = "/x".repeat(5000);
        assert_eq!(bounded(&long, MAX_TEXT).len(), MAX_TEXT + "…".len());
    }
}
