//! Choosing an endpoint for one try: the balancer's choice among the
//! endpoints that are neither ejected nor failing their checks, with panic
//! mode when too few are left.

use super::endpoint::Endpoint;
use super::Backend;
use crate::resilience::outlier::Admission;
use std::net::SocketAddr;
use std::sync::Arc;

impl Backend {
    /// Chooses an endpoint: never one already `tried` by this request when
    /// another exists; never an ejected or unhealthy one — unless fewer than
    /// `panicThreshold` % are available, when all of them share the load
    /// rather than overloading the few left (panic mode). A half-open
    /// (previously ejected) endpoint picked here has its single probe
    /// claimed by this try.
    pub(crate) fn pick(&self, hash: Option<u64>, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let usable = |e: &Endpoint| {
            !e.health.is_unhealthy()
                && matches!(e.outlier.admission(), Admission::Open | Admission::ProbeDue)
        };
        let available = eps.iter().filter(|e| usable(e)).count();
        let panic = (available as u64) * 100
            < u64::from(self.resilience.panic_threshold) * eps.len() as u64;
        self.note_panic(panic, available, eps.len());
        let avoid = |i: usize| !panic && !usable(&eps[i]);
        let fresh = |i: usize| tried.contains(&eps[i].addr) || avoid(i);
        let mut idx = set.balancer.pick_filtered(eps, hash, fresh)?;
        if fresh(idx) {
            // Every usable endpoint was tried already: try one of them again
            // rather than one that is ejected or failing its checks.
            idx = set.balancer.pick_filtered(eps, hash, avoid)?;
        }
        let endpoint = eps[idx].clone();
        endpoint.outlier.try_probe();
        Some(endpoint)
    }

    /// Logs panic mode once on entry and once on exit, and keeps the gauge.
    fn note_panic(&self, panic: bool, available: usize, total: usize) {
        use std::sync::atomic::Ordering;
        if self.panic.load(Ordering::Relaxed) == panic {
            return;
        }
        if self.panic.swap(panic, Ordering::Relaxed) != panic {
            self.metrics.panic_mode.set(i64::from(panic));
            if panic {
                tracing::warn!(backend = %self.key, available, total, threshold = self.resilience.panic_threshold, "panic mode: too few healthy endpoints, balancing over all of them");
            } else {
                tracing::info!(backend = %self.key, available, total, "panic mode over");
            }
        }
    }

    /// How many endpoints are out of the balancer now (ejected or unhealthy).
    pub(crate) fn unavailable(&self) -> usize {
        self.endpoints
            .load()
            .endpoints
            .iter()
            .filter(|e| e.health.is_unhealthy() || e.outlier.is_ejected())
            .count()
    }
}
