//! Consistent hashing (ketama-style ring) for session affinity: the same key
//! keeps reaching the same endpoint, and an endpoint joining or leaving only
//! moves the keys it gains or loses (about 1/N of them).

use super::candidate::Candidate;
use super::random::WeightTable;

/// Virtual nodes per unit of weight: enough points that each endpoint's share
/// of the key space is within a few percent of its weight.
const VNODES_PER_WEIGHT: u128 = 100;

/// Ring size cap, bounding memory and rebuild time for big or heavily weighted
/// clusters. Weights are scaled down to fit; every endpoint keeps at least one point.
const MAX_POINTS: u128 = 65_536;

/// Points a filtered lookup walks before first checking that some endpoint is
/// not skipped at all, so an all-skipped set costs O(n), not O(ring size).
const WALK_BEFORE_CHECK: usize = 256;

/// Sorted hash points and the endpoint owning each; immutable once built.
#[derive(Debug)]
pub(super) struct Ring {
    points: Vec<u64>,
    owners: Vec<usize>,
}

impl Ring {
    /// Places ~100·weight points per endpoint, hashed from its `hash_id` so
    /// positions depend only on identity, not on the order of `endpoints`.
    pub(super) fn new<C: Candidate>(endpoints: &[C]) -> Self {
        let total: u128 = endpoints.iter().map(|c| u128::from(c.weight())).sum();
        let scaled = total * VNODES_PER_WEIGHT > MAX_POINTS;
        let replicas = |weight: u32| -> u128 {
            let w = u128::from(weight);
            match (w, scaled) {
                (0, _) => 0,
                (_, false) => w * VNODES_PER_WEIGHT,
                (_, true) => (w * MAX_POINTS / total).max(1),
            }
        };
        let mut ring: Vec<(u64, u64, usize)> = Vec::new();
        for (i, c) in endpoints.iter().enumerate() {
            let id = c.hash_id();
            let n = replicas(c.weight()) as u64;
            ring.extend((0..n).map(|r| (point(id, r), id, i)));
        }
        // Sorting by id too breaks (astronomically rare) point collisions the
        // same way however the caller ordered the endpoints.
        ring.sort_unstable();
        Ring {
            points: ring.iter().map(|p| p.0).collect(),
            owners: ring.iter().map(|p| p.2).collect(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.points.len()
    }

    /// Endpoint owning the first point at or after `key` (wrapping), walking
    /// on past skipped endpoints so a skip only moves that endpoint's keys.
    ///
    /// `key` is re-mixed first, so callers passing weakly mixed keys (small
    /// integers, say) still spread over the whole ring.
    pub(super) fn pick<S: Fn(usize) -> bool>(
        &self,
        key: u64,
        table: &WeightTable,
        skip: &S,
    ) -> Option<usize> {
        let len = self.points.len();
        let key = fmix64(key);
        let start = self.points.partition_point(|&p| p < key);
        let mut last_skipped = None;
        for step in 0..len {
            if step == WALK_BEFORE_CHECK && (0..table.len()).all(|s| skip(table.endpoint(s))) {
                return None;
            }
            let owner = self.owners[(start + step) % len];
            if last_skipped == Some(owner) {
                continue;
            }
            if !skip(owner) {
                return Some(owner);
            }
            last_skipped = Some(owner);
        }
        None
    }
}

/// Fast, stable 64-bit hash for request keys and endpoint identities. Stable
/// across runs and hosts (unlike std's `RandomState`), so every proxy maps a
/// key to the same endpoint. FNV-1a, then a murmur3 finalizer so short or
/// similar inputs still spread over all 64 bits.
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    let h = b.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &byte| {
        (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    fmix64(h)
}

/// murmur3's 64-bit finalizer: a bijection with full avalanche.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Ring position of one virtual node: a stable hash of (identity, replica).
fn point(id: u64, replica: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&id.to_le_bytes());
    bytes[8..].copy_from_slice(&replica.to_le_bytes());
    hash_bytes(&bytes)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ep, eps, Ep};
    use super::*;

    const KEYS: u64 = 10_000;

    fn owners(endpoints: &[Ep], skip: impl Fn(usize) -> bool) -> Vec<Option<u64>> {
        let ring = Ring::new(endpoints);
        let table = WeightTable::new(endpoints);
        (0..KEYS)
            .map(|k| {
                ring.pick(hash_bytes(&k.to_le_bytes()), &table, &skip)
                    .map(|i| endpoints[i].id)
            })
            .collect()
    }

    fn moved(a: &[Option<u64>], b: &[Option<u64>]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    #[test]
    fn same_key_same_endpoint_regardless_of_order() {
        let endpoints = eps(&[1; 8]);
        let reversed: Vec<Ep> = endpoints.iter().rev().map(|e| ep(e.weight, e.id)).collect();
        let first = owners(&endpoints, |_| false);
        assert_eq!(first, owners(&endpoints, |_| false));
        assert_eq!(first, owners(&reversed, |_| false));
        assert!(first.iter().all(Option::is_some));
    }

    #[test]
    fn keys_spread_by_weight() {
        let endpoints = eps(&[1; 10]);
        let result = owners(&endpoints, |_| false);
        for e in &endpoints {
            let n = result.iter().filter(|o| **o == Some(e.id)).count();
            assert!((600..1_400).contains(&n), "{n}");
        }
        let weighted = eps(&[3, 1, 0]);
        let result = owners(&weighted, |_| false);
        let heavy = result
            .iter()
            .filter(|o| **o == Some(weighted[0].id))
            .count();
        assert!((6_800..8_200).contains(&heavy), "{heavy}");
        assert!(!result.contains(&Some(weighted[2].id)));
    }

    #[test]
    fn removing_one_of_ten_moves_only_its_keys() {
        let all = eps(&[1; 10]);
        let before = owners(&all, |_| false);
        let after = owners(&all[1..], |_| false);
        assert!(
            moved(&before, &after) <= 1_500,
            "{}",
            moved(&before, &after)
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == Some(all[0].id));
        }
    }

    #[test]
    fn adding_one_moves_only_keys_to_it() {
        let all = eps(&[1; 11]);
        let before = owners(&all[..10], |_| false);
        let after = owners(&all, |_| false);
        assert!(
            moved(&before, &after) <= 1_500,
            "{}",
            moved(&before, &after)
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *a == Some(all[10].id));
        }
    }

    #[test]
    fn skipped_endpoint_keys_move_others_stay() {
        let endpoints = eps(&[1; 5]);
        let before = owners(&endpoints, |_| false);
        let after = owners(&endpoints, |i| i == 2);
        assert!(!after.contains(&Some(endpoints[2].id)));
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == Some(endpoints[2].id));
        }
        assert!(owners(&endpoints, |_| true).iter().all(Option::is_none));
    }

    #[test]
    fn ring_size_is_capped() {
        let endpoints = eps(&[u32::MAX; 300]);
        let ring = Ring::new(&endpoints);
        assert!(ring.len() <= 65_536 + 300);
        assert_eq!(Ring::new(&eps(&[1, 2])).len(), 300);
        assert_eq!(Ring::new(&eps(&[0, 0])).len(), 0);
    }

    #[test]
    fn hash_bytes_is_stable_and_spreads() {
        assert_eq!(hash_bytes(b""), HASH_OF_EMPTY);
        assert_eq!(hash_bytes(b"10.0.0.1:8080"), 0xe8c7_2115_6ed5_2b14);
        assert_ne!(hash_bytes(b"10.0.0.1:8080"), hash_bytes(b"10.0.0.2:8080"));
        let diff = (hash_bytes(b"a") ^ hash_bytes(b"b")).count_ones();
        assert!((16..=48).contains(&diff), "{diff}");
    }

    /// FNV-1a offset basis through fmix64, cross-checked outside Rust; pinned
    /// because ring placement across proxies and releases depends on it.
    const HASH_OF_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
}
