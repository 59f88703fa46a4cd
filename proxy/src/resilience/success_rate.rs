//! Success-rate outlier detection: each endpoint counts its tries in the
//! current `interval`, and a sweep every interval ejects the endpoints whose
//! success rate is below the mean of their peers' minus `stdevFactor`
//! standard deviations (the population deviation), judging only endpoints
//! with at least `requestVolume` tries and only when at least
//! `minimumHosts` of them have that many.
//!
//! What counts: a try the consecutive-failure rule calls a failure (a 5xx,
//! a connect error, a reset or malformed answer, a timeout) is a failure; a
//! response below 500 is a success; a try that never reached the endpoint's
//! application (refused at this proxy's own limits, a refused stream, a
//! pooled connection found closed) counts neither way.
//!
//! The judgement is [`judge`], a pure function; the counters are one
//! atomic per endpoint; the sweep task lives in `backend::sweep` and ejects
//! through the endpoint's outlier state machine, so the ejection cap,
//! the growing ejection time and the half-open return all apply.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use weft_mesh::config::defaults as d;
use weft_mesh::config::success_rate::SuccessRate;

/// `outlierDetection.successRate` with its defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SuccessRateConfig {
    pub(crate) minimum_hosts: u32,
    pub(crate) request_volume: u32,
    pub(crate) stdev_factor: f64,
}

impl SuccessRateConfig {
    /// `None` (off) when the block is absent.
    pub(crate) fn of(spec: Option<&SuccessRate>) -> Option<SuccessRateConfig> {
        spec.map(|s| SuccessRateConfig {
            minimum_hosts: s.minimum_hosts.unwrap_or(d::SUCCESS_RATE_MINIMUM_HOSTS),
            request_volume: s.request_volume.unwrap_or(d::SUCCESS_RATE_REQUEST_VOLUME),
            stdev_factor: s.stdev_factor.unwrap_or(d::SUCCESS_RATE_STDEV_FACTOR),
        })
    }
}

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reason {
    Consecutive = 0,
    SuccessRate = 1,
}

impl Reason {
    /// As in `weft_ejections_total{reason}` and `/endpoints`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::Consecutive => "consecutive",
            Reason::SuccessRate => "success-rate",
        }
    }

    pub(crate) fn load(a: &AtomicU8) -> Reason {
        match a.load(Ordering::Relaxed) {
            1 => Reason::SuccessRate,
            _ => Reason::Consecutive,
        }
    }
}

/// One endpoint's tries in an interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) successes: u64,
    pub(crate) total: u64,
}

/// Both counts in one word (tries in the high half, successes in the low
/// half), so a try is one relaxed `fetch_add` and the sweep takes a
/// consistent pair with one `swap`. 2³² tries per endpoint per interval
/// is out of reach.
const ONE_TRY: u64 = 1 << 32;

/// An endpoint's counters: the interval running now, and the last one.
#[derive(Debug, Default)]
pub(crate) struct Window {
    now: AtomicU64,
    last: AtomicU64,
}

impl Window {
    /// Counts one try (only called when success-rate detection is on).
    #[inline]
    pub(crate) fn record(&self, success: bool) {
        self.now
            .fetch_add(ONE_TRY + u64::from(success), Ordering::Relaxed);
    }

    /// Ends the interval: its counts, kept as [`last`](Window::last).
    pub(crate) fn take(&self) -> Sample {
        let v = self.now.swap(0, Ordering::Relaxed);
        self.last.store(v, Ordering::Relaxed);
        unpack(v)
    }

    /// The counts of the last interval swept.
    pub(crate) fn last(&self) -> Sample {
        unpack(self.last.load(Ordering::Relaxed))
    }
}

fn unpack(v: u64) -> Sample {
    Sample {
        successes: v & (ONE_TRY - 1),
        total: v >> 32,
    }
}

/// What one sweep found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Verdict {
    /// Endpoints with at least `requestVolume` tries.
    pub(crate) qualifying: usize,
    /// Below this rate (0–1) an endpoint is an outlier; `None` when fewer
    /// than `minimumHosts` qualified.
    pub(crate) threshold: Option<f64>,
    /// Indices into the samples, lowest success rate first.
    pub(crate) outliers: Vec<usize>,
}

/// Rates closer than this count as equal: keeps float rounding from making
/// an outlier of an endpoint whose rate equals the mean.
const EPSILON: f64 = 1e-9;

/// Judges one interval's samples (one per endpoint; an endpoint that is
/// not to be judged, e.g. already ejected, has an empty sample).
pub(crate) fn judge(samples: &[Sample], cfg: &SuccessRateConfig) -> Verdict {
    let volume = u64::from(cfg.request_volume.max(1));
    let rates: Vec<(usize, f64)> = samples
        .iter()
        .enumerate()
        .filter(|(_, s)| s.total >= volume)
        .map(|(i, s)| (i, s.successes.min(s.total) as f64 / s.total as f64))
        .collect();
    let n = rates.len();
    let mut verdict = Verdict {
        qualifying: n,
        ..Verdict::default()
    };
    if n == 0 || n < cfg.minimum_hosts as usize {
        return verdict;
    }
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n as f64;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n as f64;
    let threshold = mean - cfg.stdev_factor * variance.sqrt();
    verdict.threshold = Some(threshold);
    let mut out: Vec<(usize, f64)> = rates
        .into_iter()
        .filter(|(_, r)| *r + EPSILON < threshold)
        .collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    verdict.outliers = out.into_iter().map(|(i, _)| i).collect();
    verdict
}

/// A backend's sweeps, for `/endpoints`.
#[derive(Debug, Default)]
pub(crate) struct Sweeps {
    pub(crate) count: AtomicU64,
    /// The last sweep's threshold as f64 bits (`u64::MAX`: none).
    threshold_bits: AtomicU64,
    pub(crate) last_qualifying: AtomicU64,
}

impl Sweeps {
    pub(crate) fn note(&self, v: &Verdict) {
        self.threshold_bits.store(
            v.threshold.map(f64::to_bits).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.last_qualifying
            .store(v.qualifying as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn last_threshold(&self) -> Option<f64> {
        match self.threshold_bits.load(Ordering::Relaxed) {
            u64::MAX => None,
            bits => Some(f64::from_bits(bits)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(minimum_hosts: u32, request_volume: u32, stdev_factor: f64) -> SuccessRateConfig {
        SuccessRateConfig {
            minimum_hosts,
            request_volume,
            stdev_factor,
        }
    }

    fn s(successes: u64, total: u64) -> Sample {
        Sample { successes, total }
    }

    #[test]
    fn one_outlier_among_five_is_the_only_one_ejected() {
        // Rates 1, 1, 1, 1, 0.7: mean 0.94, population deviation 0.12,
        // threshold 0.94 - 1.9 × 0.12 = 0.712.
        let samples = [
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(70, 100),
        ];
        let v = judge(&samples, &cfg(5, 100, 1.9));
        assert_eq!(v.qualifying, 5);
        assert!((v.threshold.unwrap() - 0.712).abs() < 1e-12, "{v:?}");
        assert_eq!(v.outliers, vec![4]);
        // A wider factor (2.1 deviations: threshold 0.688) spares it.
        assert_eq!(
            judge(&samples, &cfg(5, 100, 2.1)).outliers,
            Vec::<usize>::new()
        );
    }

    #[test]
    fn exact_threshold_with_noisy_peers() {
        // Rates .99 .98 .97 .96 .50 .95: mean 0.891667, population
        // deviation 0.175634, threshold with factor 1: 0.716033.
        let samples = [
            s(99, 100),
            s(98, 100),
            s(97, 100),
            s(96, 100),
            s(50, 100),
            s(95, 100),
        ];
        let v = judge(&samples, &cfg(5, 100, 1.0));
        assert!((v.threshold.unwrap() - 0.716_033).abs() < 1e-6, "{v:?}");
        assert_eq!(v.outliers, vec![4]);
        // Factor 2.1: threshold 0.522836, above 0.5 still; 2.3: 0.487706, below it.
        assert_eq!(judge(&samples, &cfg(5, 100, 2.1)).outliers, vec![4]);
        assert!(judge(&samples, &cfg(5, 100, 2.3)).outliers.is_empty());
    }

    #[test]
    fn fewer_than_minimum_hosts_qualifying_ejects_nothing() {
        let samples = [
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(0, 100),
        ];
        let v = judge(&samples, &cfg(6, 100, 1.9));
        assert_eq!((v.qualifying, v.threshold), (5, None));
        assert!(v.outliers.is_empty());
        // Five endpoints, but one below the volume: four qualify.
        let samples = [s(100, 100), s(100, 100), s(100, 100), s(99, 99), s(0, 100)];
        let v = judge(&samples, &cfg(5, 100, 1.9));
        assert_eq!((v.qualifying, v.threshold, v.outliers.len()), (4, None, 0));
        assert!(judge(&[], &cfg(1, 1, 1.9)).outliers.is_empty());
    }

    #[test]
    fn below_request_volume_is_not_judged_nor_counted_in_the_mean() {
        // The third has a rate of 0 but only 9 tries: not judged, and the
        // other four (all 1) have no deviation.
        let samples = [s(10, 10), s(10, 10), s(0, 9), s(10, 10), s(10, 10)];
        let v = judge(&samples, &cfg(4, 10, 1.9));
        assert_eq!((v.qualifying, v.threshold), (4, Some(1.0)));
        assert!(v.outliers.is_empty());
    }

    #[test]
    fn all_equal_ejects_nothing() {
        for rate in [0, 3, 7, 10] {
            let samples = vec![s(rate, 10); 7];
            for factor in [0.1, 1.0, 1.9] {
                let v = judge(&samples, &cfg(5, 10, factor));
                assert!(
                    v.outliers.is_empty(),
                    "rate {rate}/10 factor {factor}: {v:?}"
                );
            }
        }
    }

    #[test]
    fn several_outliers_worst_first() {
        let samples = [
            s(100, 100),
            s(40, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(100, 100),
            s(10, 100),
        ];
        let v = judge(&samples, &cfg(5, 100, 1.0));
        assert_eq!(v.outliers, vec![9, 1]);
    }

    #[test]
    fn a_window_counts_tries_and_successes_and_starts_over_when_taken() {
        let w = Window::default();
        for i in 0..10 {
            w.record(i % 3 != 0);
        }
        assert_eq!(w.take(), s(6, 10));
        assert_eq!(w.last(), s(6, 10));
        assert_eq!(w.take(), s(0, 0));
        assert_eq!(w.last(), s(0, 0));
    }
}
