//! ClusterIP allocation from the Service range, as the apiserver's
//! allocator hands them out: random free addresses, never the network or
//! broadcast address, and never the range's first, which is the
//! `kubernetes` Service's.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The range and the addresses in use, as offsets into it.
pub struct ServiceIps {
    base: u32,
    size: u32,
    used: BTreeSet<u32>,
}

impl ServiceIps {
    /// `cidr`: base address and prefix length (clamped to /8../30).
    pub fn new((base, prefix): (Ipv4Addr, u8)) -> ServiceIps {
        let prefix = u32::from(prefix.clamp(8, 30));
        let mask = u32::MAX << (32 - prefix);
        ServiceIps {
            base: u32::from(base) & mask,
            size: 1 << (32 - prefix),
            used: BTreeSet::from([1]),
        }
    }

    /// A free address, or None when the range is full.
    pub fn allocate(&mut self) -> Option<String> {
        let free = |i: &u32| !self.used.contains(i);
        let pick = (0..64)
            .map(|_| rand::random_range(1..self.size - 1))
            .find(free)
            .or_else(|| (1..self.size - 1).find(free))?;
        self.used.insert(pick);
        Some(Ipv4Addr::from(self.base + pick).to_string())
    }

    /// The range's first address, the `kubernetes` Service's.
    pub fn first(&self) -> String {
        Ipv4Addr::from(self.base + 1).to_string()
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|ip| u32::from(ip).wrapping_sub(self.base) < self.size)
    }

    /// Frees an address handed out before.
    pub fn release(&mut self, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            if let Some(offset) = u32::from(ip).checked_sub(self.base) {
                self.used.remove(&offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_range_is_used_up_and_freed() {
        let mut ips = ServiceIps::new((Ipv4Addr::new(10, 0, 0, 0), 29));
        let mut got: Vec<String> = (0..5).map_while(|_| ips.allocate()).collect();
        got.sort();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(ips.allocate(), None, "full");
        ips.release("10.0.0.4");
        assert_eq!(ips.allocate().as_deref(), Some("10.0.0.4"));
        assert!(
            ips.contains("10.0.0.7") && !ips.contains("10.0.0.8") && !ips.contains("9.255.255.255")
        );
    }
}
