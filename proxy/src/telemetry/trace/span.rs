//! A request's span: started from the caller's context, recorded with the
//! HTTP semantic-convention attributes when the response head is ready, and
//! ended (queued for export) with the response body.

use super::super::access_log::{EventKind, Line};
use super::super::propagation::{self, Style};
use super::Pipeline;
use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
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
pub struct Span {
    pub(super) cx: SpanContext,
    pub(super) parent: SpanId,
    pub(super) parent_remote: bool,
    pub(super) kind: SpanKind,
    pub(super) name: &'static str,
    pub(super) start: SystemTime,
    pub(super) style: Option<Style>,
    /// Where the finished span goes; `None` when sampled out.
    pub(super) sink: Option<Arc<Pipeline>>,
}

impl Span {
    /// Hands this span's context to the next hop in `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        propagation::inject(headers, &self.cx, self.style);
    }

    /// Sampled in: the span will be exported.
    pub fn recording(&self) -> bool {
        self.sink.is_some()
    }

    pub fn context(&self) -> &SpanContext {
        &self.cx
    }

    /// Records the exchange (HTTP semantic-convention attributes, retry,
    /// ejection and overflow events); the span ends when the returned
    /// [`Pending`] is dropped (with the response body). `None` when sampled out.
    pub fn finish(
        mut self,
        line: &Line<'_>,
        identity: Option<Arc<str>>,
        http2: bool,
    ) -> Option<Box<Pending>> {
        let sink = self.sink.take()?;
        let client = line.direction == "outbound";
        let rec = line.record;
        let mut a = Vec::with_capacity(12);
        a.push(KeyValue::new(
            "http.request.method",
            method_attr(line.method),
        ));
        a.push(KeyValue::new(
            "http.response.status_code",
            line.status as i64,
        ));
        // Only when it is not HTTP/1.1, the default.
        if http2 {
            a.push(KeyValue::new("network.protocol.version", "2"));
        }
        let (host, port) = split_authority(line.authority);
        if !host.is_empty() {
            a.push(KeyValue::new("server.address", host.to_owned()));
            a.push(KeyValue::new("server.port", port as i64));
        }
        if client {
            // The query is left out: it may carry secrets.
            a.push(KeyValue::new(
                "url.full",
                format!("http://{}{}", line.authority, line.path),
            ));
            if let Some(ep) = rec.upstream.endpoint {
                a.push(KeyValue::new("network.peer.address", ep.ip().to_string()));
                a.push(KeyValue::new("network.peer.port", ep.port() as i64));
            }
            if rec.upstream.retries > 0 {
                a.push(KeyValue::new(
                    "http.request.resend_count",
                    rec.upstream.retries as i64,
                ));
            }
        } else {
            a.push(KeyValue::new("url.path", line.path.to_owned()));
            a.push(KeyValue::new("url.scheme", "http"));
            a.push(KeyValue::new("client.address", line.peer.ip().to_string()));
            a.push(KeyValue::new(
                "network.peer.address",
                line.peer.ip().to_string(),
            ));
            a.push(KeyValue::new("network.peer.port", line.peer.port() as i64));
        }
        if let Some(id) = identity {
            a.push(KeyValue::new("weft.peer.identity", id));
        }
        if let Some(r) = &rec.route {
            a.push(KeyValue::new("weft.route", r.clone()));
        }
        if let Some(b) = &rec.backend {
            a.push(KeyValue::new("weft.backend", b.clone()));
        }
        let flags = super::super::access_log::flags(rec.cause, &rec.upstream);
        if flags != "-" {
            a.push(KeyValue::new("weft.response_flags", flags));
        }
        // Client spans fail on 4xx and 5xx; server spans on 5xx only.
        let failed = line.status >= 500 || (client && line.status >= 400);
        if failed {
            let kind = match rec.cause {
                Some(c) => c.to_owned(),
                None => line.status.to_string(),
            };
            a.push(KeyValue::new("error.type", kind));
        }
        let mut events = SpanEvents::default();
        for e in &rec.upstream.events {
            let (name, attrs) = match &e.kind {
                EventKind::Retry {
                    attempt,
                    endpoint,
                    reason,
                } => (
                    "retry",
                    vec![
                        KeyValue::new("http.request.resend_count", *attempt as i64),
                        KeyValue::new("weft.retry.reason", *reason),
                        KeyValue::new("network.peer.address", endpoint.ip().to_string()),
                        KeyValue::new("network.peer.port", endpoint.port() as i64),
                    ],
                ),
                EventKind::Ejected { endpoint } => (
                    "endpoint ejected",
                    vec![
                        KeyValue::new("network.peer.address", endpoint.ip().to_string()),
                        KeyValue::new("network.peer.port", endpoint.port() as i64),
                    ],
                ),
                EventKind::Overflow { limit } => (
                    "circuit overflow",
                    vec![KeyValue::new("weft.limit", *limit)],
                ),
            };
            events
                .events
                .push(opentelemetry::trace::Event::new(name, e.at, attrs, 0));
        }
        let status = if failed {
            Status::error("")
        } else {
            Status::Unset
        };
        let data = self.data(&sink, a, events, status);
        Some(Box::new(Pending::new(data, sink)))
    }

    fn data(
        &self,
        sink: &Pipeline,
        attributes: Vec<KeyValue>,
        events: SpanEvents,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: self.cx.clone(),
            parent_span_id: self.parent,
            parent_span_is_remote: self.parent_remote,
            span_kind: self.kind.clone(),
            name: self.name.into(),
            start_time: self.start,
            end_time: self.start,
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: sink.scope.clone(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        // Not finished: the request was abandoned before its response.
        if let Some(sink) = self.sink.take() {
            let attrs = vec![
                KeyValue::new("http.request.method", self.name),
                KeyValue::new("error.type", "cancelled"),
            ];
            let data = self.data(&sink, attrs, SpanEvents::default(), Status::Unset);
            drop(Pending::new(data, sink));
        }
    }
}

/// A span whose response head has gone out; it ends (and is queued for
/// export) when dropped, which the response body does when it has been sent
/// or abandoned.
pub struct Pending {
    /// Taken when the span is queued.
    data: Option<SpanData>,
    sink: Arc<Pipeline>,
}

impl Pending {
    fn new(data: SpanData, sink: Arc<Pipeline>) -> Pending {
        Pending {
            data: Some(data),
            sink,
        }
    }

    /// The response body failed part way (the upstream reset it).
    pub fn body_failed(&mut self) {
        if let Some(d) = &mut self.data {
            d.attributes.retain(|kv| kv.key.as_str() != "error.type");
            d.attributes
                .push(KeyValue::new("error.type", "response-body-failed"));
            d.status = Status::error("");
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut data) = self.data.take() {
            data.end_time = SystemTime::now();
            let sink = &self.sink;
            match sink.tx.try_send(data) {
                Ok(()) if sink.tx.capacity() <= sink.ready_at => sink.ready.notify_one(),
                Ok(()) => {}
                Err(_) => {
                    sink.dropped.inc();
                }
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
