//! The one-line cause of a failed request, in plain words: "3 tries:
//! 2 connect refused by 10.0.0.7:8080, then 503 from 10.0.0.8:8080, then
//! retry budget exhausted". A pure function of the entry, so every wording
//! is pinned by a golden test below.
//!
//! Tries in a row with the same outcome are told once with their count;
//! then why the retries stopped; then any endpoint the request's failures
//! got ejected. A request the proxy answered without any try (no route,
//! no healthy endpoint, a limit, a refusal) is told by that reason alone.

use super::entry::{EndpointsState, Entry, Outcome, Stop, Try};
use std::fmt::Write;
use std::net::SocketAddr;

/// The cause line of `e`.
pub(crate) fn line(e: &Entry) -> String {
    let mut out = String::new();
    if e.tries.is_empty() {
        untried(e, &mut out);
    } else {
        if e.tries.len() > 1 {
            let _ = write!(out, "{} tries: ", e.tries.len());
        }
        let mut first = true;
        for group in groups(&e.tries) {
            if !first {
                out.push_str(", then ");
            }
            first = false;
            phrase(group, &mut out);
        }
        if let Some(stop) = e.stop {
            let _ = write!(out, ", then {}", stop_words(stop));
        }
        if let Some(err) = &e.error {
            let _ = write!(out, ", then {}", after_tries(e, err));
        }
    }
    if !e.ejected.is_empty() {
        let _ = write!(out, "; {} ejected", endpoints(&e.ejected));
    }
    out
}

/// A request no try was made for.
fn untried(e: &Entry, out: &mut String) {
    match (e.error_kind, &e.error) {
        (Some("no-endpoints"), _) => {
            let _ = write!(
                out,
                "no healthy endpoint for {}",
                e.backend.as_deref().unwrap_or("the backend")
            );
            if let Some(s) = e.endpoints {
                let _ = write!(out, ": {}", endpoint_state(s));
            }
        }
        (Some("overloaded"), Some(err)) => {
            let _ = write!(out, "overloaded: {err}");
        }
        (_, Some(err)) => out.push_str(err),
        (_, None) => match e.endpoint {
            Some(ep) if e.status >= 500 => {
                let _ = write!(out, "{} from {ep}", e.status);
            }
            _ => {
                let _ = write!(out, "answered {}", e.status);
            }
        },
    }
}

/// A proxy error after the tries (an endpoint could not be picked for the
/// next one, say).
fn after_tries(e: &Entry, err: &str) -> String {
    match (e.error_kind, e.endpoints) {
        (Some("no-endpoints"), Some(s)) => format!("no healthy endpoint: {}", endpoint_state(s)),
        _ => err.to_owned(),
    }
}

fn endpoint_state(s: EndpointsState) -> String {
    if s.total == 0 {
        return "it has no endpoints".into();
    }
    let mut out = String::new();
    if s.ejected > 0 {
        let _ = write!(out, "{} of {} ejected", s.ejected, s.total);
    }
    if s.unhealthy > 0 {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{} of {} failing health checks", s.unhealthy, s.total);
    }
    if out.is_empty() {
        let _ = write!(out, "none of {} usable", s.total);
    }
    out
}

fn stop_words(s: Stop) -> &'static str {
    match s {
        Stop::Attempts => "out of retries",
        Stop::Budget => "retry budget exhausted",
        Stop::RetryLimit => "retry limit reached (circuit breaker maxRetries)",
        Stop::OutOfTime => "out of time for another try",
    }
}

/// Runs of tries with the same outcome.
fn groups(tries: &[Try]) -> impl Iterator<Item = &[Try]> {
    tries.chunk_by(|a, b| a.outcome == b.outcome && a.ejected == b.ejected)
}

/// One run: "2 connect refused by 10.0.0.7:8080".
fn phrase(group: &[Try], out: &mut String) {
    let n = group.len();
    let mut eps: Vec<SocketAddr> = Vec::new();
    for t in group {
        if !eps.contains(&t.endpoint) {
            eps.push(t.endpoint);
        }
    }
    let at = endpoints(&eps);
    let many = |one: &str, several: &str| match n {
        1 => one.to_owned(),
        _ => format!("{n} {several}"),
    };
    let text = match group[0].outcome {
        Outcome::Status(s) => match n {
            1 => format!("{s} from {at}"),
            _ => format!("{n} × {s} from {at}"),
        },
        Outcome::ConnectRefused => {
            format!("{} by {at}", many("connect refused", "connect refused"))
        }
        Outcome::ConnectTimeout => {
            format!("{} to {at}", many("connect timeout", "connect timeouts"))
        }
        Outcome::ConnectFailed => format!("{} to {at}", many("connect failed", "connects failed")),
        Outcome::Tls => format!(
            "{} with {at}",
            many("mTLS handshake failed", "mTLS handshakes failed")
        ),
        Outcome::Overloaded(limit) => format!(
            "{} at {at} (its limit of concurrent {limit})",
            many("overloaded", "× overloaded")
        ),
        Outcome::Timeout(d) => format!(
            "{} after {d:?} waiting for {at}",
            many("timeout", "timeouts")
        ),
        Outcome::Reset => format!("{} by {at}", many("connection reset", "connections reset")),
        Outcome::Protocol => format!(
            "{} from {at}",
            many("malformed answer", "malformed answers")
        ),
        Outcome::Other(c) => format!("{} at {at}", many(c, &format!("× {c}"))),
    };
    out.push_str(&text);
    if group[0].ejected {
        out.push_str(match n {
            1 => " (an ejected endpoint)",
            _ => " (ejected endpoints)",
        });
    }
}

/// "a", "a and b", "a, b and c".
fn endpoints(eps: &[SocketAddr]) -> String {
    let mut out = String::new();
    for (i, ep) in eps.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == eps.len() { " and " } else { ", " });
        }
        let _ = write!(out, "{ep}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::*;
    use std::time::Duration;

    const A: &str = "10.0.0.7:8080";
    const B: &str = "10.0.0.8:8080";

    fn t(ep: &str, outcome: Outcome, waited_ms: u64) -> Try {
        Try {
            endpoint: ep.parse().unwrap(),
            outcome,
            waited: Duration::from_millis(waited_ms),
            ejected: false,
        }
    }

    fn with(tries: Vec<Try>, stop: Option<Stop>) -> Entry {
        let mut e = entry("default/svc", "");
        e.tries = tries;
        e.stop = stop;
        e
    }

    #[test]
    fn connect_refused() {
        let e = with(
            vec![
                t(A, Outcome::ConnectRefused, 0),
                t(A, Outcome::ConnectRefused, 20),
                t(B, Outcome::Status(503), 40),
            ],
            Some(Stop::Budget),
        );
        assert_eq!(
            line(&e),
            "3 tries: 2 connect refused by 10.0.0.7:8080, then 503 from 10.0.0.8:8080, then retry budget exhausted"
        );
        let e = with(
            vec![
                t(A, Outcome::ConnectRefused, 0),
                t(B, Outcome::ConnectRefused, 3),
                t(A, Outcome::ConnectRefused, 7),
            ],
            Some(Stop::Attempts),
        );
        assert_eq!(
            line(&e),
            "3 tries: 3 connect refused by 10.0.0.7:8080 and 10.0.0.8:8080, then out of retries"
        );
        let e = with(vec![t(A, Outcome::ConnectRefused, 0)], None);
        assert_eq!(line(&e), "connect refused by 10.0.0.7:8080");
    }

    #[test]
    fn timeout() {
        let e = with(
            vec![t(A, Outcome::Timeout(Duration::from_millis(200)), 0)],
            None,
        );
        assert_eq!(line(&e), "timeout after 200ms waiting for 10.0.0.7:8080");
        let e = with(
            vec![
                t(A, Outcome::Timeout(Duration::from_millis(50)), 0),
                t(B, Outcome::Timeout(Duration::from_millis(50)), 10),
            ],
            Some(Stop::OutOfTime),
        );
        assert_eq!(
            line(&e),
            "2 tries: 2 timeouts after 50ms waiting for 10.0.0.7:8080 and 10.0.0.8:8080, then out of time for another try"
        );
    }

    #[test]
    fn reset() {
        let e = with(vec![t(A, Outcome::Reset, 0)], None);
        assert_eq!(line(&e), "connection reset by 10.0.0.7:8080");
        let e = with(
            vec![t(A, Outcome::Reset, 0), t(A, Outcome::Status(200), 25)],
            None,
        );
        assert_eq!(
            line(&e),
            "2 tries: connection reset by 10.0.0.7:8080, then 200 from 10.0.0.7:8080",
            "a degraded request: retried, then answered"
        );
    }

    #[test]
    fn overloaded() {
        let mut e = with(Vec::new(), None);
        e.error_kind = Some("overloaded");
        e.error = Some("backend default/svc is at its limit of concurrent requests".into());
        e.overflow = Some("requests");
        assert_eq!(
            line(&e),
            "overloaded: backend default/svc is at its limit of concurrent requests"
        );
        let e = with(
            vec![
                t(A, Outcome::Status(503), 0),
                t(B, Outcome::Overloaded("connections"), 5),
            ],
            None,
        );
        assert_eq!(
            line(&e),
            "2 tries: 503 from 10.0.0.7:8080, then overloaded at 10.0.0.8:8080 (its limit of concurrent connections)"
        );
        let e = with(vec![t(A, Outcome::Status(503), 0)], Some(Stop::RetryLimit));
        assert_eq!(
            line(&e),
            "503 from 10.0.0.7:8080, then retry limit reached (circuit breaker maxRetries)"
        );
    }

    #[test]
    fn budget_exhausted() {
        let e = with(
            vec![
                t(A, Outcome::ConnectRefused, 0),
                t(B, Outcome::ConnectRefused, 12),
            ],
            Some(Stop::Budget),
        );
        assert_eq!(
            line(&e),
            "2 tries: 2 connect refused by 10.0.0.7:8080 and 10.0.0.8:8080, then retry budget exhausted"
        );
        let e = with(vec![t(A, Outcome::Status(503), 0)], Some(Stop::Budget));
        assert_eq!(
            line(&e),
            "503 from 10.0.0.7:8080, then retry budget exhausted"
        );
    }

    #[test]
    fn ejected() {
        let mut e = with(
            vec![t(A, Outcome::Status(503), 0), t(A, Outcome::Status(503), 9)],
            Some(Stop::Attempts),
        );
        e.ejected = vec![A.parse().unwrap()];
        assert_eq!(
            line(&e),
            "2 tries: 2 × 503 from 10.0.0.7:8080, then out of retries; 10.0.0.7:8080 ejected"
        );
        // Every endpoint out: the balancer falls back on an ejected one.
        let mut e = with(
            vec![t(A, Outcome::Status(503), 0), t(A, Outcome::Status(503), 3)],
            Some(Stop::Attempts),
        );
        e.tries[1].ejected = true;
        assert_eq!(
            line(&e),
            "2 tries: 503 from 10.0.0.7:8080, then 503 from 10.0.0.7:8080 (an ejected endpoint), then out of retries"
        );
        let mut e = with(Vec::new(), None);
        e.error_kind = Some("no-endpoints");
        e.error = Some("backend default/svc has no endpoints".into());
        e.endpoints = Some(EndpointsState {
            total: 2,
            ejected: 2,
            unhealthy: 0,
        });
        assert_eq!(
            line(&e),
            "no healthy endpoint for default/svc: 2 of 2 ejected"
        );
        e.endpoints = Some(EndpointsState {
            total: 3,
            ejected: 1,
            unhealthy: 2,
        });
        assert_eq!(
            line(&e),
            "no healthy endpoint for default/svc: 1 of 3 ejected, 2 of 3 failing health checks"
        );
        e.endpoints = Some(EndpointsState::default());
        assert_eq!(
            line(&e),
            "no healthy endpoint for default/svc: it has no endpoints"
        );
        // Ejections ran out the endpoints between two tries.
        let mut e = with(vec![t(A, Outcome::Status(503), 0)], None);
        e.error_kind = Some("no-endpoints");
        e.error = Some("backend default/svc has no endpoints".into());
        e.endpoints = Some(EndpointsState {
            total: 1,
            ejected: 1,
            unhealthy: 0,
        });
        e.ejected = vec![A.parse().unwrap()];
        assert_eq!(
            line(&e),
            "503 from 10.0.0.7:8080, then no healthy endpoint: 1 of 1 ejected; 10.0.0.7:8080 ejected"
        );
    }

    #[test]
    fn no_route() {
        let mut e = with(Vec::new(), None);
        e.backend = None;
        e.status = 404;
        e.error_kind = Some("no-route");
        e.error = Some("no route for authority \"nowhere.example\"".into());
        assert_eq!(line(&e), "no route for authority \"nowhere.example\"");
        e.error = Some("no rule of default/shop matches this request".into());
        assert_eq!(line(&e), "no rule of default/shop matches this request");
    }

    #[test]
    fn other_answers() {
        let mut e = with(Vec::new(), None);
        e.status = 403;
        e.error_kind = Some("forbidden");
        e.error = Some("forbidden by AuthorizationPolicy".into());
        assert_eq!(line(&e), "forbidden by AuthorizationPolicy");
        let mut e = with(Vec::new(), None);
        e.endpoint = Some(A.parse().unwrap());
        assert_eq!(line(&e), "503 from 10.0.0.7:8080");
        let e = with(vec![t(A, Outcome::Other("no-backend"), 0)], None);
        assert_eq!(line(&e), "no-backend at 10.0.0.7:8080");
        let e = with(
            vec![t(A, Outcome::Protocol, 0), t(B, Outcome::Tls, 1)],
            None,
        );
        assert_eq!(
            line(&e),
            "2 tries: malformed answer from 10.0.0.7:8080, then mTLS handshake failed with 10.0.0.8:8080"
        );
    }
}
