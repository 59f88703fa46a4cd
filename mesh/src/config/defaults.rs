//! Every default of the resource model in one place, with the reason for it.

use super::policy::RetryCondition;
use std::time::Duration;

/// Time to establish a connection, TLS handshake included. Short: a peer that
/// cannot accept within a second is better skipped for another endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Upstream connections idle longer than this are closed. Below the 60–120 s
/// idle timeouts common in servers and load balancers, so we close first and
/// never send a request on a connection the peer is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);
/// Idle HTTP/1 connections kept per endpoint.
pub const POOL_MAX_IDLE_PER_ENDPOINT: u32 = 256;
/// Endpoint weight when none is written.
pub const ENDPOINT_WEIGHT: u32 = 1;
/// backendRef weight when none is written (Gateway API default).
pub const BACKEND_REF_WEIGHT: u32 = 1;
/// Largest backendRef weight (Gateway API bound).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Retries after the first try.
pub const RETRY_ATTEMPTS: u32 = 2;
/// Full-jitter backoff bounds.
pub const RETRY_BASE_INTERVAL: Duration = Duration::from_millis(25);
pub const RETRY_MAX_INTERVAL: Duration = Duration::from_millis(250);
/// Retry budget: retries may add this percent of recent requests ...
pub const RETRY_BUDGET_PERCENT: u32 = 20;
/// ... plus this many per second.
pub const RETRY_MIN_PER_SECOND: u32 = 10;
/// Requests with larger bodies are not retried (their body is not buffered).
pub const RETRY_MAX_BUFFERED_BODY: u64 = 64 * 1024;
/// Below this percent of healthy endpoints, balance over all of them.
pub const PANIC_THRESHOLD: u32 = 50;
/// Default trust domain of SPIFFE identities.
pub const TRUST_DOMAIN: &str = "weft.local";
/// Retry conditions when none are written: only failures where the upstream
/// certainly did not process the request, plus gRPC UNAVAILABLE.
pub const RETRY_ON: [RetryCondition; 3] = [
    RetryCondition::ConnectFailure,
    RetryCondition::RefusedStream,
    RetryCondition::Unavailable,
];
/// Concurrency limits per backend (overflow answers 503 at once).
pub const MAX_CONNECTIONS: u32 = 10_000;
pub const MAX_PENDING_REQUESTS: u32 = 10_000;
pub const MAX_REQUESTS: u32 = 10_000;
pub const MAX_RETRIES: u32 = 1_000;
/// Outlier detection.
pub const OUTLIER_CONSECUTIVE_FAILURES: u32 = 5;
pub const OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
pub const OUTLIER_BASE_EJECTION: Duration = Duration::from_secs(30);
pub const OUTLIER_MAX_EJECTION: Duration = Duration::from_secs(300);
pub const OUTLIER_MAX_EJECTION_PERCENT: u32 = 50;
/// Active health checks (off unless configured).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const HEALTH_UNHEALTHY_THRESHOLD: u32 = 3;
pub const HEALTH_HEALTHY_THRESHOLD: u32 = 2;
pub const HEALTH_JITTER_PERCENT: u32 = 10;
/// When a workload certificate is renewed, as fractions of its life: a
/// random point between half and 70 %, so a fleet started together does not
/// renew together, and a failed renewal has 30 % of the life left to retry.
pub const ROTATION_WINDOW: (f64, f64) = (0.5, 0.7);
/// Hedging: one hedge per request unless `maxHedges` says more (each one
/// is a full extra request upstream), and never more than this many.
pub const HEDGE_MAX_HEDGES: u32 = 1;
pub const HEDGE_MAX_HEDGES_LIMIT: u32 = 3;
/// A `percentile` delay is read from this many recent response-header
/// latencies of the backend (a few seconds of traffic at modest rates) ...
pub const HEDGE_LATENCY_WINDOW: usize = 256;
/// ... and no hedge is sent before this many were seen (a percentile of
/// a handful of samples is noise).
pub const HEDGE_MIN_SAMPLES: usize = 20;
