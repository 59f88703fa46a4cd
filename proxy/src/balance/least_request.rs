//! Least request via power of two choices (P2C): sample two distinct endpoints
//! by weight and send to the one with fewer in-flight requests per unit weight.
//!
//! Comparing two random candidates instead of scanning all avoids herding
//! every proxy onto the single least-loaded endpoint, and costs O(log n).

use super::candidate::Candidate;
use super::random::WeightTable;

/// Two distinct weighted-random slots that `skip` allows; the second is
/// `None` when only one slot qualifies. Shared with peak-EWMA.
pub(super) fn two_choices<S: Fn(usize) -> bool>(
    table: &WeightTable,
    skip: &S,
) -> Option<(usize, Option<usize>)> {
    let first = table.draw(None, skip)?;
    Some((first, table.draw(Some(first), skip)))
}

/// Slot with the lower `active / weight` of two sampled ones (ties go to the
/// first, which is itself random).
pub(super) fn pick<C: Candidate, S: Fn(usize) -> bool>(
    table: &WeightTable,
    endpoints: &[C],
    skip: &S,
) -> Option<usize> {
    let (a, b) = two_choices(table, skip)?;
    let Some(b) = b else { return Some(a) };
    let active = |slot: usize| u128::from(endpoints[table.endpoint(slot)].load().active());
    // Cross-multiplied to compare ratios exactly without division.
    let a_wins = active(a) * u128::from(table.weight(b)) <= active(b) * u128::from(table.weight(a));
    Some(if a_wins { a } else { b })
}

#[cfg(test)]
mod tests {
    use super::super::random::seed_thread_rng;
    use super::super::test_support::{eps, Ep};
    use super::*;

    fn tally(endpoints: &[Ep], picks: usize, skip: impl Fn(usize) -> bool) -> Vec<usize> {
        let table = WeightTable::new(endpoints);
        let mut hits = vec![0; endpoints.len()];
        for _ in 0..picks {
            hits[table.endpoint(pick(&table, endpoints, &skip).unwrap())] += 1;
        }
        hits
    }

    #[test]
    fn prefers_the_less_loaded_endpoint() {
        seed_thread_rng(1);
        let endpoints = eps(&[1, 1]);
        let _busy: Vec<_> = (0..100).map(|_| endpoints[0].load.start()).collect();
        assert_eq!(tally(&endpoints, 1_000, |_| false), [0, 1_000]);
    }

    #[test]
    fn loaded_endpoint_among_many_is_never_chosen() {
        seed_thread_rng(2);
        let endpoints = eps(&[1; 10]);
        let _busy: Vec<_> = (0..100).map(|_| endpoints[3].load.start()).collect();
        let hits = tally(&endpoints, 5_000, |_| false);
        assert_eq!(hits[3], 0);
        assert!(
            hits.iter().enumerate().all(|(i, &h)| i == 3 || h > 300),
            "{hits:?}"
        );
    }

    #[test]
    fn load_is_scaled_by_weight() {
        seed_thread_rng(3);
        // 2 active at weight 4 (0.5 per unit) beats 1 active at weight 1.
        let endpoints = eps(&[4, 1]);
        let _a: Vec<_> = (0..2).map(|_| endpoints[0].load.start()).collect();
        let _b = endpoints[1].load.start();
        assert_eq!(tally(&endpoints, 500, |_| false), [500, 0]);
    }

    #[test]
    fn idle_endpoints_share_by_weight() {
        seed_thread_rng(4);
        let hits = tally(&eps(&[1, 1, 0]), 10_000, |_| false);
        assert_eq!(hits[2], 0);
        assert!((4_000..6_000).contains(&hits[0]), "{hits:?}");
    }

    #[test]
    fn skip_beats_load() {
        seed_thread_rng(5);
        let endpoints = eps(&[1, 1, 1]);
        let _busy: Vec<_> = (0..50).map(|_| endpoints[2].load.start()).collect();
        assert_eq!(tally(&endpoints, 300, |i| i != 2), [0, 0, 300]);
    }
}
