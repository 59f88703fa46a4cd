//! What one request leaves behind: its metrics, its access-log line and
//! its trace span, gathered as it is served and reported once.
//!
//! The request path tells an [`Observer`] what happens — the route and
//! backend chosen, each try's endpoint, retries, ejections, limits hit, the
//! cause of an answer the proxy made itself — and never builds a record of
//! its own. Status and latency are counted in the metrics of the last
//! route/backend it was told of. The access log and the span need more of
//! the request; only when one of them is on does the entry point keep a
//! [`Report`], and then the observer fills its record. With both off, each
//! call is a branch on `None`: the common path pays for nothing it does not
//! report.

use crate::backend::Endpoint;
use crate::body::{RequestBody, ResponseBody};
use crate::http::errors::ProxyError;
use crate::http::headers::authority_in;
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::{self, EventKind, Line, Record};
use crate::telemetry::metrics::RouteMetrics;
use crate::telemetry::trace::Span;
use http::{header, HeaderValue, Method, Request, Response, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Gathers what happens to one request (see the module header).
pub(crate) struct Observer<'a> {
    started: Instant,
    /// Where the status and latency are counted.
    metrics: &'a RouteMetrics,
    record: Option<&'a mut Record>,
    /// The request is a gRPC call: the proxy's own answers are gRPC statuses.
    grpc: bool,
}

impl<'a> Observer<'a> {
    /// A request that arrived at `started`, counted in `metrics` until the
    /// request finds somewhere more precise; `record` when a report is on.
    #[inline]
    pub(crate) fn new(
        started: Instant,
        metrics: &'a RouteMetrics,
        record: Option<&'a mut Record>,
    ) -> Observer<'a> {
        Observer {
            started,
            metrics,
            record,
            grpc: false,
        }
    }

    /// Notes whether `req` is a gRPC call (a POST whose `content-type`
    /// says so).
    #[inline]
    pub(crate) fn grpc<B>(&mut self, req: &Request<B>) {
        self.grpc = crate::http::errors::is_grpc(req);
    }

    #[inline]
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The request matched `rule`.
    #[inline]
    pub(crate) fn route(&mut self, rule: &'a Rule) {
        self.metrics = &rule.local_metrics;
        if let Some(r) = self.record.as_deref_mut() {
            r.route = Some(rule.route.clone());
        }
    }

    /// The rule sent it to `wb`.
    #[inline]
    pub(crate) fn backend(&mut self, wb: &'a WeightedBackend) {
        self.metrics = &wb.metrics;
        if let Some(r) = self.record.as_deref_mut() {
            r.backend = Some(wb.backend.key.clone());
        }
    }

    /// It goes straight to `dst` (intercepted, with no config for it).
    #[inline]
    pub(crate) fn passthrough(&mut self, metrics: &'a RouteMetrics, dst: SocketAddr) {
        self.metrics = metrics;
        if let Some(r) = self.record.as_deref_mut() {
            r.route = Some(Arc::from("passthrough"));
            r.upstream.endpoint = Some(dst);
        }
    }

    /// Try number `attempt` (0 first) goes to `ep`.
    #[inline]
    pub(crate) fn trying(&mut self, attempt: u32, ep: &Endpoint) {
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.endpoint = Some(ep.addr);
            r.upstream.identity.clone_from(&ep.identity);
            r.upstream.retries = attempt;
        }
    }

    /// Try `attempt` (1 for the first retry) follows a failure at `ep`.
    #[inline]
    pub(crate) fn retrying(&mut self, attempt: u32, endpoint: SocketAddr, reason: &'static str) {
        self.event(EventKind::Retry {
            attempt,
            endpoint,
            reason,
        });
    }

    /// Hedge number `hedge` (1 first) goes to `endpoint`.
    #[inline]
    pub(crate) fn hedging(&mut self, hedge: u32, endpoint: SocketAddr) {
        self.event(EventKind::Hedge { hedge, endpoint });
    }

    /// Outlier detection took `endpoint` out after this request's failure.
    #[inline]
    pub(crate) fn ejected(&mut self, endpoint: SocketAddr) {
        self.event(EventKind::Ejected { endpoint });
    }

    /// A concurrency limit (`requests`, `connections`, `pending`,
    /// `retries`) refused.
    #[inline]
    pub(crate) fn overflow(&mut self, limit: &'static str) {
        self.event(EventKind::Overflow { limit });
    }

    /// Whether the retries gave up on a failure they wanted to retry.
    #[inline]
    pub(crate) fn retries_exhausted(&mut self, exhausted: bool) {
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.retries_exhausted = exhausted;
        }
    }

    #[inline]
    fn event(&mut self, kind: EventKind) {
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.event(kind);
        }
    }

    /// The proxy answers with `e` itself (as a gRPC status to a gRPC call).
    #[inline]
    pub(crate) fn fail(&mut self, e: ProxyError) -> Response<ResponseBody> {
        if let Some(r) = self.record.as_deref_mut() {
            r.cause = Some(e.kind().1);
        }
        e.respond(self.grpc)
    }

    /// Counts the answer, and hands it on.
    #[inline]
    pub(crate) fn answer(self, resp: Response<ResponseBody>) -> Response<ResponseBody> {
        self.metrics
            .record(resp.status().as_u16(), self.started.elapsed());
        resp
    }
}

/// What the access log and the trace span need of a request, kept before
/// the request moves on, with the record the observer fills.
pub(crate) struct Report {
    method: Method,
    /// The request's URI and, when it has no authority, its Host: both
    /// shared with the request's own bytes, so keeping them costs no copy.
    uri: http::Uri,
    host: Option<HeaderValue>,
    http2: bool,
    log: bool,
    span: Option<Span>,
    pub(crate) record: Record,
}

impl Report {
    /// A report of `req` when the access log (`log`) or a recorded span is
    /// on; `None` when neither is (the span, if any, is dropped: a
    /// sampled-out span records nothing).
    pub(crate) fn of(req: &Request<RequestBody>, log: bool, span: Option<Span>) -> Option<Report> {
        if !log && !span.as_ref().is_some_and(Span::recording) {
            return None;
        }
        let uri = req.uri().clone();
        let host = match uri.authority() {
            Some(_) => None,
            None => req.headers().get(header::HOST).cloned(),
        };
        Some(Report {
            method: req.method().clone(),
            uri,
            host,
            http2: req.version() == Version::HTTP_2,
            log,
            span,
            record: Record::default(),
        })
    }

    /// Writes the access-log line and records the span, as they are on;
    /// the span ends with the response body. `identity`: the peer's SPIFFE
    /// ID (the caller's inbound; the one the upstream must prove outbound).
    pub(crate) fn finish(
        self,
        direction: &'static str,
        resp: Response<ResponseBody>,
        started: Instant,
        peer: SocketAddr,
        identity: Option<Arc<str>>,
    ) -> Response<ResponseBody> {
        let line = Line {
            direction,
            method: self.method.as_str(),
            authority: authority_in(&self.uri, self.host.as_ref()).unwrap_or(""),
            path: self.uri.path(),
            status: resp.status().as_u16(),
            duration: started.elapsed(),
            peer,
            record: &self.record,
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
