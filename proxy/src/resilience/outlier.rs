//! Passive outlier detection per endpoint: after `consecutive_failures`
//! failures in a row an endpoint is ejected for `base × times ejected`
//! (capped); when that runs out it is half-open: exactly one probe request
//! is let through, and its outcome restores or re-ejects the endpoint.
//!
//! Early probes. `maxEjectionPercent` can keep a failing endpoint in while
//! an ejected one has recovered: with two endpoints, one ejected after five
//! 503s and one refusing connections, the cap keeps the refusing one and
//! every request would go to it for the whole ejection. So when every
//! endpoint left to choose from is [`failing`](Outlier::failing) (its
//! failure streak reached the ejection threshold; only the cap keeps it
//! in), an ejected endpoint is probed before its time
//! ([`Outlier::try_probe_early`]): one request at a time, at most one per
//! [`EARLY_PROBE_SPACING`], and none past the ejection's end, where the
//! usual probe takes over. If it answers, the endpoint is back (and the
//! failing one, no longer held in by the cap, is ejected on its next
//! failure); if not, it stays ejected as it was — same end, same
//! multiplier — since the probe was extra, not a sign of a new failure.
//!
//! This is chosen over letting the cap pick which endpoint stays in by its
//! health (ejecting the failing one and putting back an ejected one): the
//! proxy knows nothing of an ejected endpoint's health until a request
//! tells it, so swapping would return an endpoint on no evidence, and if it
//! still fails the two would trade places, five failed requests each time.
//! An early probe costs one request, brings traffic back only on a success,
//! and never ejects more than the cap allows.
//!
//! All state is atomics; the request path reads one or two of them.

use super::success_rate::{Reason, SuccessRateConfig, Window};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const HEALTHY: u8 = 0;
const EJECTED: u8 = 1;
const PROBING: u8 = 2;
/// An early probe is in flight (the ejection has not run out).
const EARLY: u8 = 3;

/// Least time between two early probes of one endpoint: traffic is back
/// on a recovered endpoint within this (well inside a second), and one
/// that still fails takes at most a few extra requests a second.
pub(crate) const EARLY_PROBE_SPACING: Duration = Duration::from_millis(250);
/// A probe (early or due) out this long without an outcome (its client
/// gone, or the endpoint slow) no longer holds back the next one: a probe
/// whose request was dropped must not leave its endpoint out for good.
pub(crate) const PROBE_LOST_AFTER: Duration = Duration::from_secs(1);
/// No time yet.
const NEVER: u64 = u64::MAX;

/// Settings from `TrafficPolicy.outlierDetection` (defaults in config::defaults).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OutlierConfig {
    pub(crate) consecutive_failures: u32,
    pub(crate) interval: Duration,
    pub(crate) base_ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) max_ejection_percent: u32,
    /// Success-rate ejection (`None`: off).
    pub(crate) success_rate: Option<SuccessRateConfig>,
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
    /// A probe (due or early) is in flight: wait for its outcome.
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
    /// When the last early probe went ([`NEVER`] if none has).
    early_at_ms: AtomicU64,
    pub(crate) ejections_total: AtomicU64,
    /// Why the current (or last) ejection happened, a [`Reason`].
    reason: AtomicU8,
    /// This interval's tries, for success-rate ejection.
    pub(crate) window: Window,
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
            early_at_ms: AtomicU64::new(NEVER),
            ejections_total: AtomicU64::new(0),
            reason: AtomicU8::new(Reason::Consecutive as u8),
            window: Window::default(),
        }
    }
}

/// What a reported outcome changed, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    Ejected(Duration),
    Restored,
    /// An early probe failed: still ejected, as before it.
    EarlyProbeFailed,
}

impl Outlier {
    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    /// What the balancer may do with this endpoint now: one atomic load in
    /// the common (healthy) case, inlined where endpoints are picked.
    #[inline]
    pub(crate) fn admission(&self) -> Admission {
        match self.state.load(Ordering::Acquire) {
            HEALTHY => Admission::Open,
            state => self.admission_out(state),
        }
    }

    #[cold]
    fn admission_out(&self, state: u8) -> Admission {
        match state {
            PROBING => {
                // `until_ms` holds when the probe went.
                let sent = self.until_ms.load(Ordering::Acquire);
                if self.now_ms() >= sent.saturating_add(PROBE_LOST_AFTER.as_millis() as u64) {
                    Admission::ProbeDue
                } else {
                    Admission::Probing
                }
            }
            state => {
                let until = self.until_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                if now >= until {
                    // An early probe never holds back the usual one.
                    Admission::ProbeDue
                } else if state == EARLY {
                    Admission::Probing
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
        if !matches!(self.admission(), Admission::ProbeDue) {
            return false;
        }
        let state = self.state.load(Ordering::Acquire);
        let until = self.until_ms.load(Ordering::Acquire);
        let now = self.now_ms();
        let claimed = match state {
            // Ejected, or an early probe still out when the ejection ran out.
            EJECTED | EARLY => self
                .state
                .compare_exchange(state, PROBING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            // A probe lost without an outcome: one caller sends the next.
            PROBING => self
                .until_ms
                .compare_exchange(until, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
            _ => false,
        };
        if claimed {
            self.until_ms.store(now, Ordering::Release);
        }
        claimed
    }

    /// Claims an early probe of an ejected endpoint whose ejection has not
    /// run out (one that has is probed the usual way): at most one per
    /// [`EARLY_PROBE_SPACING`], and none while another is out unless that
    /// one has been out for [`PROBE_LOST_AFTER`]. The caller decides
    /// that an early probe is called for.
    pub(crate) fn try_probe_early(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        if state != EJECTED && state != EARLY {
            return false;
        }
        let now = self.now_ms();
        if now >= self.until_ms.load(Ordering::Acquire) {
            return false;
        }
        let last = self.early_at_ms.load(Ordering::Acquire);
        let wait = match state {
            EARLY => PROBE_LOST_AFTER,
            _ => EARLY_PROBE_SPACING,
        };
        if last != NEVER && now < last.saturating_add(wait.as_millis() as u64) {
            return false;
        }
        // The claim: one caller moves the time of the last early probe.
        self.early_at_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            && (state == EARLY
                || self
                    .state
                    .compare_exchange(EJECTED, EARLY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok())
    }

    /// In the balancer but failing: its failure streak reached the ejection
    /// threshold, so only the backend's ejection cap keeps it in.
    pub(crate) fn failing(&self, cfg: &OutlierConfig) -> bool {
        cfg.consecutive_failures > 0
            && self.consecutive.load(Ordering::Relaxed) >= cfg.consecutive_failures
            && self.state.load(Ordering::Acquire) == HEALTHY
    }

    pub(crate) fn on_success(&self, cfg: &OutlierConfig) -> Transition {
        // The common case (healthy, never ejected) touches no clock and
        // writes nothing that is not already zero.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        let state = self.state.load(Ordering::Acquire);
        let probing = state == PROBING || state == EARLY;
        let times = self.times_ejected.load(Ordering::Relaxed);
        if !probing && times == 0 {
            return Transition::None;
        }
        let now = self.now_ms();
        if probing
            && self
                .state
                .compare_exchange(state, HEALTHY, Ordering::AcqRel, Ordering::Acquire)
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
        if state == EARLY {
            // The early probe failed: the ejection stays as it was.
            return match self.state.compare_exchange(
                EARLY,
                EJECTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Transition::EarlyProbeFailed,
                Err(_) => Transition::None,
            };
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
            self.reason
                .store(Reason::Consecutive as u8, Ordering::Relaxed);
            return self.eject(cfg);
        }
        Transition::None
    }

    /// Ejects this endpoint, if healthy and the cap leaves room, because a
    /// sweep found its success rate far below its peers'. A failed probe
    /// later re-ejects it for the same reason.
    pub(crate) fn eject_for_success_rate(
        &self,
        cfg: &OutlierConfig,
        may_eject: impl FnOnce() -> bool,
    ) -> Transition {
        if self.state.load(Ordering::Acquire) != HEALTHY
            || !may_eject()
            || self
                .state
                .compare_exchange(HEALTHY, EJECTED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Transition::None;
        }
        self.reason
            .store(Reason::SuccessRate as u8, Ordering::Relaxed);
        self.eject(cfg)
    }

    /// Why the current (or, when healthy, the last) ejection happened.
    pub(crate) fn reason(&self) -> Reason {
        Reason::load(&self.reason)
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

    #[tokio::test(start_paused = true)]
    async fn a_probe_lost_without_an_outcome_lets_another_go() {
        let o = Outlier::default();
        let c = cfg();
        for _ in 0..3 {
            o.on_failure(&c, || true);
        }
        tokio::time::advance(Duration::from_secs(45)).await;
        assert!(o.try_probe(), "the due probe");
        assert_eq!(
            o.admission(),
            Admission::Probing,
            "claimed late, still counted from now"
        );
        tokio::time::advance(PROBE_LOST_AFTER - Duration::from_millis(1)).await;
        assert!(!o.try_probe());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            o.admission(),
            Admission::ProbeDue,
            "the first is taken as lost"
        );
        assert!(o.try_probe());
        assert!(!o.try_probe(), "one at a time");
        assert_eq!(o.on_success(&c), Transition::Restored);
    }

    fn cfg() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            success_rate: None,
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

    /// Ejects `o` with `c` (after `c.consecutive_failures` failures).
    fn eject(o: &Outlier, c: &OutlierConfig) -> Transition {
        (1..c.consecutive_failures).for_each(|_| {
            o.on_failure(c, || true);
        });
        o.on_failure(c, || true)
    }

    #[tokio::test(start_paused = true)]
    async fn failing_means_the_streak_reached_the_threshold_while_in() {
        let o = Outlier::default();
        let c = cfg();
        o.on_failure(&c, || false);
        o.on_failure(&c, || false);
        assert!(!o.failing(&c), "two failures are a streak, not failing");
        assert_eq!(o.on_failure(&c, || false), Transition::None, "the cap");
        assert!(o.failing(&c), "due for ejection, kept in by the cap");
        o.on_failure(&c, || false);
        assert!(o.failing(&c));
        o.on_success(&c);
        assert!(!o.failing(&c), "a success ends it");
        eject(&o, &c);
        assert!(!o.failing(&c), "ejected is not 'in but failing'");
        let off = OutlierConfig {
            consecutive_failures: 0,
            ..cfg()
        };
        let p = Outlier::default();
        (0..10).for_each(|_| {
            p.on_failure(&off, || false);
        });
        assert!(!p.failing(&off), "detection off: never failing");
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_probe_that_answers_restores_before_the_ejection_ends() {
        let o = Outlier::default();
        let c = cfg();
        assert!(!o.try_probe_early(), "nothing to probe when healthy");
        assert_eq!(eject(&o, &c), Transition::Ejected(Duration::from_secs(30)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!o.try_probe(), "the usual probe is not due");
        assert!(o.try_probe_early());
        assert_eq!(o.admission(), Admission::Probing);
        assert!(o.is_ejected(), "out of the balancer while it probes");
        assert!(!o.try_probe_early(), "one probe at a time");
        assert!(!o.try_probe());
        assert_eq!(o.on_success(&c), Transition::Restored);
        assert_eq!(o.admission(), Admission::Open);
        assert_eq!(o.times_ejected(), 1, "the multiplier decays as usual");
        // The next ejection lasts longer, as after any ejection.
        assert_eq!(eject(&o, &c), Transition::Ejected(Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_early_probe_leaves_the_ejection_as_it_was() {
        let o = Outlier::default();
        let c = cfg();
        eject(&o, &c);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(o.try_probe_early());
        assert_eq!(o.on_failure(&c, || true), Transition::EarlyProbeFailed);
        assert_eq!(
            o.admission(),
            Admission::Ejected(Duration::from_secs(20)),
            "same end as before the probe"
        );
        assert_eq!(o.times_ejected(), 1, "not lengthened");
        assert!(!o.try_probe_early(), "spaced");
        tokio::time::advance(EARLY_PROBE_SPACING - Duration::from_millis(1)).await;
        assert!(!o.try_probe_early(), "spaced");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(o.try_probe_early(), "another after the spacing");
        assert_eq!(o.on_failure(&c, || true), Transition::EarlyProbeFailed);
        // Its ejection runs out: the usual probe, and a failure there re-ejects for base × 2.
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(o.admission(), Admission::ProbeDue);
        assert!(!o.try_probe_early(), "due: probed the usual way");
        assert!(o.try_probe());
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_probe_never_holds_back_the_usual_one() {
        let o = Outlier::default();
        let c = cfg();
        eject(&o, &c);
        assert!(o.try_probe_early());
        // Its outcome is not in when the ejection runs out: the usual probe goes.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(o.admission(), Admission::ProbeDue);
        assert!(!o.try_probe_early(), "due: probed the usual way");
        assert!(o.try_probe());
        assert_eq!(o.admission(), Admission::Probing);
        assert!(!o.try_probe(), "exactly one usual probe");
        // A failure now, from either probe, re-ejects for base × 2.
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(60))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_probe_without_an_outcome_is_taken_as_lost() {
        let o = Outlier::default();
        let c = cfg();
        eject(&o, &c);
        assert!(o.try_probe_early());
        tokio::time::advance(PROBE_LOST_AFTER - Duration::from_millis(1)).await;
        assert!(!o.try_probe_early(), "still out");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(o.try_probe_early(), "lost: another goes");
        assert!(!o.try_probe_early(), "one claim per lapse");
        assert_eq!(o.admission(), Admission::Probing);
        assert_eq!(o.on_success(&c), Transition::Restored);
        assert_eq!(o.on_success(&c), Transition::None, "the other's outcome");
        assert_eq!(o.admission(), Admission::Open);
    }
}
