//! Concurrency limits per backend (Envoy calls them circuit breakers): past
//! a limit, requests are refused at once with 503 `x-weft-overloaded`, so a
//! saturated backend cannot tie up the proxy and slow its neighbours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One limit: a counter and its maximum.
#[derive(Debug)]
pub(crate) struct Limit {
    pub(crate) max: u64,
    active: AtomicU64,
}

/// Held while the limited thing is in use; releases on drop.
#[derive(Debug)]
pub(crate) struct Permit(Arc<LimitsInner>, usize);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.limits[self.1].active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Which limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Connections = 0,
    Pending = 1,
    Requests = 2,
    Retries = 3,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Connections => "connections",
            Kind::Pending => "pending",
            Kind::Requests => "requests",
            Kind::Retries => "retries",
        }
    }
}

#[derive(Debug)]
struct LimitsInner {
    limits: [Limit; 4],
}

/// The limits of one backend.
#[derive(Clone, Debug)]
pub(crate) struct Limits(Arc<LimitsInner>);

impl Limits {
    pub(crate) fn new(connections: u32, pending: u32, requests: u32, retries: u32) -> Limits {
        let l = |max: u32| Limit {
            max: max as u64,
            active: AtomicU64::new(0),
        };
        Limits(Arc::new(LimitsInner {
            limits: [l(connections), l(pending), l(requests), l(retries)],
        }))
    }

    /// Takes a slot, or None when the limit is reached.
    pub(crate) fn try_acquire(&self, kind: Kind) -> Option<Permit> {
        let l = &self.0.limits[kind as usize];
        let prev = l.active.fetch_add(1, Ordering::AcqRel);
        if prev >= l.max {
            l.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(self.0.clone(), kind as usize))
    }

    pub(crate) fn active(&self, kind: Kind) -> u64 {
        self.0.limits[kind as usize].active.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self, kind: Kind) -> u64 {
        self.0.limits[kind as usize].max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_max_and_frees_on_drop() {
        let l = Limits::new(1, 1, 2, 0);
        let a = l.try_acquire(Kind::Requests).unwrap();
        let _b = l.try_acquire(Kind::Requests).unwrap();
        assert!(l.try_acquire(Kind::Requests).is_none());
        assert_eq!(l.active(Kind::Requests), 2);
        drop(a);
        assert!(l.try_acquire(Kind::Requests).is_some());
        assert!(
            l.try_acquire(Kind::Retries).is_none(),
            "max 0 admits nothing"
        );
    }
}
