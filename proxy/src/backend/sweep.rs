//! The success-rate sweep of one backend: every `outlierDetection.interval`
//! it takes each endpoint's counts of that interval, judges them
//! (`resilience::success_rate::judge`) and ejects the outliers, worst first,
//! as far as `maxEjectionPercent` allows. Only backends with
//! `successRate` configured have one. The task holds its backend weakly
//! and ends at the first tick after a config change drops it.

use super::Backend;
use crate::resilience::outlier::Transition;
use crate::resilience::success_rate::{judge, Reason, Sample};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Starts the backend's sweep, if success-rate ejection is on.
pub(crate) fn spawn(backend: &Arc<Backend>) {
    if backend.resilience.outlier.success_rate.is_none() {
        return;
    }
    // A zero interval is refused by validation; never spin regardless.
    let every = backend
        .resilience
        .outlier
        .interval
        .max(Duration::from_millis(10));
    let weak: Weak<Backend> = Arc::downgrade(backend);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + every;
        let mut tick = tokio::time::interval_at(start, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(backend) = weak.upgrade() else {
                return;
            };
            sweep(&backend);
        }
    });
}

/// One sweep: ends the interval of every endpoint and ejects the outliers.
pub(crate) fn sweep(backend: &Backend) {
    let cfg = &backend.resilience.outlier;
    let Some(sr) = &cfg.success_rate else {
        return;
    };
    let set = backend.endpoints.load();
    let eps = &set.endpoints;
    // Every window starts over; an endpoint out of the balancer now (its
    // few probe tries say little) is not judged.
    let samples: Vec<Sample> = eps
        .iter()
        .map(|e| {
            let s = e.outlier.window.take();
            match e.outlier.is_ejected() || e.health.is_unhealthy() {
                true => Sample::default(),
                false => s,
            }
        })
        .collect();
    let verdict = judge(&samples, sr);
    backend.resilience.sweeps.note(&verdict);
    let total = eps.len().max(1);
    for i in &verdict.outliers {
        let ep = &eps[*i];
        let t = ep.outlier.eject_for_success_rate(cfg, || {
            (backend.unavailable() + 1) * 100 <= cfg.max_ejection_percent as usize * total
        });
        if let Transition::Ejected(d) = t {
            let s = samples[*i];
            tracing::warn!(
                backend = %backend.key, endpoint = %ep.addr, ejected_for = ?d,
                successes = s.successes, tries = s.total,
                threshold = verdict.threshold.unwrap_or_default(),
                "endpoint ejected: success rate far below its peers'"
            );
            backend.metrics.ejection(Reason::SuccessRate.label());
            backend
                .metrics
                .ejected_endpoints
                .set(backend.unavailable() as i64);
        }
    }
}
