//! Load balancing: which endpoint of a cluster gets the next request.
//!
//! A [`Balancer`] is rebuilt whenever the endpoint set changes, so everything
//! expensive (cumulative weights, the hash ring) is computed once; a pick only
//! reads immutable tables and per-endpoint atomics ([`Load`]), never a lock.

mod candidate;
mod least_request;
mod load;
mod peak_ewma;
mod random;
mod ring_hash;
mod round_robin;

pub(crate) use candidate::Candidate;
pub(crate) use load::{ActiveGuard, Load};
pub(crate) use ring_hash::hash_bytes;

use random::WeightTable;
use ring_hash::Ring;
use round_robin::RoundRobin;

/// Balancing algorithm, as named in configuration.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) enum Policy {
    /// Weighted rotation: predictable, ignores load.
    RoundRobin,
    /// Power of two choices on in-flight requests per unit weight.
    LeastRequest,
    /// Power of two choices on latency × in-flight requests; the default
    /// because it reacts to both slow and overloaded endpoints.
    #[default]
    PeakEwma,
    /// Weighted random: stateless and cheap.
    Random,
    /// Consistent hashing on a caller-supplied request key, for affinity.
    RingHash,
}

/// Precomputed picker for one endpoint set; shared across workers by reference.
#[derive(Debug)]
pub(crate) struct Balancer {
    /// Length of the slice `new` saw; picks against another length are refused.
    len: usize,
    table: WeightTable,
    strategy: Strategy,
}

/// Per-policy precomputed state (only some policies need any).
#[derive(Debug)]
enum Strategy {
    RoundRobin(RoundRobin),
    LeastRequest,
    PeakEwma,
    Random,
    RingHash(Ring),
}

impl Balancer {
    /// Precomputes the policy's tables for `endpoints`; weights are read
    /// here, once, so a weight change needs a rebuild.
    pub(crate) fn new<C: Candidate>(policy: Policy, endpoints: &[C]) -> Balancer {
        let table = WeightTable::new(endpoints);
        let strategy = match policy {
            Policy::RoundRobin => Strategy::RoundRobin(RoundRobin::new(&table)),
            Policy::LeastRequest => Strategy::LeastRequest,
            Policy::PeakEwma => Strategy::PeakEwma,
            Policy::Random => Strategy::Random,
            Policy::RingHash => Strategy::RingHash(Ring::new(endpoints)),
        };
        Balancer {
            len: endpoints.len(),
            table,
            strategy,
        }
    }

    /// Index into `endpoints` (the slice given to `new`) for the next request;
    /// `None` if there is no endpoint with non-zero weight, or if `endpoints`
    /// is not the same length as at build time (a caller bug; refusing beats
    /// indexing out of bounds). `hash` is the affinity key for `RingHash`;
    /// without one it falls back to weighted random.
    pub(crate) fn pick<C: Candidate>(&self, endpoints: &[C], hash: Option<u64>) -> Option<usize> {
        self.pick_unskipped(endpoints, hash, &|_| false)
    }

    /// Like [`pick`](Self::pick), but avoids every index where `skip` is true
    /// (a retry's previous endpoint, unhealthy ones) as long as some other
    /// endpoint is eligible. If all are skipped it returns what `pick` would,
    /// so the caller can still try rather than fail outright; check `skip` on
    /// the result if that is not wanted. `skip` should be cheap and pure: it
    /// may be called several times per index.
    pub(crate) fn pick_filtered<C: Candidate>(
        &self,
        endpoints: &[C],
        hash: Option<u64>,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.pick_unskipped(endpoints, hash, &skip)
            .or_else(|| self.pick(endpoints, hash))
    }

    /// Shared body of the picks: an index not rejected by `skip`, or `None`.
    fn pick_unskipped<C: Candidate, S: Fn(usize) -> bool>(
        &self,
        endpoints: &[C],
        hash: Option<u64>,
        skip: &S,
    ) -> Option<usize> {
        if endpoints.len() != self.len {
            return None;
        }
        let table = &self.table;
        match table.len() {
            0 => return None,
            1 if !skip(table.endpoint(0)) => return Some(table.endpoint(0)),
            1 => return None,
            _ => {}
        }
        let slot = match &self.strategy {
            Strategy::RoundRobin(rr) => rr.pick(table, skip),
            Strategy::LeastRequest => least_request::pick(table, endpoints, skip),
            Strategy::PeakEwma => peak_ewma::pick(table, endpoints, skip),
            Strategy::Random => table.draw(None, skip),
            Strategy::RingHash(ring) => match hash {
                Some(key) => return ring.pick(key, table, skip),
                None => table.draw(None, skip),
            },
        };
        slot.map(|s| table.endpoint(s))
    }
}

#[cfg(test)]
mod test_support {
    use super::{hash_bytes, Candidate, Load};
    use std::sync::Arc;

    /// Minimal endpoint for tests.
    pub(super) struct Ep {
        pub(crate) weight: u32,
        pub(crate) id: u64,
        pub(crate) load: Arc<Load>,
    }

    impl Candidate for Ep {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn load(&self) -> &Load {
            &self.load
        }
        fn hash_id(&self) -> u64 {
            self.id
        }
    }

    pub(super) fn ep(weight: u32, id: u64) -> Ep {
        Ep {
            weight,
            id,
            load: Arc::new(Load::new()),
        }
    }

    /// Endpoints with the given weights and address-derived ids.
    pub(super) fn eps(weights: &[u32]) -> Vec<Ep> {
        let addr = |i: usize| format!("10.0.{}.{}:8080", i / 256, i % 256);
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| ep(w, hash_bytes(addr(i).as_bytes())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::eps;
    use super::*;

    const ALL: [Policy; 5] = [
        Policy::RoundRobin,
        Policy::LeastRequest,
        Policy::PeakEwma,
        Policy::Random,
        Policy::RingHash,
    ];

    #[test]
    fn nothing_to_pick_gives_none() {
        for policy in ALL {
            for weights in [&[][..], &[0, 0, 0][..]] {
                let endpoints = eps(weights);
                let b = Balancer::new(policy.clone(), &endpoints);
                assert_eq!(b.pick(&endpoints, Some(1)), None);
                assert_eq!(b.pick_filtered(&endpoints, None, |_| false), None);
            }
        }
    }

    #[test]
    fn single_eligible_endpoint_is_always_chosen() {
        for policy in ALL {
            let endpoints = eps(&[0, 7, 0]);
            let b = Balancer::new(policy.clone(), &endpoints);
            assert_eq!(b.pick(&endpoints, None), Some(1));
            assert_eq!(b.pick(&endpoints, Some(99)), Some(1));
            // Skipping the only candidate falls back rather than failing.
            assert_eq!(b.pick_filtered(&endpoints, None, |i| i == 1), Some(1));
        }
    }

    #[test]
    fn filtered_pick_never_returns_skipped_or_zero_weight() {
        random::seed_thread_rng(17);
        let endpoints = eps(&[5, 1, 0, 9, 2, 2, 1, 40]);
        let skip = |i: usize| i == 0 || i == 3 || i == 7;
        for policy in ALL {
            let b = Balancer::new(policy.clone(), &endpoints);
            for k in 0..2_000u64 {
                let hash = (k % 2 == 0).then(|| hash_bytes(&k.to_le_bytes()));
                let i = b.pick_filtered(&endpoints, hash, skip);
                assert!(matches!(i, Some(1 | 4 | 5 | 6)), "{policy:?} {i:?}");
                assert_ne!(b.pick(&endpoints, hash), Some(2), "{policy:?}");
            }
        }
    }

    #[test]
    fn all_skipped_falls_back_to_plain_pick() {
        let endpoints = eps(&[1, 0, 1]);
        for policy in ALL {
            let b = Balancer::new(policy.clone(), &endpoints);
            let i = b.pick_filtered(&endpoints, Some(5), |_| true);
            assert!(matches!(i, Some(0 | 2)), "{policy:?} {i:?}");
        }
    }

    #[test]
    fn wrong_slice_length_is_refused() {
        let endpoints = eps(&[1, 1, 1]);
        for policy in ALL {
            let b = Balancer::new(policy.clone(), &endpoints);
            assert_eq!(b.pick(&endpoints[..2], None), None);
        }
    }

    #[test]
    fn ring_hash_is_sticky_and_spreads_without_key() {
        random::seed_thread_rng(23);
        let endpoints = eps(&[1; 6]);
        let b = Balancer::new(Policy::RingHash, &endpoints);
        let key = hash_bytes(b"session-42");
        let first = b.pick(&endpoints, Some(key));
        assert!((0..50).all(|_| b.pick(&endpoints, Some(key)) == first));
        let mut seen = [false; 6];
        (0..200).for_each(|_| seen[b.pick(&endpoints, None).unwrap_or(0)] = true);
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn policy_defaults_to_peak_ewma() {
        assert_eq!(Policy::default(), Policy::PeakEwma);
    }
}
