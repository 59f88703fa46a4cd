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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilience::success_rate::SuccessRateConfig;
    use crate::telemetry::metrics::Metrics;

    /// A RoundRobin backend over five loopback addresses (never dialled)
    /// with success-rate ejection at 10 tries per interval, `factor`
    /// deviations and `cap` % at most ejected.
    fn backend(metrics: &Metrics, factor: f64, cap: u32) -> Arc<Backend> {
        let policy = format!("  outlierDetection:\n    maxEjectionPercent: {cap}\n    successRate: {{requestVolume: 10, stdevFactor: {factor}}}\n");
        super::super::loopback_backend(5, &policy, metrics)
    }

    /// Records `ok` successes then `bad` failures on endpoint `i`.
    fn tries(b: &Backend, i: usize, ok: usize, bad: usize) {
        let ep = b.endpoints.load().endpoints[i].clone();
        (0..ok).for_each(|_| ep.outlier.window.record(true));
        (0..bad).for_each(|_| ep.outlier.window.record(false));
    }

    fn reasons(b: &Backend) -> Vec<Option<Reason>> {
        b.endpoints
            .load()
            .endpoints
            .iter()
            .map(|e| e.outlier.is_ejected().then(|| e.outlier.reason()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_ejects_the_outlier_and_starts_every_window_over() {
        let m = Metrics::new();
        let b = backend(&m, 1.9, 50);
        assert_eq!(
            b.resilience.outlier.success_rate,
            Some(SuccessRateConfig {
                minimum_hosts: 5,
                request_volume: 10,
                stdev_factor: 1.9
            })
        );
        for i in 0..4 {
            tries(&b, i, 20, 0);
        }
        tries(&b, 4, 14, 6);
        sweep(&b);
        let out = Some(Reason::SuccessRate);
        assert_eq!(reasons(&b), vec![None, None, None, None, out]);
        assert_eq!(
            b.resilience
                .sweeps
                .count
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        let text = {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &m.registry).unwrap();
            t
        };
        assert!(
            text.contains(
                "weft_ejections_total{backend=\"default/svc\",reason=\"success-rate\"} 1"
            ),
            "{text}"
        );
        // The next interval: four left, under minimumHosts; nothing more goes.
        for i in 0..4 {
            tries(&b, i, 20, i);
        }
        sweep(&b);
        assert_eq!(reasons(&b), vec![None, None, None, None, out]);
        assert_eq!(
            b.endpoints.load().endpoints[0].outlier.window.last().total,
            20
        );
        // Too few tries everywhere: nobody is judged.
        tries(&b, 0, 0, 9);
        sweep(&b);
        assert_eq!(
            b.resilience
                .sweeps
                .last_qualifying
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(reasons(&b), vec![None, None, None, None, out]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_cap_keeps_all_but_the_worst_outlier_in() {
        let m = Metrics::new();
        let b = backend(&m, 1.9, 20);
        // Rates 1, 1, 1, 0.1, 0.2 (mean 0.66, deviation 0.4176): 1.9
        // deviations put the threshold below 0, so neither goes.
        let interval = |b: &Backend| {
            (0..3).for_each(|i| tries(b, i, 20, 0));
            tries(b, 3, 2, 18);
            tries(b, 4, 4, 16);
        };
        interval(&b);
        sweep(&b);
        assert_eq!(reasons(&b), vec![None; 5]);
        // One deviation (threshold 0.2424): both are outliers, but 20 % of
        // five is one endpoint: the worst goes.
        let b = backend(&m, 1.0, 20);
        interval(&b);
        sweep(&b);
        let out = Some(Reason::SuccessRate);
        assert_eq!(reasons(&b), vec![None, None, None, out, None]);
    }

    /// The ejection goes through the outlier state machine: the cap, the
    /// growing ejection time, the half-open probe, and the reason kept.
    #[tokio::test(start_paused = true)]
    async fn an_ejection_for_success_rate_is_an_ordinary_ejection_with_its_reason() {
        use crate::resilience::outlier::{Admission, Outlier, OutlierConfig};
        use std::time::Duration;
        let c = OutlierConfig {
            consecutive_failures: 2,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            success_rate: Some(SuccessRateConfig {
                minimum_hosts: 5,
                request_volume: 100,
                stdev_factor: 1.9,
            }),
        };
        let o = Outlier::default();
        assert_eq!(
            o.eject_for_success_rate(&c, || false),
            Transition::None,
            "the cap"
        );
        assert_eq!(o.admission(), Admission::Open);
        assert_eq!(
            o.eject_for_success_rate(&c, || true),
            Transition::Ejected(Duration::from_secs(30))
        );
        assert_eq!(o.reason(), Reason::SuccessRate);
        assert_eq!(
            o.eject_for_success_rate(&c, || true),
            Transition::None,
            "already out"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(o.try_probe());
        // The probe fails: out again, for longer, for the same reason.
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(60))
        );
        assert_eq!(o.reason(), Reason::SuccessRate);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(o.try_probe());
        assert_eq!(o.on_success(&c), Transition::Restored);
        // Consecutive failures now: that reason.
        o.on_failure(&c, || true);
        assert_eq!(
            o.on_failure(&c, || true),
            Transition::Ejected(Duration::from_secs(90))
        );
        assert_eq!(o.reason(), Reason::Consecutive);
    }
}
