//! A request's span: started from the caller's context, encoded (OTLP
//! protobuf, see [`super::otlp`]) with the HTTP semantic-convention
//! attributes when the response head is ready, and ended (queued for
//! export) with the response body.

use super::super::access_log::{EventKind, Line};
use super::super::propagation::{self, Style};
use super::otlp::{self, FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, SPAN_ATTRIBUTES as ATTR};
use super::sink::Sink;
use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

/// Method names for span names without an allocation; others are `HTTP`,
/// as the semantic conventions ask.
pub(super) fn span_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// A request's span. [`Span::finish`] records the exchange when the
/// response head is ready and hands back a [`Pending`] span that ends when
/// the response body does; a request abandoned before its response (the
/// client went away) ends its span when dropped, as `error.type=cancelled`.
pub(crate) struct Span {
    pub(super) cx: SpanContext,
    pub(super) parent: SpanId,
    pub(super) parent_remote: bool,
    pub(super) kind: SpanKind,
    pub(super) name: &'static str,
    pub(super) start: SystemTime,
    pub(super) style: Option<Style>,
    /// Where the finished span goes; `None` when sampled out.
    pub(super) sink: Option<Arc<Sink>>,
}

impl Span {
    /// Hands this span's context to the next hop in `headers`.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        propagation::inject(headers, &self.cx, self.style);
    }

    /// Sampled in: the span will be exported.
    pub(crate) fn recording(&self) -> bool {
        self.sink.is_some()
    }

    /// Records the exchange (HTTP semantic-convention attributes, retry,
    /// ejection and overflow events); the span ends when the returned
    /// [`Pending`] is dropped (with the response body). `None` when sampled out.
    pub(crate) fn finish(
        mut self,
        line: &Line<'_>,
        identity: Option<Arc<str>>,
        http2: bool,
    ) -> Option<Box<Pending>> {
        let sink = self.sink.take()?;
        let client = line.direction == "outbound";
        let rec = line.record;
        let mut b = self.head(&sink);
        otlp::str_attr(
            &mut b,
            ATTR,
            "http.request.method",
            &[method_attr(line.method)],
        );
        otlp::int_attr(
            &mut b,
            ATTR,
            "http.response.status_code",
            line.status as i64,
        );
        // Only when it is not HTTP/1.1, the default.
        if http2 {
            otlp::str_attr(&mut b, ATTR, "network.protocol.version", &["2"]);
        }
        let (host, port) = split_authority(line.authority);
        if !host.is_empty() {
            otlp::str_attr(&mut b, ATTR, "server.address", &[host]);
            otlp::int_attr(&mut b, ATTR, "server.port", port as i64);
        }
        if client {
            // The query is left out: it may carry secrets.
            otlp::str_attr(
                &mut b,
                ATTR,
                "url.full",
                &["http://", line.authority, line.path],
            );
            if let Some(ep) = rec.upstream.endpoint {
                otlp::ip_attr(&mut b, ATTR, "network.peer.address", ep.ip());
                otlp::int_attr(&mut b, ATTR, "network.peer.port", ep.port() as i64);
            }
            if rec.upstream.retries > 0 {
                let n = rec.upstream.retries as i64;
                otlp::int_attr(&mut b, ATTR, "http.request.resend_count", n);
            }
        } else {
            otlp::str_attr(&mut b, ATTR, "url.path", &[line.path]);
            otlp::str_attr(&mut b, ATTR, "url.scheme", &["http"]);
            otlp::ip_attr(&mut b, ATTR, "client.address", line.peer.ip());
            otlp::ip_attr(&mut b, ATTR, "network.peer.address", line.peer.ip());
            otlp::int_attr(&mut b, ATTR, "network.peer.port", line.peer.port() as i64);
        }
        if let Some(id) = identity {
            otlp::str_attr(&mut b, ATTR, "weft.peer.identity", &[&*id]);
        }
        if let Some(r) = &rec.route {
            otlp::str_attr(&mut b, ATTR, "weft.route", &[&**r]);
        }
        if let Some(be) = &rec.backend {
            otlp::str_attr(&mut b, ATTR, "weft.backend", &[&**be]);
        }
        let flags = super::super::access_log::flags(rec.cause, &rec.upstream);
        if flags != "-" {
            otlp::str_attr(&mut b, ATTR, "weft.response_flags", &[&flags]);
        }
        let mut ev = Vec::new();
        for e in &rec.upstream.events {
            ev.clear();
            let name = match &e.kind {
                EventKind::Retry {
                    attempt,
                    endpoint,
                    reason,
                } => {
                    otlp::int_attr(&mut ev, 3, "http.request.resend_count", *attempt as i64);
                    otlp::str_attr(&mut ev, 3, "weft.retry.reason", &[*reason]);
                    otlp::ip_attr(&mut ev, 3, "network.peer.address", endpoint.ip());
                    otlp::int_attr(&mut ev, 3, "network.peer.port", endpoint.port() as i64);
                    "retry"
                }
                EventKind::Ejected { endpoint } => {
                    otlp::ip_attr(&mut ev, 3, "network.peer.address", endpoint.ip());
                    otlp::int_attr(&mut ev, 3, "network.peer.port", endpoint.port() as i64);
                    "endpoint ejected"
                }
                EventKind::Overflow { limit } => {
                    otlp::str_attr(&mut ev, 3, "weft.limit", &[*limit]);
                    "circuit overflow"
                }
                EventKind::RateLimited { limit } => {
                    otlp::str_attr(&mut ev, 3, "weft.limit", &[*limit]);
                    "rate_limited"
                }
                EventKind::Fault { kind } => match *kind {
                    "delay" => "fault.delay",
                    _ => "fault.abort",
                },
                EventKind::MirrorSkipped { reason } => {
                    otlp::str_attr(&mut ev, 3, "weft.mirror.skipped", &[*reason]);
                    "mirror.skipped"
                }
                EventKind::Hedge { hedge, endpoint } => {
                    otlp::int_attr(&mut ev, 3, "weft.hedge", *hedge as i64);
                    otlp::ip_attr(&mut ev, 3, "network.peer.address", endpoint.ip());
                    otlp::int_attr(&mut ev, 3, "network.peer.port", endpoint.port() as i64);
                    "hedge"
                }
            };
            otlp::event(&mut b, e.at, name, &ev);
        }
        // Client spans fail on 4xx and 5xx; server spans on 5xx only.
        let failed = line.status >= 500 || (client && line.status >= 400);
        let error = failed.then(|| match rec.cause {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(line.status.to_string()),
        });
        Some(Box::new(Pending {
            buf: b,
            error,
            error_status: failed,
            sink: Some(sink),
        }))
    }

    /// The span's identity, name, kind and start, encoded into a buffer
    /// the export thread has handed back, or a new one.
    fn head(&self, sink: &Sink) -> Vec<u8> {
        let mut b = sink
            .buffers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(512));
        otlp::bytes(&mut b, otlp::SPAN_TRACE_ID, &self.cx.trace_id().to_bytes());
        otlp::bytes(&mut b, otlp::SPAN_SPAN_ID, &self.cx.span_id().to_bytes());
        let state = self.cx.trace_state().header();
        if !state.is_empty() {
            otlp::bytes(&mut b, otlp::SPAN_TRACE_STATE, state.as_bytes());
        }
        if self.parent != SpanId::INVALID {
            otlp::bytes(&mut b, otlp::SPAN_PARENT_SPAN_ID, &self.parent.to_bytes());
        }
        let mut flags = self.cx.trace_flags().to_u8() as u32 | FLAG_HAS_IS_REMOTE;
        if self.parent_remote {
            flags |= FLAG_IS_REMOTE;
        }
        otlp::fixed32(&mut b, otlp::SPAN_FLAGS, flags);
        otlp::bytes(&mut b, otlp::SPAN_NAME, self.name.as_bytes());
        let kind = match self.kind {
            SpanKind::Server => otlp::KIND_SERVER,
            _ => otlp::KIND_CLIENT,
        };
        otlp::uint(&mut b, otlp::SPAN_KIND, kind);
        otlp::fixed64(&mut b, otlp::SPAN_START, otlp::nanos(self.start));
        b
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        // Not finished: the request was abandoned before its response.
        if let Some(sink) = self.sink.take() {
            let mut b = self.head(&sink);
            otlp::str_attr(&mut b, ATTR, "http.request.method", &[self.name]);
            drop(Pending {
                buf: b,
                error: Some(Cow::Borrowed("cancelled")),
                error_status: false,
                sink: Some(sink),
            });
        }
    }
}

/// A span whose response head has gone out; it ends (and is queued for
/// export) when dropped, which the response body does when it has been sent
/// or abandoned.
pub(crate) struct Pending {
    /// The encoded span so far: all but its end time, `error.type` and status.
    buf: Vec<u8>,
    /// `error.type`, written at the end.
    error: Option<Cow<'static, str>>,
    /// The status is ERROR.
    error_status: bool,
    /// Taken when the span is queued.
    sink: Option<Arc<Sink>>,
}

impl Pending {
    /// The response body failed part way (the upstream reset it).
    pub(crate) fn body_failed(&mut self) {
        self.error = Some(Cow::Borrowed("response-body-failed"));
        self.error_status = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(sink) = self.sink.take() else {
            return;
        };
        let mut b = std::mem::take(&mut self.buf);
        otlp::fixed64(&mut b, otlp::SPAN_END, otlp::nanos(SystemTime::now()));
        if let Some(e) = &self.error {
            otlp::str_attr(&mut b, ATTR, "error.type", &[e.as_ref()]);
        }
        if self.error_status {
            otlp::error_status(&mut b);
        }
        match sink.tx.try_send(b) {
            Ok(()) if sink.tx.capacity() <= sink.ready_at => sink.ready.notify_one(),
            Ok(()) => {}
            Err(_) => {
                sink.dropped.inc();
            }
        }
    }
}

/// `http.request.method`: the known methods as they are, others `_OTHER`.
fn method_attr(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}

/// Host and port of an authority (port 80 when it has none).
fn split_authority(a: &str) -> (&str, u16) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(80);
            return (h, port);
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(80)),
        _ => (a, 80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("reviews:9080"), ("reviews", 9080));
        assert_eq!(split_authority("reviews"), ("reviews", 80));
        assert_eq!(split_authority("[::1]:8080"), ("::1", 8080));
    }
}
