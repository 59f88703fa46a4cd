//! A backend's injected faults (TrafficPolicy `fault`), compiled once per
//! config: the header gate, each share out of a million, the abort's
//! answer for HTTP and for gRPC, and the metric handles. Drawing whether
//! a request is hit is here; applying it (waiting, answering) is the
//! request path's (`http::fault`).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prometheus_client::metrics::counter::Counter;
use std::time::Duration;
use weft_mesh::config::defaults;
use weft_mesh::config::fault::Fault as Spec;

use crate::telemetry::metrics::{BackendKindLabels, Metrics};

/// What a gRPC call aborted with an HTTP status gets, per gRPC's
/// HTTP-to-gRPC status table (anything unlisted is UNKNOWN).
fn grpc_of_http(status: u16) -> u8 {
    match status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// The compiled `fault` of one backend.
pub(crate) struct Fault {
    /// Every one must be present (with this value, when given).
    headers: Box<[(HeaderName, Option<HeaderValue>)]>,
    delay: Option<(Duration, u32)>,
    abort: Option<Abort>,
    pub(crate) delays: Counter,
    pub(crate) aborts: Counter,
}

/// What an abort answers, and to what share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Abort {
    /// The HTTP status (500 when only a gRPC status is configured).
    pub(crate) status: StatusCode,
    /// The gRPC status to a gRPC call (mapped when only an HTTP status is).
    pub(crate) grpc: u8,
    per_million: u32,
}

/// What one request draws.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) delay: Option<Duration>,
    pub(crate) abort: Option<Abort>,
}

fn per_million(percent: Option<f64>) -> u32 {
    let p = percent.unwrap_or(defaults::FAULT_PERCENT).clamp(0.0, 100.0);
    (p * 10_000.0).round() as u32
}

fn hit(per_million: u32) -> bool {
    per_million >= 1_000_000 || (per_million > 0 && rand::random_range(0..1_000_000) < per_million)
}

impl Fault {
    /// Compiles `spec` for backend `key` (`namespace/name`). Validation
    /// has checked it; anything still unusable (a header that does not
    /// parse) makes the fault apply to nothing rather than to everything.
    pub(crate) fn new(spec: &Spec, key: &str, metrics: &Metrics) -> Fault {
        let mut headers = Vec::with_capacity(spec.headers.len());
        let mut usable = true;
        for h in &spec.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes());
            let value = h.value.as_deref().map(HeaderValue::from_str).transpose();
            match (name, value) {
                (Ok(n), Ok(v)) => headers.push((n, v)),
                _ => usable = false,
            }
        }
        let abort = spec.abort.as_ref().filter(|_| usable).map(|a| {
            let http = a.http_status.and_then(|s| StatusCode::from_u16(s).ok());
            Abort {
                status: http.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                grpc: match a.grpc_status {
                    Some(g) => g.clamp(1, 16) as u8,
                    None => grpc_of_http(http.map_or(500, |s| s.as_u16())),
                },
                per_million: per_million(a.percent),
            }
        });
        let delay = spec
            .delay
            .as_ref()
            .filter(|_| usable)
            .map(|d| (d.fixed_delay.0, per_million(d.percent)));
        let counter = |kind| {
            metrics
                .faults
                .get_or_create(&BackendKindLabels {
                    backend: key.to_owned(),
                    kind,
                })
                .clone()
        };
        Fault {
            headers: headers.into(),
            delay,
            abort,
            delays: counter("delay"),
            aborts: counter("abort"),
        }
    }

    /// Whether a request with these headers is one the fault applies to.
    pub(crate) fn applies(&self, h: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, value)| match value {
            Some(v) => h.get_all(name).iter().any(|x| x == v),
            None => h.contains_key(name),
        })
    }

    /// Draws the delay, then the abort, for one request it applies to.
    pub(crate) fn draw(&self) -> Draw {
        Draw {
            delay: self.delay.filter(|(_, pm)| hit(*pm)).map(|(d, _)| d),
            abort: self.abort.filter(|a| hit(a.per_million)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_mesh::config::fault::{FaultAbort, FaultDelay, FaultHeader};
    use weft_mesh::config::Dur;

    fn spec(abort: Option<FaultAbort>, delay: Option<FaultDelay>) -> Spec {
        Spec {
            abort,
            delay,
            headers: vec![],
        }
    }

    #[test]
    fn statuses_for_http_and_grpc() {
        let m = Metrics::new();
        let http = |s| FaultAbort {
            http_status: Some(s),
            ..FaultAbort::default()
        };
        let f = Fault::new(&spec(Some(http(503)), None), "ns/b", &m);
        let a = f.draw().abort.unwrap();
        assert_eq!((a.status.as_u16(), a.grpc), (503, 14));
        let f = Fault::new(&spec(Some(http(404)), None), "ns/b", &m);
        assert_eq!(f.draw().abort.unwrap().grpc, 12);
        let f = Fault::new(&spec(Some(http(418)), None), "ns/b", &m);
        assert_eq!(f.draw().abort.unwrap().grpc, 2);
        let grpc = FaultAbort {
            grpc_status: Some(8),
            ..FaultAbort::default()
        };
        let f = Fault::new(&spec(Some(grpc), None), "ns/b", &m);
        let a = f.draw().abort.unwrap();
        assert_eq!((a.status.as_u16(), a.grpc), (500, 8));
        assert_eq!(f.draw().delay, None);
    }

    #[test]
    fn shares_are_drawn() {
        let m = Metrics::new();
        let none = FaultDelay {
            fixed_delay: Dur::from_millis(5),
            percent: Some(0.0),
        };
        let f = Fault::new(&spec(None, Some(none)), "ns/b", &m);
        assert!((0..10_000).all(|_| f.draw() == Draw::default()));
        let all = FaultDelay {
            fixed_delay: Dur::from_millis(5),
            percent: None,
        };
        let f = Fault::new(&spec(None, Some(all)), "ns/b", &m);
        assert!((0..10_000).all(|_| f.draw().delay == Some(Duration::from_millis(5))));
        assert_eq!(per_million(Some(12.5)), 125_000);
        assert_eq!(per_million(Some(0.0001)), 1);
    }

    #[test]
    fn the_header_gate() {
        let m = Metrics::new();
        let mut s = spec(None, None);
        s.headers = vec![
            FaultHeader {
                name: "x-weft-fault".into(),
                value: Some("on".into()),
            },
            FaultHeader {
                name: "x-test".into(),
                value: None,
            },
        ];
        let f = Fault::new(&s, "ns/b", &m);
        let mut h = HeaderMap::new();
        assert!(!f.applies(&h));
        h.insert("x-weft-fault", HeaderValue::from_static("on"));
        assert!(!f.applies(&h));
        h.insert("x-test", HeaderValue::from_static(""));
        assert!(f.applies(&h));
        h.insert("x-weft-fault", HeaderValue::from_static("off"));
        assert!(!f.applies(&h));
        assert!(Fault::new(&spec(None, None), "ns/b", &m).applies(&HeaderMap::new()));
    }
}
