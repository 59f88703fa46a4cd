//! What one request leaves behind: its metrics, its access-log line, its
//! trace span and, when it failed, its `/failures` entry — gathered as it
//! is served and reported once.
//!
//! The request path tells an [`Observer`] what happens — the route and
//! backend chosen, each try's endpoint, retries, ejections, limits hit, the
//! cause of an answer the proxy made itself — and never builds a record of
//! its own. Status and latency are counted in the metrics of the last
//! route/backend it was told of. The access log and the span need more of
//! the request; only when one of them is on does the entry point keep a
//! [`Report`], and then the observer fills its record. With both off, each
//! call is a branch on `None`: the common path pays for nothing it does not
//! report. The rule, backend, last endpoint and try count are plain fields
//! (for `/failures` and the debug headers); a per-try trail is allocated
//! only at a request's first failure (see [`trail`]).

mod trail;

use crate::backend::Endpoint;
use crate::body::{RequestBody, ResponseBody};
use crate::http::errors::ProxyError;
use crate::http::headers::authority_in;
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::{self, EventKind, Line, Record};
use crate::telemetry::failures::{Failures, Outcome, Stop};
use crate::telemetry::metrics::RouteMetrics;
use crate::telemetry::trace::Span;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, Version};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trail::{Head, Trail};

/// Gathers what happens to one request (see the module header).
pub(crate) struct Observer<'a> {
    started: Instant,
    /// Where the status and latency are counted.
    metrics: &'a RouteMetrics,
    record: Option<&'a mut Record>,
    /// The request is a gRPC call: the proxy's own answers are gRPC statuses.
    grpc: bool,
    rule: Option<&'a Rule>,
    backend: Option<&'a WeightedBackend>,
    /// The endpoint of the last try, and how many tries were sent.
    endpoint: Option<SocketAddr>,
    tries: u32,
    /// The `x-weft-error` cause of an answer the proxy made itself.
    cause: Option<&'static str>,
    /// Where a failure is kept, when the ring is on and the request watched.
    failures: Option<&'a Failures>,
    /// Boxed: the observer lives in every request's future, which is
    /// moved as it is built; a smaller one is cheaper to move.
    head: Option<Box<Head>>,
    /// The last try's outcome (kept in the trail once one failed).
    last: Outcome,
    trail: Option<Box<Trail>>,
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
            rule: None,
            backend: None,
            endpoint: None,
            tries: 0,
            cause: None,
            failures: None,
            head: None,
            last: Outcome::Status(0),
            trail: None,
        }
    }

    /// Keeps what a `/failures` entry needs of `req` (method, target, trace
    /// id), when the ring is on: `direction` is `outbound` or `inbound`.
    #[inline]
    pub(crate) fn watch<B>(
        &mut self,
        failures: &'a Failures,
        direction: &'static str,
        req: &Request<B>,
    ) {
        if failures.on() {
            let host = req.headers().get(header::HOST);
            self.watch_host(failures, direction, req, host);
        }
    }

    /// [`Observer::watch`] with the request's Host field already looked up.
    #[inline]
    pub(crate) fn watch_host<B>(
        &mut self,
        failures: &'a Failures,
        direction: &'static str,
        req: &Request<B>,
        host: Option<&HeaderValue>,
    ) {
        if failures.on() {
            self.failures = Some(failures);
            self.head = Some(Box::new(Head::of(direction, req, host)));
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
        self.rule = Some(rule);
        if let Some(r) = self.record.as_deref_mut() {
            r.route = Some(rule.route.clone());
        }
    }

    /// The rule sent it to `wb`.
    #[inline]
    pub(crate) fn backend(&mut self, wb: &'a WeightedBackend) {
        self.metrics = &wb.metrics;
        self.backend = Some(wb);
        if let Some(r) = self.record.as_deref_mut() {
            r.backend = Some(wb.backend.key.clone());
        }
    }

    /// It goes straight to `dst` (intercepted, with no config for it).
    #[inline]
    pub(crate) fn passthrough(&mut self, metrics: &'a RouteMetrics, dst: SocketAddr) {
        self.metrics = metrics;
        self.sent_to(dst);
        if let Some(r) = self.record.as_deref_mut() {
            r.route = Some(Arc::from("passthrough"));
            r.upstream.endpoint = Some(dst);
        }
    }

    /// The request goes, once, to `addr` (the local app; a passthrough
    /// destination).
    #[inline]
    pub(crate) fn sent_to(&mut self, addr: SocketAddr) {
        self.endpoint = Some(addr);
        self.tries = 1;
    }

    /// Try number `attempt` (0 first) goes to `ep`.
    #[inline]
    pub(crate) fn trying(&mut self, attempt: u32, ep: &Endpoint) {
        self.endpoint = Some(ep.addr);
        self.tries = attempt + 1;
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.endpoint = Some(ep.addr);
            r.upstream.identity.clone_from(&ep.identity);
            r.upstream.retries = attempt;
        }
    }

    /// What the try to `ep` came to (for `/failures`: kept once a try of
    /// the request has failed). Told before outlier detection hears of it.
    #[inline]
    pub(crate) fn tried<B>(&mut self, ep: &Endpoint, result: &Result<Response<B>, ProxyError>) {
        if self.failures.is_none() {
            return;
        }
        self.last = match result {
            Ok(r) => Outcome::Status(r.status().as_u16()),
            Err(e) => trail::outcome_of(e),
        };
        if self.last.is_failure() || self.trail.is_some() {
            let last = self.last;
            let ejected = ep.outlier.is_ejected();
            self.trail().tried(ep.addr, last, ejected);
        }
    }

    /// Try `attempt` (1 for the first retry) follows a failure at `ep`,
    /// after a backoff of `wait`.
    #[inline]
    pub(crate) fn retrying(
        &mut self,
        attempt: u32,
        endpoint: SocketAddr,
        reason: &'static str,
        wait: Duration,
    ) {
        if self.failures.is_some() {
            let last = self.last;
            self.trail().retrying(attempt, endpoint, last, wait);
        }
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
        if self.failures.is_some() {
            self.trail().ejected.push(endpoint);
        }
        self.event(EventKind::Ejected { endpoint });
    }

    /// A concurrency limit (`requests`, `connections`, `pending`,
    /// `retries`) refused.
    #[inline]
    pub(crate) fn overflow(&mut self, limit: &'static str) {
        if self.failures.is_some() {
            self.trail().overflow = Some(limit);
        }
        self.event(EventKind::Overflow { limit });
    }

    /// Whether the retries gave up on a failure they wanted to retry.
    #[inline]
    pub(crate) fn retries_exhausted(&mut self, exhausted: bool) {
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.retries_exhausted = exhausted;
        }
    }

    /// Why the retries stopped while the last try had failed.
    #[inline]
    pub(crate) fn stopped(&mut self, stop: Stop) {
        if self.failures.is_some() {
            self.trail().stop = Some(stop);
        }
    }

    /// The trail of this request's tries, begun at its first failure.
    #[cold]
    fn trail(&mut self) -> &mut Trail {
        self.trail.get_or_insert_with(Box::default)
    }

    /// A fault delay was injected (flag `DI`, span event `fault.delay`).
    #[inline]
    pub(crate) fn delay_injected(&mut self) {
        if let Some(r) = self.record.as_deref_mut() {
            r.upstream.delay_injected = true;
            r.upstream.event(EventKind::Fault { kind: "delay" });
        }
    }

    /// A fault abort was injected (span event `fault.abort`; the flag
    /// `FI` comes from its cause).
    #[inline]
    pub(crate) fn abort_injected(&mut self) {
        self.event(EventKind::Fault { kind: "abort" });
    }

    /// The rule's mirror copy was skipped (`body` or `limit`).
    #[inline]
    pub(crate) fn mirror_skipped(&mut self, reason: &'static str) {
        self.event(EventKind::MirrorSkipped { reason });
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
        let cause = e.kind().1;
        self.cause = Some(cause);
        if let Some(r) = self.record.as_deref_mut() {
            r.cause = Some(cause);
        }
        if self.failures.is_some() {
            let (endpoint, backend) = (self.endpoint, self.backend);
            self.trail().failed(&e, endpoint, backend);
        }
        e.respond(self.grpc)
    }

    /// Sets the debug headers (`MeshConfig.spec.debugHeaders`) on an
    /// answer: the route and rule, backend, endpoint and tries, each
    /// replacing any the upstream sent.
    pub(crate) fn debug_headers(&self, h: &mut HeaderMap) {
        trail::debug_headers(h, self.rule, self.backend, self.endpoint, self.tries);
    }

    /// Counts the answer, keeps it in `/failures` when it failed or needed
    /// retries, and hands it on.
    #[inline]
    pub(crate) fn answer(&mut self, resp: Response<ResponseBody>) -> Response<ResponseBody> {
        let status = resp.status().as_u16();
        self.metrics.record(status, self.started.elapsed());
        if let Some(f) = self.failures {
            if status >= 500 || self.cause.is_some() || self.tries > 1 {
                self.keep(f, status);
            }
        }
        resp
    }

    #[cold]
    fn keep(&mut self, failures: &Failures, status: u16) {
        let Some(head) = self.head.take() else {
            return;
        };
        let trail = self.trail.take().map(|t| *t).unwrap_or_default();
        failures.push(trail.entry(
            *head,
            trail::Served {
                rule: self.rule,
                backend: self.backend,
                endpoint: self.endpoint,
                status,
                cause: self.cause,
            },
        ));
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
