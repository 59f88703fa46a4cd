//! Weighted random selection, plus the cumulative-weight table and the cheap
//! thread-local RNG that the other policies build on.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::candidate::Candidate;

/// Draws a filtered pick may reject before switching to an exact scan;
/// small so a mostly-skipped set costs O(n) once instead of many retries.
const ATTEMPTS: usize = 4;

thread_local! {
    /// Per-thread splitmix64 state: no sharing, so no contention between workers.
    static RNG: Cell<u64> = Cell::new(rand::random());
}

/// Fallback state for the rare case the thread-local is gone (thread teardown).
static SHARED_RNG: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A fast non-cryptographic random u64; balancing needs spread, not secrecy.
pub(super) fn next_u64() -> u64 {
    let state = RNG
        .try_with(|s| {
            let next = s.get().wrapping_add(GOLDEN);
            s.set(next);
            next
        })
        .unwrap_or_else(|_| SHARED_RNG.fetch_add(GOLDEN, Ordering::Relaxed));
    splitmix64(state)
}

/// Uniform value in `0..n` (0 when `n == 0`), by multiply-shift: no division,
/// and the bias is below n/2^64, far under anything measurable here.
pub(super) fn below(n: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

/// splitmix64's output mix, turning a counter into well-spread random bits.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Makes this thread's draws reproducible, so tests can assert exact outcomes.
#[cfg(test)]
pub(super) fn seed_thread_rng(seed: u64) {
    RNG.with(|s| s.set(seed));
}

/// Endpoints with non-zero weight laid end to end on `0..total`, so a point
/// on that line maps to an endpoint by binary search. A "slot" is a position
/// in this table; zero-weight endpoints get no slot and so are never picked.
#[derive(Debug)]
pub(super) struct WeightTable {
    /// Exclusive end of each slot's range; strictly increasing.
    ends: Vec<u64>,
    /// Endpoint index (into the caller's slice) of each slot.
    endpoints: Vec<usize>,
}

impl WeightTable {
    /// Precomputes the cumulative weights; sums in u64 so u32 weights can't overflow.
    pub(super) fn new<C: Candidate>(candidates: &[C]) -> Self {
        let mut ends = Vec::with_capacity(candidates.len());
        let mut endpoints = Vec::with_capacity(candidates.len());
        let mut total = 0u64;
        for (i, c) in candidates.iter().enumerate() {
            let w = u64::from(c.weight());
            if w > 0 {
                total = total.saturating_add(w);
                ends.push(total);
                endpoints.push(i);
            }
        }
        WeightTable { ends, endpoints }
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn total(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    pub(super) fn endpoint(&self, slot: usize) -> usize {
        self.endpoints[slot]
    }

    fn start(&self, slot: usize) -> u64 {
        if slot == 0 {
            0
        } else {
            self.ends[slot - 1]
        }
    }

    pub(super) fn weight(&self, slot: usize) -> u64 {
        self.ends[slot] - self.start(slot)
    }

    /// Slot whose range contains `point`; callers keep `point < total`, and
    /// the clamp makes any other value harmless rather than a panic.
    pub(super) fn slot_at(&self, point: u64) -> usize {
        let slot = self.ends.partition_point(|&end| end <= point);
        slot.min(self.len().saturating_sub(1))
    }

    /// Weighted-random slot, never `exclude` (so P2C gets two distinct
    /// candidates) and never one whose endpoint `skip`s. `None` if no slot qualifies.
    ///
    /// Excluding a slot shrinks the line by its width and shifts points past
    /// its start, which is exact with a single draw. Skipped endpoints are
    /// handled by rejection, then by an exact scan if rejection keeps failing.
    pub(super) fn draw<S: Fn(usize) -> bool>(
        &self,
        exclude: Option<usize>,
        skip: &S,
    ) -> Option<usize> {
        let (gap_start, gap) = exclude.map_or((u64::MAX, 0), |s| (self.start(s), self.weight(s)));
        let span = self.total() - gap;
        if span == 0 {
            return None;
        }
        for _ in 0..ATTEMPTS {
            let mut point = below(span);
            if point >= gap_start {
                point += gap;
            }
            let slot = self.slot_at(point);
            if !skip(self.endpoints[slot]) {
                return Some(slot);
            }
        }
        self.scan_draw(exclude, skip)
    }

    /// Exact weighted draw over the slots that pass `skip`: O(n), only used
    /// once rejection sampling has shown most of the weight is skipped.
    fn scan_draw<S: Fn(usize) -> bool>(&self, exclude: Option<usize>, skip: &S) -> Option<usize> {
        let eligible = |slot: &usize| Some(*slot) != exclude && !skip(self.endpoints[*slot]);
        let span: u64 = (0..self.len())
            .filter(eligible)
            .map(|s| self.weight(s))
            .sum();
        let mut point = below(span);
        for slot in (0..self.len()).filter(eligible) {
            let w = self.weight(slot);
            if point < w {
                return Some(slot);
            }
            point -= w;
        }
        // Only reachable if `skip` changed its mind between the two passes.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::eps;
    use super::*;

    fn counts(weights: &[u32], n: usize) -> Vec<usize> {
        let table = WeightTable::new(&eps(weights));
        let mut hits = vec![0; weights.len()];
        for _ in 0..n {
            hits[table.endpoint(table.draw(None, &|_| false).unwrap())] += 1;
        }
        hits
    }

    #[test]
    fn table_omits_zero_weights_and_maps_points() {
        let t = WeightTable::new(&eps(&[2, 0, 3]));
        assert_eq!((t.len(), t.total()), (2, 5));
        let mapped: Vec<usize> = (0..5).map(|p| t.endpoint(t.slot_at(p))).collect();
        assert_eq!(mapped, [0, 0, 2, 2, 2]);
        assert_eq!(t.endpoint(t.slot_at(u64::MAX)), 2);
    }

    #[test]
    fn draws_follow_weights() {
        seed_thread_rng(7);
        let hits = counts(&[1, 3, 0], 40_000);
        assert_eq!(hits[2], 0);
        assert!((9_000..11_000).contains(&hits[0]), "{hits:?}");
    }

    #[test]
    fn excluded_slot_is_never_drawn() {
        seed_thread_rng(1);
        let t = WeightTable::new(&eps(&[5, 1, 1]));
        for _ in 0..1_000 {
            assert_ne!(t.draw(Some(0), &|_| false), Some(0));
        }
        let single = WeightTable::new(&eps(&[4]));
        assert_eq!(single.draw(Some(0), &|_| false), None);
    }

    #[test]
    fn skipping_heavy_endpoints_still_finds_light_one() {
        seed_thread_rng(3);
        let t = WeightTable::new(&eps(&[1_000_000, 1, 1_000_000]));
        for _ in 0..100 {
            assert_eq!(t.draw(None, &|i| i != 1), Some(1));
        }
        assert_eq!(t.draw(None, &|_| true), None);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        seed_thread_rng(9);
        let t = WeightTable::new(&eps(&[u32::MAX; 64]));
        assert_eq!(t.total(), 64 * u64::from(u32::MAX));
        assert!(t.draw(None, &|_| false).is_some());
    }

    #[test]
    fn seeded_rng_is_reproducible() {
        seed_thread_rng(42);
        let a: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        seed_thread_rng(42);
        let b: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        assert_eq!(a, b);
        assert_eq!(below(0), 0);
    }
}
