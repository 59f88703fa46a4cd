//! Trace context on the wire: W3C `traceparent`/`tracestate` (read and
//! written with the OpenTelemetry SDK's propagator) and B3, single
//! (`b3: {trace}-{span}-{sampled}-{parent}`) and multi (`x-b3-traceid`,
//! `x-b3-spanid`, `x-b3-sampled`, `x-b3-flags`).
//!
//! W3C wins when a request carries both. B3 follows the OpenTelemetry B3
//! propagator's rules: a 64-bit trace id is left-padded to 128 bits, debug
//! (`d`, `x-b3-flags: 1`) means sampled, and a deferred decision (no
//! sampling state) is read as not sampled. A request that came with B3 goes
//! on with B3 in the same style as well as `traceparent`, so a B3-only app
//! downstream still sees its parent.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::fmt::Write as _;

const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How the caller's context arrived, so it goes on the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's span context and how it came, if the request carried one.
pub(crate) fn extract(headers: &HeaderMap) -> Option<(SpanContext, Style)> {
    if headers.contains_key(TRACEPARENT) {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some((sc, Style::W3c));
        }
    }
    if let Some(v) = headers.get(B3).and_then(|v| v.to_str().ok()) {
        return b3_single(v).map(|sc| (sc, Style::B3Single));
    }
    b3_multi(headers).map(|sc| (sc, Style::B3Multi))
}

/// Writes `sc` as the parent for the next hop: `traceparent` (and
/// `tracestate`) always, and B3 too when the caller spoke B3.
pub(crate) fn inject(headers: &mut HeaderMap, sc: &SpanContext, style: Option<Style>) {
    let sampled = sc.is_sampled();
    headers.insert(TRACEPARENT, traceparent(sc));
    // A tracestate the caller sent is in the headers already, and ours is
    // the same (this proxy adds no entry of its own).
    if !headers.contains_key(TRACESTATE) {
        let ts = sc.trace_state().header();
        if !ts.is_empty() {
            set(headers, TRACESTATE, &ts);
        }
    }
    match style {
        Some(Style::B3Single) => {
            let mut v = String::with_capacity(55);
            let _ = write!(
                v,
                "{}-{}-{}",
                sc.trace_id(),
                sc.span_id(),
                if sampled { '1' } else { '0' }
            );
            set(headers, B3, &v);
        }
        Some(Style::B3Multi) => {
            set(headers, B3_TRACE, &sc.trace_id().to_string());
            set(headers, B3_SPAN, &sc.span_id().to_string());
            set(headers, B3_SAMPLED, if sampled { "1" } else { "0" });
            // Our span is the parent's child; the old parent id is stale.
            headers.remove(B3_PARENT);
            headers.remove(B3_FLAGS);
        }
        _ => {}
    }
}

/// `00-{trace id}-{span id}-{flags}`, written without the formatter (this
/// runs on every traced request).
fn traceparent(sc: &SpanContext) -> HeaderValue {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        const D: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in bytes.iter().enumerate() {
            out[2 * i] = D[(b >> 4) as usize];
            out[2 * i + 1] = D[(b & 15) as usize];
        }
    }
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&mut v[3..35], &sc.trace_id().to_bytes());
    hex(&mut v[36..52], &sc.span_id().to_bytes());
    hex(&mut v[53..55], &[sc.trace_flags().to_u8()]);
    HeaderValue::from_bytes(&v).expect("valid header value") // ok: only ASCII hex digits and dashes
}

fn set(headers: &mut HeaderMap, name: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        headers.insert(name, v);
    }
}

/// A B3 trace id: 16 or 32 lowercase hex digits (64-bit ids padded).
fn b3_trace_id(s: &str) -> Option<TraceId> {
    if !(s.len() == 16 || s.len() == 32) || !is_lower_hex(s) {
        return None;
    }
    let id = TraceId::from_hex(s).ok()?;
    (id != TraceId::INVALID).then_some(id)
}

fn b3_span_id(s: &str) -> Option<SpanId> {
    if s.len() != 16 || !is_lower_hex(s) {
        return None;
    }
    let id = SpanId::from_hex(s).ok()?;
    (id != SpanId::INVALID).then_some(id)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn remote(trace: TraceId, span: SpanId, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(trace, span, flags, true, TraceState::default())
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`; a lone `0`/`1`/`d` carries
/// only a decision and no context.
fn b3_single(v: &str) -> Option<SpanContext> {
    let mut parts = v.trim().split('-');
    let trace = b3_trace_id(parts.next()?)?;
    let span = b3_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => false,
        Some("1") | Some("d") => true,
        Some("0") => false,
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        b3_span_id(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(remote(trace, span, sampled))
}

fn b3_multi(h: &HeaderMap) -> Option<SpanContext> {
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let trace = b3_trace_id(get(&B3_TRACE)?)?;
    let span = b3_span_id(get(&B3_SPAN)?)?;
    let sampled =
        get(&B3_FLAGS) == Some("1") || matches!(get(&B3_SAMPLED), Some("1") | Some("true"));
    Some(remote(trace, span, sampled))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn w3c_is_read_and_wins_over_b3() {
        let h = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=x"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let (sc, style) = extract(&h).unwrap();
        assert_eq!(style, Style::W3c);
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "vendor=x");
    }

    #[test]
    fn invalid_traceparent_falls_back_to_b3() {
        let h = headers(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        let (sc, style) = extract(&h).unwrap();
        assert_eq!(style, Style::B3Single);
        assert_eq!(
            sc.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
    }

    #[test]
    fn b3_single_forms() {
        let one = |v: &str| b3_single(v);
        let sc =
            one("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90").unwrap();
        assert!(sc.is_sampled());
        assert_eq!(sc.span_id().to_string(), "e457b5a2e4d86bd1");
        // 64-bit trace id, padded; debug means sampled.
        let sc = one("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert!(sc.is_sampled());
        // Deferred: not sampled.
        assert!(!one("64fe8b2a57d3eff7-e457b5a2e4d86bd1")
            .unwrap()
            .is_sampled());
        assert!(!one("64fe8b2a57d3eff7-e457b5a2e4d86bd1-0")
            .unwrap()
            .is_sampled());
        // Decision only, bad ids, bad sampling state, upper case: no context.
        for bad in [
            "1",
            "0",
            "zz-e457b5a2e4d86bd1-1",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            "64FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
            "0000000000000000-e457b5a2e4d86bd1-1",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-1-nothex-extra",
        ] {
            assert!(one(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn b3_multi_is_read() {
        let h = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
        ]);
        let (sc, style) = extract(&h).unwrap();
        assert_eq!(style, Style::B3Multi);
        assert!(sc.is_sampled());
        let h = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-flags", "1"),
        ]);
        assert!(extract(&h).unwrap().0.is_sampled());
        let h = headers(&[("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")]);
        assert!(extract(&h).is_none());
    }

    #[test]
    fn inject_writes_w3c_and_the_callers_b3_style() {
        let sc = remote(
            TraceId::from_hex("80f198ee56343ba864fe8b2a57d3eff7").unwrap(),
            SpanId::from_hex("e457b5a2e4d86bd1").unwrap(),
            true,
        );
        let mut h = headers(&[("x-b3-parentspanid", "05e3ac9a4f6e3b90")]);
        inject(&mut h, &sc, Some(Style::B3Multi));
        assert_eq!(
            h["traceparent"],
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        );
        assert_eq!(h["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(h["x-b3-spanid"], "e457b5a2e4d86bd1");
        assert_eq!(h["x-b3-sampled"], "1");
        assert!(!h.contains_key("x-b3-parentspanid"));
        let mut h = HeaderMap::new();
        inject(&mut h, &sc, Some(Style::B3Single));
        assert_eq!(
            h["b3"],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        let mut h = HeaderMap::new();
        inject(&mut h, &sc, None);
        assert!(!h.contains_key("b3") && h.contains_key("traceparent"));
    }
}
