//! A latency histogram whose `observe` is a few relaxed atomic adds.
//!
//! prometheus-client's own histogram takes a mutex per observation; on the
//! request path we take no shared lock, so we keep buckets as atomics and
//! plug into its encoder.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bucket upper bounds in seconds: 100µs to 10s, dense where sidecar
/// latencies live (sub-millisecond to tens of milliseconds).
pub(crate) const LATENCY_BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default)]
struct Inner {
    /// Per-bucket counts (not cumulative); the last slot is +Inf.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Cheap to clone (an `Arc`); clones share counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct LatencyHistogram {
    inner: Arc<Inner>,
}

impl LatencyHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let idx = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.inner.counts[idx].fetch_add(1, Ordering::Relaxed);
        self.inner
            .sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let mut total = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, c) in self.inner.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn exposition_is_cumulative_once() {
        let h = LatencyHistogram::default();
        let mut r = Registry::default();
        r.register("lat", "latency", h.clone());
        h.observe(Duration::from_micros(50)); // le 0.0001
        h.observe(Duration::from_millis(2)); // le 0.0025
        h.observe(Duration::from_millis(2));
        h.observe(Duration::from_secs(100)); // +Inf
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        let bucket = |le: &str| -> u64 {
            let key = format!("lat_bucket{{le=\"{le}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse().unwrap()
        };
        assert_eq!(bucket("0.0001"), 1);
        assert_eq!(bucket("0.001"), 1);
        assert_eq!(bucket("0.0025"), 3);
        assert_eq!(bucket("60.0"), 3);
        assert_eq!(bucket("+Inf"), 4);
        assert!(text.contains("lat_count 4"), "{text}");
    }
}
