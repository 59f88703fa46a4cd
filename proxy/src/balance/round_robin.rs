//! Weighted round robin: a shared counter walks the cumulative-weight line,
//! so over every `total weight` picks each endpoint gets exactly its weight.

use std::sync::atomic::{AtomicU64, Ordering};

use super::random::{below, WeightTable};

/// Counter-driven weighted rotation; lock-free, one `fetch_add` per pick.
#[derive(Debug)]
pub(super) struct RoundRobin {
    next: AtomicU64,
}

/// Counter steps a filtered pick may spend on skipped endpoints before it
/// falls back to a weighted random draw among the rest.
const ATTEMPTS: usize = 4;

impl RoundRobin {
    /// Starts the rotation at a random offset so sidecars that rebuild at the
    /// same moment do not all send their first request to the same endpoint.
    pub(super) fn new(table: &WeightTable) -> Self {
        RoundRobin {
            next: AtomicU64::new(below(table.total())),
        }
    }

    /// Next slot in rotation not rejected by `skip`, or `None` if none qualifies.
    ///
    /// Endpoints occupy contiguous runs of the counter (weights 3:1 give
    /// A A A B), which keeps each pick a single binary search.
    pub(super) fn pick<S: Fn(usize) -> bool>(
        &self,
        table: &WeightTable,
        skip: &S,
    ) -> Option<usize> {
        let total = table.total();
        if total == 0 {
            return None;
        }
        for _ in 0..ATTEMPTS {
            let slot = table.slot_at(self.next.fetch_add(1, Ordering::Relaxed) % total);
            if !skip(table.endpoint(slot)) {
                return Some(slot);
            }
        }
        // A skipped endpoint with a long run would otherwise make callers
        // spin through it; random keeps the others in weight proportion.
        table.draw(None, skip)
    }
}

#[cfg(test)]
mod tests {
    use super::super::random::seed_thread_rng;
    use super::super::test_support::eps;
    use super::*;

    fn tally(weights: &[u32], picks: usize, skip: impl Fn(usize) -> bool) -> Vec<usize> {
        let table = WeightTable::new(&eps(weights));
        let rr = RoundRobin::new(&table);
        let mut hits = vec![0; weights.len()];
        for _ in 0..picks {
            hits[table.endpoint(rr.pick(&table, &skip).unwrap())] += 1;
        }
        hits
    }

    #[test]
    fn weights_give_exact_shares_per_cycle() {
        for seed in 0..5 {
            seed_thread_rng(seed);
            assert_eq!(tally(&[3, 1], 4, |_| false), [3, 1]);
            assert_eq!(tally(&[3, 0, 1, 2], 600, |_| false), [300, 0, 100, 200]);
        }
    }

    #[test]
    fn equal_weights_alternate() {
        seed_thread_rng(11);
        let table = WeightTable::new(&eps(&[1, 1, 1]));
        let rr = RoundRobin::new(&table);
        let seq: Vec<usize> = (0..6)
            .map(|_| rr.pick(&table, &|_| false).unwrap())
            .collect();
        assert_eq!(seq[..3], seq[3..]);
        let mut first = seq[..3].to_vec();
        first.sort_unstable();
        assert_eq!(first, [0, 1, 2]);
    }

    #[test]
    fn skipped_endpoint_is_avoided() {
        seed_thread_rng(5);
        let hits = tally(&[100, 1, 1], 1_000, |i| i == 0);
        assert_eq!(hits[0], 0);
        assert_eq!(hits[1] + hits[2], 1_000);
    }

    #[test]
    fn empty_table_picks_nothing() {
        let table = WeightTable::new(&eps(&[0, 0]));
        assert_eq!(RoundRobin::new(&table).pick(&table, &|_| false), None);
    }
}
