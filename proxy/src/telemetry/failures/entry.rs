//! What `/failures` keeps of one request: the entry, its tries and their
//! outcomes. Plain data, filled by the request path's observer and read by
//! the ring and the cause composer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What one try of a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    ConnectRefused,
    ConnectTimeout,
    ConnectFailed,
    /// The mTLS handshake (or its config) failed.
    Tls,
    /// A concurrency limit (`connections`, `pending`) refused the try.
    Overloaded(&'static str),
    /// No answer within this time (the try's or the request's timeout).
    Timeout(Duration),
    /// The connection closed or was reset before a whole answer.
    Reset,
    /// The answer could not be relayed unambiguously.
    Protocol,
    /// Any other cause, by its `x-weft-error` name.
    Other(&'static str),
}

impl Outcome {
    /// A try that ends a request well: an answer below 500.
    #[inline]
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Status(s) if *s < 500)
    }

    /// The outcome as `/failures` shows it: `503`, `connect refused`,
    /// `timeout`, `reset`...
    pub(crate) fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::ConnectRefused => "connect refused".into(),
            Outcome::ConnectTimeout => "connect timeout".into(),
            Outcome::ConnectFailed => "connect failed".into(),
            Outcome::Tls => "mtls failed".into(),
            Outcome::Overloaded(limit) => format!("overloaded ({limit})"),
            Outcome::Timeout(_) => "timeout".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Protocol => "protocol error".into(),
            Outcome::Other(c) => (*c).into(),
        }
    }
}

/// One try: where it went, what came of it, and how long the retry
/// backoff waited before it (zero for the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Try {
    pub(crate) endpoint: SocketAddr,
    pub(crate) outcome: Outcome,
    pub(crate) waited: Duration,
    /// The endpoint was ejected when tried (an early probe, or every
    /// endpoint was out and the balancer fell back on it).
    pub(crate) ejected: bool,
}

/// Why the retries stopped while the last try had failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Every attempt the policy allows was made.
    Attempts,
    /// The retry budget refused.
    Budget,
    /// The circuit breaker's `maxRetries` refused.
    RetryLimit,
    /// Too little of the request timeout was left to wait and retry.
    OutOfTime,
}

/// The state of a backend's endpoints when none could be picked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EndpointsState {
    pub(crate) total: usize,
    pub(crate) ejected: usize,
    pub(crate) unhealthy: usize,
}

/// One failed or degraded request.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) time: SystemTime,
    pub(crate) direction: &'static str,
    pub(crate) authority: String,
    pub(crate) method: String,
    pub(crate) path: String,
    /// `ns/name` of the route ("" for a Backend's implicit route).
    pub(crate) route: Option<Arc<str>>,
    pub(crate) rule: Option<u32>,
    pub(crate) backend: Option<Arc<str>>,
    /// The endpoint of the last try.
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) status: u16,
    /// The `x-weft-error` cause of an answer the proxy made itself.
    pub(crate) error_kind: Option<&'static str>,
    /// That error, as the proxy words it.
    pub(crate) error: Option<String>,
    pub(crate) flags: String,
    pub(crate) tries: Vec<Try>,
    pub(crate) stop: Option<Stop>,
    /// Endpoints outlier detection took out after this request's tries.
    pub(crate) ejected: Vec<SocketAddr>,
    /// When no endpoint could be picked: why.
    pub(crate) endpoints: Option<EndpointsState>,
    /// A concurrency limit that refused (`requests`, `retries`...).
    pub(crate) overflow: Option<&'static str>,
    pub(crate) trace_id: Option<[u8; 16]>,
}
