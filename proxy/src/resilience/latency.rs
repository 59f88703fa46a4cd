//! A backend's recent latency, for hedging at a percentile of it: the
//! time from sending a try to its response headers, for the last
//! [`WINDOW`] tries that got headers.
//!
//! Lock-free: a ring of atomics written at a rotating index. A reader
//! copies the ring and selects the percentile (a few hundred integers,
//! done only for requests that may be hedged); a sample being overwritten
//! meanwhile is read as either its old or new value, which is fine for a
//! percentile. Until [`MIN_SAMPLES`] were seen there is no percentile and
//! no hedge is sent: a percentile of a handful of samples is noise.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use weft_mesh::config::defaults;

pub(crate) const WINDOW: usize = defaults::HEDGE_LATENCY_WINDOW;
pub(crate) const MIN_SAMPLES: usize = defaults::HEDGE_MIN_SAMPLES;

pub(crate) struct LatencyWindow {
    /// Microseconds, saturating at `u32::MAX` (over an hour).
    samples: Box<[AtomicU32; WINDOW]>,
    /// Samples ever recorded; the next goes at `seen % WINDOW`.
    seen: AtomicU64,
}

impl LatencyWindow {
    pub(crate) fn new() -> LatencyWindow {
        LatencyWindow {
            samples: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
            seen: AtomicU64::new(0),
        }
    }

    /// Notes one try's time to response headers.
    pub(crate) fn record(&self, d: Duration) {
        let micros = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let i = self.seen.fetch_add(1, Ordering::Relaxed) as usize % WINDOW;
        self.samples[i].store(micros, Ordering::Relaxed);
    }

    /// The `pct` percentile (0 < pct < 100) of the window, or `None`
    /// before [`MIN_SAMPLES`] were recorded.
    pub(crate) fn percentile(&self, pct: f64) -> Option<Duration> {
        let n = (self.seen.load(Ordering::Relaxed) as usize).min(WINDOW);
        if n < MIN_SAMPLES {
            return None;
        }
        let mut v = [0u32; WINDOW];
        for (d, s) in v[..n].iter_mut().zip(self.samples.iter()) {
            *d = s.load(Ordering::Relaxed);
        }
        // Nearest rank: the smallest sample at or above pct % of them.
        let rank = ((pct / 100.0) * n as f64).ceil() as usize;
        let k = rank.clamp(1, n) - 1;
        let (_, kth, _) = v[..n].select_nth_unstable(k);
        Some(Duration::from_micros(*kth as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_until_warm() {
        let w = LatencyWindow::new();
        for _ in 0..MIN_SAMPLES - 1 {
            w.record(Duration::from_millis(5));
        }
        assert_eq!(w.percentile(50.0), None);
        w.record(Duration::from_millis(5));
        assert_eq!(w.percentile(50.0), Some(Duration::from_millis(5)));
    }

    #[test]
    fn nearest_rank_over_the_last_window() {
        let w = LatencyWindow::new();
        for ms in 1..=100u64 {
            w.record(Duration::from_millis(ms));
        }
        assert_eq!(w.percentile(95.0), Some(Duration::from_millis(95)));
        assert_eq!(w.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(w.percentile(99.9), Some(Duration::from_millis(100)));
        // A full window of slow samples pushes the old ones out.
        for _ in 0..WINDOW {
            w.record(Duration::from_millis(500));
        }
        assert_eq!(w.percentile(1.0), Some(Duration::from_millis(500)));
    }
}
