//! The one thing every balancing algorithm knows of an endpoint.

use super::load::Load;

/// What the balancer needs from an endpoint, so it works over whatever
/// endpoint type the cluster layer keeps.
pub(crate) trait Candidate {
    /// Relative share of traffic; 0 means "never pick" (e.g. draining).
    fn weight(&self) -> u32;
    /// Live stats read by the load-aware policies.
    fn load(&self) -> &Load;
    /// Stable identity (the caller hashes the address) that places the
    /// endpoint on the hash ring independently of its position in the list.
    fn hash_id(&self) -> u64;
}
