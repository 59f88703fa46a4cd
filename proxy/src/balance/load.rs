//! Per-endpoint live load statistics, shared between the request path (which
//! updates them) and the balancer (which reads them to compare endpoints).
//!
//! Everything here is lock-free: counters are plain atomics and the peak-EWMA
//! is a racy load/compute/store. Two observations racing can lose one update;
//! that is acceptable because the numbers are only a hint for choosing between
//! endpoints, and avoiding CAS loops keeps the hot path to a few instructions.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Latency assumed for an endpoint that has not answered yet. Moderate on
/// purpose: new endpoints look neither free (which would stampede them) nor
/// terrible (which would starve them of the traffic needed to measure them).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(10);

/// Time constant of the peak-EWMA decay (as in Finagle/Linkerd): an old
/// observation's influence falls to 1/e after this long, so a latency spike
/// is forgotten within tens of seconds and an idle endpoint gets re-probed.
pub(crate) const DECAY: Duration = Duration::from_secs(10);

/// Live load of one endpoint: in-flight requests and a peak-EWMA of latency.
///
/// Held in an `Arc` so that request guards can outlive a balancer rebuild.
#[derive(Debug)]
pub(crate) struct Load {
    active: AtomicU32,
    /// `f64` nanoseconds, stored as bits so it fits in an atomic.
    ewma_bits: AtomicU64,
    /// Nanoseconds since [`epoch`] of the last observation; 0 = never observed.
    stamp_ns: AtomicU64,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

impl Load {
    /// Creates idle stats that report [`DEFAULT_RTT`] until the first observation.
    pub(crate) fn new() -> Self {
        Load {
            active: AtomicU32::new(0),
            ewma_bits: AtomicU64::new(0f64.to_bits()),
            stamp_ns: AtomicU64::new(0),
        }
    }

    /// Counts a request as in flight until the returned guard is dropped, so
    /// the count stays right even when a request future is cancelled.
    pub(crate) fn start(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            load: Arc::clone(self),
        }
    }

    /// Requests currently in flight; what least-request balancing compares.
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Feeds one latency sample (time to response headers) into the peak-EWMA.
    #[cfg(test)]
    pub(crate) fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, now_ns());
    }

    /// Observes the time since `started`, reading the clock once; returns it.
    pub(crate) fn observe_since(&self, started: Instant) -> Duration {
        let now = Instant::now();
        let rtt = now.saturating_duration_since(started);
        let now_ns =
            u64::try_from(now.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX);
        self.observe_at(rtt, now_ns);
        rtt
    }

    /// Current latency estimate, decayed towards zero for the time since the
    /// last observation so that an endpoint that stopped getting traffic after
    /// a slow spell is eventually tried again. [`DEFAULT_RTT`] before any sample.
    pub(crate) fn ewma(&self) -> Duration {
        let ns = self.ewma_ns_at(now_ns());
        // `as` saturates and maps NaN to 0, so this cannot panic.
        Duration::from_nanos(ns as u64)
    }

    /// The estimate in nanoseconds at `now`; the balancer reads one clock value
    /// per pick and compares endpoints at that same instant.
    pub(super) fn ewma_ns_at(&self, now: u64) -> f64 {
        // Acquire pairs with the Release in `observe_at`: once a stamp is
        // visible, so is the value written before it.
        let stamp = self.stamp_ns.load(Ordering::Acquire);
        if stamp == 0 {
            return DEFAULT_RTT.as_nanos() as f64;
        }
        let value = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        value * decay_weight(now.saturating_sub(stamp))
    }

    /// `observe` with an explicit clock so tests can step time without sleeping.
    fn observe_at(&self, rtt: Duration, now: u64) {
        let rtt = rtt.as_nanos() as f64;
        let stamp = self.stamp_ns.load(Ordering::Acquire);
        let current = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let next = if stamp == 0 || rtt > current {
            // First sample seeds the estimate; a slower sample is taken as the
            // new peak immediately so the balancer backs off a degrading endpoint fast.
            rtt
        } else {
            let w = decay_weight(now.saturating_sub(stamp));
            current * w + rtt * (1.0 - w)
        };
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
        // Never store 0: it means "never observed".
        self.stamp_ns.store(now.max(1), Ordering::Release);
    }
}

/// Weight kept by the old estimate after `elapsed_ns`: exp(-elapsed/tau).
fn decay_weight(elapsed_ns: u64) -> f64 {
    (-(elapsed_ns as f64) / DECAY.as_nanos() as f64).exp()
}

/// Process-wide time origin, so timestamps fit in an `AtomicU64`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`] (u64 lasts ~584 years, saturating beyond).
pub(super) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Marks one in-flight request; decrements the endpoint's count when dropped.
///
/// Owns an `Arc<Load>` so it can travel with a spawned request future.
#[must_use = "the request is counted as finished as soon as the guard is dropped"]
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    load: Arc<Load>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.load.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const TAU: u64 = 10_000 * MS;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-9 + 1.0
    }

    #[test]
    fn starts_idle_with_default_rtt() {
        let load = Load::default();
        assert_eq!(load.active(), 0);
        assert_eq!(load.ewma(), DEFAULT_RTT);
    }

    #[test]
    fn guard_tracks_active_requests_across_threads() {
        let load = Arc::new(Load::new());
        let a = load.start();
        let b = load.start();
        assert_eq!(load.active(), 2);
        std::thread::spawn(move || drop(a)).join().unwrap();
        assert_eq!(load.active(), 1);
        drop(b);
        assert_eq!(load.active(), 0);
    }

    #[test]
    fn first_sample_replaces_default_and_peaks_win_immediately() {
        let load = Load::new();
        load.observe_at(Duration::from_millis(2), 5 * MS);
        assert!(close(load.ewma_ns_at(5 * MS), (2 * MS) as f64));
        load.observe_at(Duration::from_millis(80), 5 * MS + 1);
        assert!(close(load.ewma_ns_at(5 * MS + 1), (80 * MS) as f64));
    }

    #[test]
    fn lower_sample_blends_by_elapsed_time() {
        let load = Load::new();
        load.observe_at(Duration::from_millis(100), MS);
        load.observe_at(Duration::from_millis(10), MS + TAU);
        let w = (-1f64).exp();
        let want = 100.0 * MS as f64 * w + 10.0 * MS as f64 * (1.0 - w);
        assert!(close(load.ewma_ns_at(MS + TAU), want));
    }

    #[test]
    fn same_instant_lower_sample_keeps_peak() {
        let load = Load::new();
        load.observe_at(Duration::from_millis(50), MS);
        load.observe_at(Duration::from_millis(1), MS);
        assert!(close(load.ewma_ns_at(MS), (50 * MS) as f64));
    }

    #[test]
    fn estimate_decays_towards_zero_while_idle() {
        let load = Load::new();
        load.observe_at(Duration::from_millis(100), MS);
        let later = load.ewma_ns_at(MS + 2 * TAU);
        assert!(close(later, 100.0 * MS as f64 * (-2f64).exp()));
        assert!(load.ewma_ns_at(MS + 100 * TAU) < 1.0);
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let load = Load::new();
        load.observe_at(Duration::from_millis(30), 10 * MS);
        load.observe_at(Duration::from_millis(5), MS);
        assert!(close(load.ewma_ns_at(0), (30 * MS) as f64));
    }

    #[test]
    fn extreme_durations_do_not_panic() {
        let load = Load::new();
        load.observe(Duration::MAX);
        let _ = load.ewma();
        load.observe(Duration::ZERO);
        load.observe_at(Duration::ZERO, u64::MAX);
        assert!(load.ewma_ns_at(u64::MAX).is_finite());
    }
}
