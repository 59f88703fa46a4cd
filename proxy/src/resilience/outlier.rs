//! Passive outlier detection per endpoint: after `consecutive_failures`
//! failures in a row an endpoint is ejected for `base × times ejected`
//! (capped); when that runs out it is half-open: exactly one probe request
//! is let through, and its outcome restores or re-ejects the endpoint.
//!
//! All state is atomics; the request path reads one or two of them.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const HEALTHY: u8 = 0;
const EJECTED: u8 = 1;
const PROBING: u8 = 2;

/// Settings from `TrafficPolicy.outlierDetection` (defaults in config::defaults).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OutlierConfig {
    pub(crate) consecutive_failures: u32,
    pub(crate) interval: Duration,
    pub(crate) base_ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) max_ejection_percent: u32,
}

/// What the balancer may do with an endpoint now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Healthy: send anything.
    Open,
    /// Ejected: send nothing (for this long).
    Ejected(Duration),
    /// Ejection over: one probe may go (see [`Outlier::try_probe`]).
    ProbeDue,
    /// A probe is in flight: wait for its outcome.
    Probing,
}

#[derive(Debug)]
pub(crate) struct Outlier {
    /// Times below are milliseconds since this instant (per endpoint, so a
    /// test's paused clock and the state it drives always agree).
    epoch: Instant,
    consecutive: AtomicU32,
    state: AtomicU8,
    until_ms: AtomicU64,
    times_ejected: AtomicU32,
    /// When the endpoint last became healthy again (decays the multiplier).
    healthy_since_ms: AtomicU64,
    pub(crate) ejections_total: AtomicU64,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            epoch: Instant::now(),
            consecutive: AtomicU32::new(0),
            state: AtomicU8::new(HEALTHY),
            until_ms: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            healthy_since_ms: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
        }
    }
}

/// What a reported outcome changed, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Ejected(Duration),
    Restored,
}

impl Outlier {
    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    pub(crate) fn admission(&self) -> Admission {
        match self.state.load(Ordering::Acquire) {
            HEALTHY => Admission::Open,
            PROBING => Admission::Probing,
            _ => {
                let until = self.until_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                if now >= until {
                    Admission::ProbeDue
                } else {
                    Admission::Ejected(Duration::from_millis(until - now))
                }
            }
        }
    }

    /// True when this endpoint is ejected now (not counting a due probe).
    pub(crate) fn is_ejected(&self) -> bool {
        !matches!(self.admission(), Admission::Open)
    }

    /// Claims the single probe of a half-open endpoint.
    pub(crate) fn try_probe(&self) -> bool {
        matches!(self.admission(), Admission::ProbeDue)
            && self
                .state
                .compare_exchange(EJECTED, PROBING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub(crate) fn on_success(&self, cfg: &OutlierConfig) -> Transition {
        // The common case (healthy, never ejected) touches no clock and
        // writes nothing that is not already zero.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        let probing = self.state.load(Ordering::Acquire) == PROBING;
        let times = self.times_ejected.load(Ordering::Relaxed);
        if !probing && times == 0 {
            return Transition::None;
        }
        let now = self.now_ms();
        if probing
            && self
                .state
                .compare_exchange(PROBING, HEALTHY, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.healthy_since_ms.store(now, Ordering::Relaxed);
            return Transition::Restored;
        }
        // Each `interval` of health takes one step off the ejection multiplier.
        let since = self.healthy_since_ms.load(Ordering::Relaxed);
        let step = cfg.interval.as_millis().max(1) as u64;
        if times > 0 && now.saturating_sub(since) >= step {
            self.times_ejected.fetch_sub(1, Ordering::Relaxed);
            self.healthy_since_ms.store(now, Ordering::Relaxed);
        }
        Transition::None
    }

    /// Reports a failure; `may_eject` says whether the backend's ejection
    /// cap leaves room for one more.
    pub(crate) fn on_failure(
        &self,
        cfg: &OutlierConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> Transition {
        let state = self.state.load(Ordering::Acquire);
        if state == PROBING {
            // The probe failed: back out, for longer.
            return self.eject(cfg);
        }
        if state == EJECTED {
            return Transition::None;
        }
        let n = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
        let due = cfg.consecutive_failures > 0 && n >= cfg.consecutive_failures;
        if due
            && may_eject()
            && self
                .state
                .compare_exchange(HEALTHY, EJECTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return self.eject(cfg);
        }
        Transition::None
    }

    fn eject(&self, cfg: &OutlierConfig) -> Transition {
        let times = self.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        let d = cfg
            .base_ejection
            .checked_mul(times)
            .unwrap_or(cfg.max_ejection)
            .min(cfg.max_ejection);
        self.until_ms
            .store(self.now_ms() + d.as_millis() as u64, Ordering::Release);
        self.state.store(EJECTED, Ordering::Release);
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        Transition::Ejected(d)
    }

    pub(crate) fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_then_probes() {
        let o = Outlier::default();
        let c = cfg();
        assert_eq!(o.on_failure(&c, || true), Transition::None);
        assert_eq!(o.on_failure(&c, || true), Transition::None);
        o.on_success(&c); // a success resets the streak
        o.on_failure(&c, || true);
        o.on_failure(&c, || true);
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(30))
        );
        assert!(matches!(o.admission(), Admission::Ejected(_)));
        assert!(!o.try_probe());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(o.admission(), Admission::ProbeDue);
        assert!(o.try_probe());
        assert!(!o.try_probe(), "exactly one probe");
        assert_eq!(o.admission(), Admission::Probing);
        // The probe fails: ejected again, for base × 2.
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(60))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(o.try_probe());
        assert_eq!(o.on_success(&c), Transition::Restored);
        assert_eq!(o.admission(), Admission::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped_and_respects_the_backend_cap() {
        let o = Outlier::default();
        let c = OutlierConfig {
            consecutive_failures: 1,
            max_ejection: Duration::from_secs(45),
            ..cfg()
        };
        assert_eq!(
            o.on_failure(&c, || false),
            Transition::None,
            "backend cap reached: stays in"
        );
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(30))
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(o.try_probe());
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(45)),
            "capped"
        );
    }
}
