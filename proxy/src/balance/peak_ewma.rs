//! Peak-EWMA (as in Finagle/Linkerd): P2C over `latency * (active + 1) / weight`.
//!
//! Multiplying the latency estimate by outstanding requests predicts how long
//! a new request would wait, so a fast endpoint is preferred until it queues
//! up, and a slow one still gets probes once its estimate decays.

use super::candidate::Candidate;
use super::least_request::two_choices;
use super::load::now_ns;
use super::random::WeightTable;

/// Cheaper of two sampled slots by predicted cost (ties go to the first, which is random).
pub(super) fn pick<C: Candidate, S: Fn(usize) -> bool>(
    table: &WeightTable,
    endpoints: &[C],
    skip: &S,
) -> Option<usize> {
    let (a, b) = two_choices(table, skip)?;
    let Some(b) = b else { return Some(a) };
    // One clock read so both candidates are judged at the same instant.
    let now = now_ns();
    let cost = |slot: usize| {
        let load = endpoints[table.endpoint(slot)].load();
        let pending = f64::from(load.active()) + 1.0;
        load.ewma_ns_at(now) * pending / table.weight(slot) as f64
    };
    Some(if cost(a) <= cost(b) { a } else { b })
}

#[cfg(test)]
mod tests {
    use super::super::random::seed_thread_rng;
    use super::super::test_support::{eps, Ep};
    use super::*;
    use std::time::Duration;

    fn tally(endpoints: &[Ep], picks: usize) -> Vec<usize> {
        let table = WeightTable::new(endpoints);
        let mut hits = vec![0; endpoints.len()];
        for _ in 0..picks {
            hits[table.endpoint(pick(&table, endpoints, &|_| false).unwrap())] += 1;
        }
        hits
    }

    #[test]
    fn prefers_lower_latency() {
        seed_thread_rng(1);
        let endpoints = eps(&[1, 1]);
        endpoints[0].load.observe(Duration::from_millis(50));
        endpoints[1].load.observe(Duration::from_millis(5));
        assert_eq!(tally(&endpoints, 1_000), [0, 1_000]);
    }

    #[test]
    fn queued_requests_outweigh_latency_advantage() {
        seed_thread_rng(2);
        let endpoints = eps(&[1, 1]);
        endpoints[0].load.observe(Duration::from_millis(50));
        endpoints[1].load.observe(Duration::from_millis(5));
        // 5ms * 21 pending = 105 > 50ms * 1.
        let _busy: Vec<_> = (0..20).map(|_| endpoints[1].load.start()).collect();
        assert_eq!(tally(&endpoints, 1_000), [1_000, 0]);
    }

    #[test]
    fn weight_divides_cost() {
        seed_thread_rng(3);
        let endpoints = eps(&[10, 1]);
        endpoints[0].load.observe(Duration::from_millis(40));
        endpoints[1].load.observe(Duration::from_millis(10));
        assert_eq!(tally(&endpoints, 500), [500, 0]);
    }

    #[test]
    fn unobserved_endpoint_uses_default_rtt() {
        seed_thread_rng(4);
        let endpoints = eps(&[1, 1, 1]);
        endpoints[0].load.observe(Duration::from_millis(500));
        endpoints[1].load.observe(Duration::from_millis(1));
        let hits = tally(&endpoints, 3_000);
        // Fresh endpoint (10ms default) beats the slow one, loses to the fast one.
        assert_eq!(hits[0], 0);
        assert!(hits[1] > hits[2] && hits[2] > 0, "{hits:?}");
    }
}
