//! The access log: one line per request, emitted through `tracing` at INFO
//! with target `weft::access` (so `--log-format json` gives one JSON object
//! per line). Off by default: `--access-log on` or a MeshConfig's
//! `accessLog: {enabled: true}` turns it on. When off, the request path pays
//! one relaxed load of the proxy's `access_log` flag.
//!
//! Response flags follow Envoy's vocabulary:
//! `NR` no route, `UH` no healthy upstream, `UF` upstream connection failure,
//! `UO` upstream overflow, `UT` upstream request timeout, `UR` upstream reset,
//! `UPE` an upstream answer that could not be relayed unambiguously,
//! `RL` refused by the inbound service's local rate limit,
//! `URX` retried until the attempts (or the retry budget or limit) ran out
//! and still failed; `DI` a delay was injected, `FI` an abort was injected
//! (TrafficPolicy `fault`); `HE` hedged (a second copy went to another
//! endpoint). Several are comma-joined, e.g. `DI,FI`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) const TARGET: &str = "weft::access";

/// What the retry engine knows of a request's upstream side: the endpoint of
/// the last try (and the identity it must prove), how many retries were
/// sent, whether it gave up on a failure it wanted to retry (attempts
/// exhausted, budget or limit refused), and what happened on the way (for
/// the request's trace span).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UpstreamInfo {
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) identity: Option<std::sync::Arc<str>>,
    pub(crate) retries: u32,
    pub(crate) retries_exhausted: bool,
    pub(crate) events: Vec<Event>,
    /// A fault delay was injected before the request went on (flag `DI`).
    pub(crate) delay_injected: bool,
}

/// Something that happened while a request was served (a span event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) at: std::time::SystemTime,
    pub(crate) kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Try number `attempt` (1 for the first retry) is sent after a failure
    /// of `reason` (an `x-weft-error` cause, or `status-NNN`) at `endpoint`.
    Retry {
        attempt: u32,
        endpoint: SocketAddr,
        reason: &'static str,
    },
    /// Outlier detection took `endpoint` out after this request's failure.
    Ejected { endpoint: SocketAddr },
    /// A concurrency limit (circuit breaker) refused: `requests`,
    /// `connections`, `pending` or `retries`.
    Overflow { limit: &'static str },
    /// A local rate limit (`total`, `identity`, `override`) refused an
    /// inbound request.
    RateLimited { limit: &'static str },
    /// A fault was injected: `abort` or `delay`.
    Fault { kind: &'static str },
    /// The rule's RequestMirror copy was not sent: `body` (over the bound)
    /// or `limit` (too many copies in flight).
    MirrorSkipped { reason: &'static str },
    /// Hedge number `hedge` (1 for the first) went to `endpoint`: no
    /// response headers came within the hedge delay.
    Hedge { hedge: u32, endpoint: SocketAddr },
}

impl UpstreamInfo {
    pub(crate) fn event(&mut self, kind: EventKind) {
        self.events.push(Event {
            at: std::time::SystemTime::now(),
            kind,
        });
    }
}

/// What the observer gathers for one line while the request is served.
#[derive(Debug, Default)]
pub(crate) struct Record {
    pub(crate) route: Option<std::sync::Arc<str>>,
    pub(crate) backend: Option<std::sync::Arc<str>>,
    /// The `x-weft-error` cause of an answer the proxy made itself.
    pub(crate) cause: Option<&'static str>,
    pub(crate) upstream: UpstreamInfo,
}

/// The response flags for a cause (as in `x-weft-error`) and the retry
/// outcome; "-" when there are none, else comma-separated (`UF,URX`).
pub(crate) fn flags(cause: Option<&str>, up: &UpstreamInfo) -> Cow<'static, str> {
    let flag = match cause {
        Some("no-route") => Some("NR"),
        Some("no-endpoints") => Some("UH"),
        Some("connect-failed") | Some("connect-timeout") => Some("UF"),
        Some("overloaded") => Some("UO"),
        Some("upstream-timeout") => Some("UT"),
        Some("upstream-reset") => Some("UR"),
        Some("upstream-protocol") => Some("UPE"),
        Some("rate-limited") => Some("RL"),
        Some("fault-abort") => Some("FI"),
        _ => None,
    };
    let hedged = up
        .events
        .iter()
        .any(|e| matches!(e.kind, EventKind::Hedge { .. }));
    let all = [
        up.delay_injected.then_some("DI"),
        flag,
        up.retries_exhausted.then_some("URX"),
        hedged.then_some("HE"),
    ];
    let mut set = all.iter().flatten();
    match (set.next(), set.next()) {
        (None, _) => Cow::Borrowed("-"),
        (Some(f), None) => Cow::Borrowed(f),
        _ => Cow::Owned(all.iter().flatten().copied().collect::<Vec<_>>().join(",")),
    }
}

/// One request, as it was served.
pub(crate) struct Line<'a> {
    pub(crate) direction: &'static str,
    pub(crate) method: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) duration: Duration,
    pub(crate) peer: SocketAddr,
    pub(crate) record: &'a Record,
}

/// Writes the line.
pub(crate) fn emit(line: &Line<'_>) {
    let r = line.record;
    let mut upstream = String::new();
    match r.upstream.endpoint {
        Some(a) => {
            let _ = write!(upstream, "{a}");
        }
        None => upstream.push('-'),
    }
    let flags = flags(r.cause, &r.upstream);
    tracing::info!(
        target: TARGET,
        direction = line.direction,
        method = line.method,
        authority = or_dash(line.authority),
        path = or_dash(line.path),
        status = line.status,
        duration_ms = line.duration.as_secs_f64() * 1000.0,
        route = or_dash(r.route.as_deref().unwrap_or("")),
        backend = or_dash(r.backend.as_deref().unwrap_or("")),
        upstream = upstream.as_str(),
        retries = r.upstream.retries,
        flags = &*flags,
        peer = %line.peer,
        "access"
    );
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(retries: u32, exhausted: bool) -> UpstreamInfo {
        UpstreamInfo {
            retries,
            retries_exhausted: exhausted,
            ..UpstreamInfo::default()
        }
    }

    #[test]
    fn no_cause_no_flags() {
        assert_eq!(flags(None, &up(0, false)), "-");
        // A retry that then succeeded is no failure.
        assert_eq!(flags(None, &up(2, false)), "-");
        // Causes the vocabulary has no flag for.
        assert_eq!(flags(Some("bad-request"), &up(0, false)), "-");
        assert_eq!(flags(Some("no-backend"), &up(0, false)), "-");
    }

    #[test]
    fn each_cause_has_its_flag() {
        let cases = [
            ("no-route", "NR"),
            ("no-endpoints", "UH"),
            ("connect-failed", "UF"),
            ("connect-timeout", "UF"),
            ("overloaded", "UO"),
            ("upstream-timeout", "UT"),
            ("upstream-reset", "UR"),
            ("upstream-protocol", "UPE"),
            ("fault-abort", "FI"),
        ];
        for (cause, flag) in cases {
            assert_eq!(flags(Some(cause), &up(0, false)), flag, "{cause}");
        }
    }

    #[test]
    fn exhausted_retries_add_urx() {
        assert_eq!(flags(Some("connect-failed"), &up(2, true)), "UF,URX");
        assert_eq!(flags(Some("upstream-reset"), &up(1, true)), "UR,URX");
        // An upstream 503 retried to the end: only URX.
        assert_eq!(flags(None, &up(3, true)), "URX");
    }

    #[test]
    fn injected_faults_have_their_flags_in_order() {
        let delayed = UpstreamInfo {
            delay_injected: true,
            ..UpstreamInfo::default()
        };
        assert_eq!(flags(None, &delayed), "DI");
        assert_eq!(flags(Some("fault-abort"), &delayed), "DI,FI");
        assert_eq!(flags(Some("fault-abort"), &up(0, false)), "FI");
        let both = UpstreamInfo {
            retries_exhausted: true,
            ..delayed
        };
        assert_eq!(flags(Some("upstream-reset"), &both), "DI,UR,URX");
    }

    #[test]
    fn hedged_requests_add_he() {
        let mut u = up(0, false);
        u.event(EventKind::Hedge {
            hedge: 1,
            endpoint: "127.0.0.1:1".parse().unwrap(),
        });
        assert_eq!(flags(None, &u), "HE");
        u.retries_exhausted = true;
        assert_eq!(flags(Some("upstream-reset"), &u), "UR,URX,HE");
    }

    #[test]
    fn empty_fields_are_dashes() {
        assert_eq!(or_dash(""), "-");
        assert_eq!(or_dash("svc"), "svc");
    }
}
