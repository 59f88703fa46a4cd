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
/// Success-rate ejection (when `outlierDetection.successRate` is present):
/// the values Envoy uses, so a policy means the same on either. Five hosts
/// and 100 requests each per interval keep a few unlucky requests on a
/// small or quiet backend from ejecting anything; 1.9 standard deviations
/// ejects only a clear outlier.
pub const SUCCESS_RATE_MINIMUM_HOSTS: u32 = 5;
pub const SUCCESS_RATE_REQUEST_VOLUME: u32 = 100;
pub const SUCCESS_RATE_STDEV_FACTOR: f64 = 1.9;
/// `rateLimit` burst when none is written: one second's worth of requests
/// (at least one), so a caller at the configured rate is never refused and a
/// quiet caller may send a second's worth at once.
pub const fn rate_limit_burst(written: Option<u32>, requests_per_second: u32) -> u32 {
    match written {
        Some(b) => b,
        None if requests_per_second == 0 => 1,
        None => requests_per_second,
    }
}
/// Distinct caller identities an inbound rate limit keeps a bucket for.
/// Beyond it, idle buckets (full again, so forgetting them changes nothing)
/// are dropped; if none is idle, the newcomers share one overflow bucket
/// with the identity limit, so memory stays bounded whatever the callers.
pub const RATE_LIMIT_MAX_IDENTITIES: usize = 4096;
/// RequestMirror: a copy is sent only while the request body stays within
/// this (a larger Content-Length skips the copy; a streamed body crossing
/// it cuts the copy off), so each copy holds at most this much in memory.
pub const MIRROR_MAX_BODY: u64 = 64 * 1024;
/// RequestMirror: copies in flight at once per proxy; beyond it a copy is
/// skipped, so a slow or hanging mirror target holds at most this many
/// tasks, connections and circuit-breaker slots.
pub const MIRROR_MAX_IN_FLIGHT: usize = 100;
/// RequestMirror: a copy not answered within this (or the rule's request
/// timeout, if shorter) is abandoned.
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);
/// Fault injection: share of requests an abort or delay applies to when
/// `percent` is not written (all of them: the headers gate is the usual
/// way to narrow a fault).
pub const FAULT_PERCENT: f64 = 100.0;
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
