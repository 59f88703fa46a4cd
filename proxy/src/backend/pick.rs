//! Choosing an endpoint for one try: the balancer's choice among the
//! endpoints that are neither ejected nor failing their checks, with panic
//! mode when too few are left, and an early probe of an ejected endpoint
//! when every one left is failing (the ejection cap keeps them in; see
//! `resilience::outlier` for why this and not a swap).

use super::endpoint::Endpoint;
use super::Backend;
use crate::resilience::outlier::Admission;
use std::net::SocketAddr;
use std::sync::Arc;

/// In the balancer: passing its checks, and not ejected (or due a probe).
#[inline]
fn usable(e: &Endpoint) -> bool {
    !e.health.is_unhealthy()
        && matches!(e.outlier.admission(), Admission::Open | Admission::ProbeDue)
}

impl Backend {
    /// Chooses an endpoint: never one already `tried` by this request when
    /// another exists; never an ejected or unhealthy one — unless fewer than
    /// `panicThreshold` % are available, when all of them share the load
    /// rather than overloading the few left (panic mode). A half-open
    /// (previously ejected) endpoint picked here has its single probe
    /// claimed by this try. When every endpoint in the balancer is failing
    /// (kept in only by `maxEjectionPercent`), an ejected one not yet tried
    /// is probed early instead.
    pub(crate) fn pick(&self, hash: Option<u64>, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let available = eps.iter().filter(|e| usable(e)).count();
        let panic = (available as u64) * 100
            < u64::from(self.resilience.panic_threshold) * eps.len() as u64;
        self.note_panic(panic, available, eps.len());
        // With every endpoint in, nothing is ejected: no further look.
        if !panic && available < eps.len() {
            if let Some(probe) = self.probe_early(eps, tried) {
                return Some(probe);
            }
        }
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

    /// An ejected endpoint (not yet `tried`, passing its checks) whose early
    /// probe this try claims, when every endpoint in the balancer is failing.
    fn probe_early(&self, eps: &[Arc<Endpoint>], tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let cfg = &self.resilience.outlier;
        if eps.iter().any(|e| usable(e) && !e.outlier.failing(cfg)) {
            return None;
        }
        let endpoint = eps.iter().find(|e| {
            !e.health.is_unhealthy() && !tried.contains(&e.addr) && e.outlier.try_probe_early()
        })?;
        tracing::debug!(backend = %self.key, endpoint = %endpoint.addr, "every endpoint left is failing: probing an ejected one early");
        Some(endpoint.clone())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::outlier::{Transition, EARLY_PROBE_SPACING};
    use crate::telemetry::metrics::Metrics;

    /// A RoundRobin backend over `n` loopback addresses (never dialled),
    /// with the default outlier settings (5 failures, at most 50 % out).
    fn backend(n: usize) -> Arc<Backend> {
        super::super::loopback_backend(n, "", &Metrics::new())
    }

    fn ep(b: &Backend, i: usize) -> Arc<Endpoint> {
        b.endpoints.load().endpoints[i].clone()
    }

    /// Reports `n` failures of endpoint `i`, under the ejection cap.
    fn fail(b: &Backend, i: usize, n: usize) -> Transition {
        let cfg = &b.resilience.outlier;
        let total = b.endpoints.load().endpoints.len();
        let mut t = Transition::None;
        for _ in 0..n {
            t = ep(b, i).outlier.on_failure(cfg, || {
                (b.unavailable() + 1) * 100 <= cfg.max_ejection_percent as usize * total
            });
        }
        t
    }

    fn picked(b: &Backend, tried: &[SocketAddr]) -> SocketAddr {
        b.pick(None, tried).unwrap().addr
    }

    #[tokio::test(start_paused = true)]
    async fn every_endpoint_left_failing_brings_an_ejected_one_an_early_probe() {
        let b = backend(2);
        let (a, d) = (ep(&b, 0), ep(&b, 1));
        assert!(matches!(fail(&b, 0, 5), Transition::Ejected(_)));
        assert_eq!(fail(&b, 1, 5), Transition::None, "the cap keeps it in");
        assert!(d.outlier.failing(&b.resilience.outlier));
        assert_eq!(picked(&b, &[]), a.addr, "probed early");
        assert_eq!(a.outlier.admission(), Admission::Probing);
        assert_eq!(picked(&b, &[]), d.addr, "one probe at a time");
        // The probe fails: no other before the spacing.
        assert_eq!(
            a.outlier.on_failure(&b.resilience.outlier, || true),
            Transition::EarlyProbeFailed
        );
        for _ in 0..10 {
            assert_eq!(picked(&b, &[]), d.addr);
        }
        tokio::time::advance(EARLY_PROBE_SPACING).await;
        assert_eq!(picked(&b, &[]), a.addr, "probed again");
        assert_eq!(
            a.outlier.on_success(&b.resilience.outlier),
            Transition::Restored
        );
        let both: Vec<_> = (0..4).map(|_| picked(&b, &[])).collect();
        assert!(both.contains(&a.addr) && both.contains(&d.addr), "{both:?}");
        // With room under the cap, the failing one goes on its next failure.
        assert!(matches!(fail(&b, 1, 1), Transition::Ejected(_)));
        for _ in 0..4 {
            assert_eq!(picked(&b, &[]), a.addr);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_probes_early_but_never_an_endpoint_it_tried() {
        let b = backend(2);
        let (a, d) = (ep(&b, 0), ep(&b, 1));
        fail(&b, 0, 5);
        fail(&b, 1, 5);
        assert_eq!(picked(&b, &[a.addr]), d.addr);
        assert!(a.outlier.is_ejected() && !a.outlier.try_probe());
        assert_eq!(picked(&b, &[d.addr]), a.addr, "the retry probes");
    }

    #[tokio::test(start_paused = true)]
    async fn no_early_probe_while_one_endpoint_left_is_sound() {
        let b = backend(3);
        let a = ep(&b, 0);
        assert!(matches!(fail(&b, 0, 5), Transition::Ejected(_)));
        assert_eq!(fail(&b, 1, 5), Transition::None, "the cap keeps it in");
        for _ in 0..20 {
            assert_ne!(picked(&b, &[]), a.addr);
        }
        assert!(matches!(a.outlier.admission(), Admission::Ejected(_)));
        // Short of the threshold is not failing either.
        let b = backend(2);
        let a = ep(&b, 0);
        fail(&b, 0, 5);
        fail(&b, 1, 4);
        for _ in 0..10 {
            assert_ne!(picked(&b, &[]), a.addr);
        }
    }
}
