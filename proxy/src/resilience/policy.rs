//! A backend's resilience settings, compiled from its TrafficPolicy with the
//! defaults of `config::defaults` filled in.

use super::budget::RetryBudget;
use super::limits::Limits;
use super::outlier::OutlierConfig;
use super::success_rate::{SuccessRateConfig, Sweeps};
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::config::defaults as d;
use weft_mesh::config::policy::{RetryCondition, RetryCondition as C, TrafficPolicySpec};
use weft_mesh::config::route::RouteRetry;

/// A set of retry conditions, as bits: what a policy retries on, or what
/// a failed try amounts to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetryOn(u16);

impl RetryOn {
    pub(crate) const NONE: RetryOn = RetryOn(0);
    /// The gRPC status conditions (read from `grpc-status`).
    pub(crate) const GRPC: RetryOn = RetryOn(
        Self::bit(C::Unavailable)
            | Self::bit(C::Cancelled)
            | Self::bit(C::DeadlineExceeded)
            | Self::bit(C::ResourceExhausted),
    );
    /// Conditions that may resend a request the upstream already received
    /// (a status or a reset), so a copy of the request must be kept.
    pub(crate) const RESEND: RetryOn = RetryOn(
        Self::bit(C::Reset)
            | Self::bit(C::GatewayError)
            | Self::bit(C::FiveXx)
            | Self::bit(C::RetriableStatusCodes),
    );

    const fn bit(c: RetryCondition) -> u16 {
        1 << match c {
            C::ConnectFailure => 0,
            C::RefusedStream => 1,
            C::Reset => 2,
            C::GatewayError => 3,
            C::FiveXx => 4,
            C::RetriableStatusCodes => 5,
            C::Unavailable => 6,
            C::Cancelled => 7,
            C::DeadlineExceeded => 8,
            C::ResourceExhausted => 9,
        }
    }

    /// The set of one condition.
    pub(crate) fn of(c: RetryCondition) -> RetryOn {
        RetryOn(Self::bit(c))
    }

    /// The set of these conditions.
    pub(crate) fn all_of<'a>(cs: impl IntoIterator<Item = &'a RetryCondition>) -> RetryOn {
        cs.into_iter().fold(RetryOn::NONE, |s, c| s.with(*c))
    }

    pub(crate) fn has(self, c: RetryCondition) -> bool {
        self.0 & Self::bit(c) != 0
    }

    pub(crate) fn with(self, c: RetryCondition) -> RetryOn {
        RetryOn(self.0 | Self::bit(c))
    }

    /// Whether the two sets share a condition.
    pub(crate) fn meets(self, other: RetryOn) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, o: RetryOn) -> RetryOn {
        RetryOn(self.0 | o.0)
    }
}

impl From<RetryCondition> for RetryOn {
    fn from(c: RetryCondition) -> RetryOn {
        RetryOn::of(c)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) attempts: u32,
    pub(crate) retry_on: RetryOn,
    pub(crate) codes: Vec<u16>,
    pub(crate) non_idempotent: bool,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    pub(crate) max_buffered_body: u64,
}

impl RetryPolicy {
    /// This policy with a route's retry settings (GEP-1731) over it:
    /// `attempts`, `codes` (which also turn on retries of those codes) and
    /// the backoff base.
    pub(crate) fn with_route(&self, r: &RouteRetry) -> RetryPolicy {
        let mut p = self.clone();
        if let Some(a) = r.attempts {
            p.attempts = a;
        }
        if !r.codes.is_empty() {
            p.codes = r.codes.clone();
            p.retry_on = p.retry_on.with(RetryCondition::RetriableStatusCodes);
        }
        if let Some(b) = r.backoff {
            p.base = b.0;
        }
        p
    }
}

/// Everything resilience-related about one backend.
pub(crate) struct Resilience {
    /// The backend's own policy; a route's retry settings make a copy
    /// with theirs over it (once, when the config is compiled).
    pub(crate) retry: Arc<RetryPolicy>,
    pub(crate) budget: RetryBudget,
    pub(crate) limits: Limits,
    pub(crate) outlier: OutlierConfig,
    pub(crate) panic_threshold: u32,
    /// Success-rate sweeps of this backend (see `backend::sweep`).
    pub(crate) sweeps: Sweeps,
    /// Hedging, when the policy turns it on.
    pub(crate) hedge: Option<HedgePolicy>,
}

/// `spec.hedge`, compiled: how long to wait for headers before each hedge,
/// how many, and the latency the percentile is read from.
pub(crate) struct HedgePolicy {
    pub(crate) delay: HedgeDelay,
    pub(crate) max_hedges: u32,
    pub(crate) latency: super::latency::LatencyWindow,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum HedgeDelay {
    Fixed(Duration),
    Percentile(f64),
}

impl HedgePolicy {
    fn new(h: &weft_mesh::config::hedge::Hedge) -> Option<HedgePolicy> {
        let delay = match (h.delay, h.percentile) {
            (Some(d), _) => HedgeDelay::Fixed(d.0),
            (None, Some(p)) => HedgeDelay::Percentile(p),
            (None, None) => return None,
        };
        Some(HedgePolicy {
            delay,
            max_hedges: h
                .max_hedges
                .unwrap_or(d::HEDGE_MAX_HEDGES)
                .clamp(1, d::HEDGE_MAX_HEDGES_LIMIT),
            latency: super::latency::LatencyWindow::new(),
        })
    }

    /// How long a try waits for headers before the next hedge; `None`
    /// while a percentile has too few samples (no hedge then).
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay {
            HedgeDelay::Fixed(d) => Some(d),
            HedgeDelay::Percentile(p) => self.latency.percentile(p),
        }
    }
}

impl Resilience {
    pub(crate) fn new(p: Option<&TrafficPolicySpec>) -> Arc<Resilience> {
        let r = p.and_then(|p| p.retry.as_ref());
        let retry_on = match r.and_then(|r| r.retry_on.as_ref()) {
            Some(list) => RetryOn::all_of(list),
            None => RetryOn::all_of(&d::RETRY_ON),
        };
        let backoff = r.and_then(|r| r.backoff.as_ref());
        let budget = r.and_then(|r| r.budget.as_ref());
        let cb = p.and_then(|p| p.circuit_breaker.as_ref());
        let od = p.and_then(|p| p.outlier_detection.as_ref());
        Arc::new(Resilience {
            retry: Arc::new(RetryPolicy {
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
            }),
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
                success_rate: SuccessRateConfig::of(od.and_then(|o| o.success_rate.as_ref())),
            },
            sweeps: Sweeps::default(),
            panic_threshold: p
                .and_then(|p| p.panic_threshold)
                .unwrap_or(d::PANIC_THRESHOLD),
            hedge: p.and_then(|p| p.hedge.as_ref()).and_then(HedgePolicy::new),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_on_sets() {
        let s = RetryOn::all_of(&[RetryCondition::Reset, RetryCondition::FiveXx]);
        assert!(s.has(RetryCondition::Reset) && s.has(RetryCondition::FiveXx));
        assert!(!s.has(RetryCondition::ConnectFailure));
        assert!(s.meets(RetryCondition::FiveXx.into()));
        assert!(!s.meets(RetryCondition::Unavailable.into()));
        assert!(RetryOn::NONE.is_empty() && !s.is_empty());
        for c in RetryCondition::ALL {
            assert!(RetryOn::of(c).has(c));
            assert_eq!(
                RetryCondition::ALL
                    .iter()
                    .filter(|o| RetryOn::of(c).has(**o))
                    .count(),
                1
            );
        }
    }

    #[test]
    fn route_settings_go_over_the_backends() {
        let base = Resilience::new(None).retry.clone();
        assert_eq!(base.retry_on, RetryOn::all_of(&d::RETRY_ON));
        let same = base.with_route(&RouteRetry::default());
        assert_eq!(same.attempts, base.attempts);
        assert_eq!(same.retry_on, base.retry_on);
        let r = RouteRetry {
            attempts: Some(5),
            codes: vec![429],
            backoff: Some(weft_mesh::config::Dur(Duration::from_millis(7))),
        };
        let p = base.with_route(&r);
        assert_eq!(p.attempts, 5);
        assert_eq!(p.codes, vec![429]);
        assert!(p.retry_on.has(RetryCondition::RetriableStatusCodes));
        assert!(p.retry_on.has(RetryCondition::ConnectFailure));
        assert_eq!(p.base, Duration::from_millis(7));
        assert_eq!(p.max, base.max);
    }
}
