//! A backend's resilience settings, compiled from its TrafficPolicy with the
//! defaults of `config::defaults` filled in.

use super::budget::RetryBudget;
use super::limits::Limits;
use super::outlier::OutlierConfig;
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::config::defaults as d;
use weft_mesh::config::policy::TrafficPolicySpec;

/// Retry conditions, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    pub const CONNECT_FAILURE: u32 = 1;
    pub const REFUSED_STREAM: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const GATEWAY_ERROR: u32 = 1 << 3;
    pub const FIVE_XX: u32 = 1 << 4;
    pub const RETRIABLE_CODES: u32 = 1 << 5;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 6;
    pub const GRPC_CANCELLED: u32 = 1 << 7;
    pub const GRPC_DEADLINE: u32 = 1 << 8;
    pub const GRPC_EXHAUSTED: u32 = 1 << 9;

    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> RetryOn {
        let mut bits = 0;
        for n in names {
            bits |= match n {
                "connect-failure" => Self::CONNECT_FAILURE,
                "refused-stream" => Self::REFUSED_STREAM,
                "reset" => Self::RESET,
                "gateway-error" => Self::GATEWAY_ERROR,
                "5xx" => Self::FIVE_XX,
                "retriable-status-codes" => Self::RETRIABLE_CODES,
                "unavailable" => Self::GRPC_UNAVAILABLE,
                "cancelled" => Self::GRPC_CANCELLED,
                "deadline-exceeded" => Self::GRPC_DEADLINE,
                "resource-exhausted" => Self::GRPC_EXHAUSTED,
                _ => 0,
            };
        }
        RetryOn(bits)
    }

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    pub fn with(self, bit: u32) -> RetryOn {
        RetryOn(self.0 | bit)
    }
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub retry_on: RetryOn,
    pub codes: Vec<u16>,
    pub non_idempotent: bool,
    pub per_try_timeout: Option<Duration>,
    pub base: Duration,
    pub max: Duration,
    pub max_buffered_body: u64,
}

/// Everything resilience-related about one backend.
pub struct Resilience {
    pub retry: RetryPolicy,
    pub budget: RetryBudget,
    pub limits: Limits,
    pub outlier: OutlierConfig,
    pub panic_threshold: u32,
}

impl Resilience {
    pub fn new(p: Option<&TrafficPolicySpec>) -> Arc<Resilience> {
        let r = p.and_then(|p| p.retry.as_ref());
        let retry_on = match r.and_then(|r| r.retry_on.as_ref()) {
            Some(list) => RetryOn::parse(list.iter().map(String::as_str)),
            None => RetryOn::parse(d::RETRY_ON),
        };
        let backoff = r.and_then(|r| r.backoff.as_ref());
        let budget = r.and_then(|r| r.budget.as_ref());
        let cb = p.and_then(|p| p.circuit_breaker.as_ref());
        let od = p.and_then(|p| p.outlier_detection.as_ref());
        Arc::new(Resilience {
            retry: RetryPolicy {
                attempts: r.and_then(|r| r.attempts).unwrap_or(d::RETRY_ATTEMPTS),
                retry_on,
                codes: r.map(|r| r.codes.clone()).unwrap_or_default(),
                non_idempotent: r.and_then(|r| r.non_idempotent).unwrap_or(false),
                per_try_timeout: r
                    .and_then(|r| r.per_try_timeout)
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero()),
                base: backoff
                    .and_then(|b| b.base_interval)
                    .map(|d| d.0)
                    .unwrap_or(d::RETRY_BASE_INTERVAL),
                max: backoff
                    .and_then(|b| b.max_interval)
                    .map(|d| d.0)
                    .unwrap_or(d::RETRY_MAX_INTERVAL),
                max_buffered_body: r
                    .and_then(|r| r.max_buffered_body.as_deref())
                    .and_then(weft_mesh::config::parse_size)
                    .unwrap_or(d::RETRY_MAX_BUFFERED_BODY),
            },
            budget: RetryBudget::new(
                budget
                    .and_then(|b| b.percent)
                    .unwrap_or(d::RETRY_BUDGET_PERCENT),
                budget
                    .and_then(|b| b.min_retries_per_second)
                    .unwrap_or(d::RETRY_MIN_PER_SECOND),
            ),
            limits: Limits::new(
                cb.and_then(|c| c.max_connections)
                    .unwrap_or(d::MAX_CONNECTIONS),
                cb.and_then(|c| c.max_pending_requests)
                    .unwrap_or(d::MAX_PENDING_REQUESTS),
                cb.and_then(|c| c.max_requests).unwrap_or(d::MAX_REQUESTS),
                cb.and_then(|c| c.max_retries).unwrap_or(d::MAX_RETRIES),
            ),
            outlier: OutlierConfig {
                consecutive_failures: od
                    .and_then(|o| o.consecutive_failures)
                    .unwrap_or(d::OUTLIER_CONSECUTIVE_FAILURES),
                interval: od
                    .and_then(|o| o.interval)
                    .map(|d| d.0)
                    .unwrap_or(d::OUTLIER_INTERVAL),
                base_ejection: od
                    .and_then(|o| o.base_ejection_time)
                    .map(|d| d.0)
                    .unwrap_or(d::OUTLIER_BASE_EJECTION),
                max_ejection: od
                    .and_then(|o| o.max_ejection_time)
                    .map(|d| d.0)
                    .unwrap_or(d::OUTLIER_MAX_EJECTION),
                max_ejection_percent: od
                    .and_then(|o| o.max_ejection_percent)
                    .unwrap_or(d::OUTLIER_MAX_EJECTION_PERCENT),
            },
            panic_threshold: p
                .and_then(|p| p.panic_threshold)
                .unwrap_or(d::PANIC_THRESHOLD),
        })
    }
}
