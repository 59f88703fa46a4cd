//! Retry budget: retries may add at most `percent` of the requests seen in
//! the last window, plus `min_per_second` × window, so retries cannot turn
//! an outage into a storm. Lock-free: per-second buckets of atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Seconds of history the budget looks at.
pub(crate) const WINDOW_SECS: u64 = 10;

struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

pub(crate) struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    epoch: Instant,
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl RetryBudget {
    pub(crate) fn new(percent: u32, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            percent: percent as u64,
            min_per_second: min_per_second as u64,
            epoch: Instant::now(),
            buckets: std::array::from_fn(|_| Bucket {
                second: AtomicU64::new(u64::MAX),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            }),
        }
    }

    fn now_second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_secs()
    }

    /// The bucket for this second, cleared if it last held an older second.
    /// (Two threads may both clear it; a lost count or two is acceptable.)
    fn bucket(&self, sec: u64) -> &Bucket {
        let b = &self.buckets[(sec % WINDOW_SECS) as usize];
        if b.second.load(Ordering::Acquire) != sec {
            b.requests.store(0, Ordering::Relaxed);
            b.retries.store(0, Ordering::Relaxed);
            b.second.store(sec, Ordering::Release);
        }
        b
    }

    fn totals(&self, now: u64) -> (u64, u64) {
        let mut req = 0;
        let mut ret = 0;
        for b in &self.buckets {
            let s = b.second.load(Ordering::Acquire);
            if s != u64::MAX && s + WINDOW_SECS > now && s <= now {
                req += b.requests.load(Ordering::Relaxed);
                ret += b.retries.load(Ordering::Relaxed);
            }
        }
        (req, ret)
    }

    /// Counts an original request (not a retry).
    #[cfg(test)]
    pub(crate) fn record_request(&self) {
        self.record_request_at(Instant::now());
    }

    /// Same, with the caller's clock reading (the request's start time).
    pub(crate) fn record_request_at(&self, now: Instant) {
        let sec = now.saturating_duration_since(self.epoch).as_secs();
        self.bucket(sec).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, or says no.
    pub(crate) fn try_retry(&self) -> bool {
        let now = self.now_second();
        let (req, ret) = self.totals(now);
        // Allowance over the window actually elapsed (a fresh budget is not
        // handed ten seconds of minimum retries at once).
        let elapsed = (now + 1).min(WINDOW_SECS);
        let allowed = req * self.percent / 100 + self.min_per_second * elapsed;
        if ret >= allowed {
            return false;
        }
        self.bucket(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How many retries the window holds now (for tests and `/endpoints`).
    pub(crate) fn window(&self) -> (u64, u64) {
        self.totals(self.now_second())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn percent_plus_minimum() {
        let b = RetryBudget::new(20, 1);
        for _ in 0..100 {
            b.record_request();
        }
        // 20 % of 100 + 1/s × 1 s elapsed = 21 retries.
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 21);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let b = RetryBudget::new(10, 0);
        for _ in 0..100 {
            b.record_request();
        }
        assert_eq!((0..50).filter(|_| b.try_retry()).count(), 10);
        tokio::time::advance(Duration::from_secs(WINDOW_SECS + 1)).await;
        // The old requests left the window: nothing to spend.
        assert!(!b.try_retry());
        for _ in 0..30 {
            b.record_request();
        }
        assert_eq!((0..50).filter(|_| b.try_retry()).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn minimum_alone_is_bounded_per_second() {
        let b = RetryBudget::new(20, 10);
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 10);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!((0..100).filter(|_| b.try_retry()).count(), 10);
    }
}
