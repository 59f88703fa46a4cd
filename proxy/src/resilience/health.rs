//! An endpoint's active health-check state: `unhealthyThreshold` failed
//! checks in a row take it out of the balancer, `healthyThreshold`
//! successes bring it back. Endpoints start healthy, so turning checks on
//! never causes an outage. The checks themselves run in
//! `backend::health_check`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// One endpoint's check state.
#[derive(Debug, Default)]
pub(crate) struct Health {
    unhealthy: AtomicBool,
    successes: AtomicU32,
    failures: AtomicU32,
    checked: AtomicBool,
    pub(crate) failed_total: AtomicU64,
    /// Why the last check failed (admin only; never read on the request path).
    pub(crate) last_error: Mutex<Option<String>>,
}

impl Health {
    pub(crate) fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }

    /// "unchecked", "healthy" or "unhealthy", for `/endpoints`.
    pub(crate) fn label(&self) -> &'static str {
        match (self.checked.load(Ordering::Relaxed), self.is_unhealthy()) {
            (false, _) => "unchecked",
            (true, false) => "healthy",
            (true, true) => "unhealthy",
        }
    }

    /// Records one check; returns Some(new unhealthy state) on a change.
    pub(crate) fn record(
        &self,
        result: Result<(), String>,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        self.checked.store(true, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.failures.store(0, Ordering::Relaxed);
                let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
                if self.is_unhealthy() && n >= healthy_threshold.max(1) {
                    self.unhealthy.store(false, Ordering::Relaxed);
                    return Some(false);
                }
            }
            Err(e) => {
                self.successes.store(0, Ordering::Relaxed);
                self.failed_total.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = self.last_error.lock() {
                    *l = Some(e);
                }
                let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.is_unhealthy() && n >= unhealthy_threshold.max(1) {
                    self.unhealthy.store(true, Ordering::Relaxed);
                    return Some(true);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let h = Health::default();
        assert_eq!(h.label(), "unchecked");
        assert_eq!(h.record(Err("x".into()), 2, 3), None);
        assert_eq!(h.record(Err("x".into()), 2, 3), None);
        assert_eq!(h.record(Err("x".into()), 2, 3), Some(true));
        assert!(h.is_unhealthy());
        assert_eq!(h.record(Ok(()), 2, 3), None);
        assert_eq!(h.record(Ok(()), 2, 3), Some(false));
        assert_eq!(h.label(), "healthy");
        assert_eq!(h.failed_total.load(Ordering::Relaxed), 3);
    }
}
