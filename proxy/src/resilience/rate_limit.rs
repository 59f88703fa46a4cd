//! Local rate limits of the inbound sidecar (`TrafficPolicy.spec.rateLimit`
//! on the service it fronts): a total bucket, one bucket per verified caller
//! identity, buckets of their own for override identities, and one shared
//! bucket for callers without a verified identity.
//!
//! Each bucket is GCRA (the generic cell rate algorithm) in one `AtomicU64`:
//! the theoretical arrival time (TAT) of the next request, in nanoseconds
//! since the limiter was built. A request at `now` is admitted when
//! `max(TAT, now) + interval - now <= burst * interval`, and moves TAT there
//! with one compare-and-swap; so admissions over any span `t` never exceed
//! `burst + rate * t`. No lock, no allocation.
//!
//! Identity buckets live in a map bounded by
//! `defaults::RATE_LIMIT_MAX_IDENTITIES` (16 shards, each behind an RwLock
//! taken for reading on the common path). A shard that is full drops its
//! idle buckets (full again, so forgetting one changes nothing); if none
//! is idle, a new identity shares one overflow bucket (identity limit)
//! until one is. The map never grows with the number of callers.

use crate::telemetry::metrics::Metrics;
use prometheus_client::metrics::counter::Counter;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use weft_mesh::config::defaults;
use weft_mesh::config::rate_limit::RateLimit;
use weft_mesh::config::ConfigSet;

const NANOS: u64 = 1_000_000_000;
const SHARDS: usize = 16;

/// One GCRA bucket (see the module header).
#[derive(Debug)]
pub(crate) struct Bucket {
    /// The theoretical arrival time of the next request (ns).
    tat: AtomicU64,
    /// Nanoseconds per token (1 / rate).
    interval: u64,
    /// `burst * interval`: how far TAT may run ahead of now.
    tolerance: u64,
}

impl Bucket {
    /// A full bucket of `rate` tokens a second, holding at most `burst`
    /// (both at least 1; validation makes sure).
    pub(crate) fn new(rate: u32, burst: u32) -> Bucket {
        let interval = NANOS / u64::from(rate.max(1));
        Bucket {
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// Takes a token at `now` (ns); when there is none, how long until
    /// there is one (ns, more than 0).
    #[inline]
    pub(crate) fn take(&self, now: u64) -> Result<(), u64> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            let ahead = next - now;
            if ahead > self.tolerance {
                return Err(ahead - self.tolerance);
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Returns a token taken by a request refused elsewhere.
    fn give_back(&self) {
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(self.interval))
            });
    }

    /// Full again at `now`: a new bucket would behave the same.
    fn idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }
}

/// Which limit refused a request (the `limit` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Total,
    Identity,
    Override,
}

impl Which {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Which::Total => "total",
            Which::Identity => "identity",
            Which::Override => "override",
        }
    }
}

/// A refusal: which limit, and whole seconds (at least 1) until the
/// bucket has a token again (`retry-after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) limit: Which,
    pub(crate) retry_after: u64,
}

/// The per-identity buckets (see the module header for the bound).
struct Identities {
    rate: u32,
    burst: u32,
    shards: [RwLock<FxHashMap<Arc<str>, Bucket>>; SHARDS],
    per_shard: usize,
    /// Shared by new identities while their shard is full of busy ones.
    overflow: Bucket,
    /// Shared by every caller without a verified identity.
    unverified: Bucket,
}

impl Identities {
    fn new(rate: u32, burst: u32, max: usize) -> Identities {
        Identities {
            rate,
            burst,
            shards: std::array::from_fn(|_| RwLock::new(FxHashMap::default())),
            per_shard: max.div_ceil(SHARDS).max(1),
            overflow: Bucket::new(rate, burst),
            unverified: Bucket::new(rate, burst),
        }
    }

    fn take(&self, id: &Arc<str>, now: u64) -> Result<(), u64> {
        let mut h = FxHasher::default();
        id.hash(&mut h);
        let shard = &self.shards[(h.finish() >> 32) as usize % SHARDS];
        {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(b) = map.get(&**id) {
                return b.take(now);
            }
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get(&**id) {
            return b.take(now);
        }
        if map.len() >= self.per_shard {
            map.retain(|_, b| !b.idle(now));
        }
        if map.len() >= self.per_shard {
            return self.overflow.take(now);
        }
        let b = Bucket::new(self.rate, self.burst);
        let taken = b.take(now);
        map.insert(id.clone(), b);
        taken
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// The compiled `rateLimit` of this sidecar's service, with its buckets.
pub(crate) struct InboundRateLimit {
    /// What it was compiled from: a reload with the same block keeps it.
    pub(crate) spec: RateLimit,
    epoch: Instant,
    total: Option<Bucket>,
    identities: Option<Identities>,
    overrides: FxHashMap<Box<str>, Bucket>,
    /// `weft_rate_limited_total{limit}` by [`Which`], and
    /// `weft_inbound_rejected_total{reason="rate-limited"}`.
    counters: [Counter; 3],
    rejected: Counter,
}

impl InboundRateLimit {
    pub(crate) fn new(spec: &RateLimit, metrics: &Metrics) -> InboundRateLimit {
        let counter = |w: Which| metrics.rate_limited(w.name());
        InboundRateLimit {
            counters: [Which::Total, Which::Identity, Which::Override].map(counter),
            rejected: metrics
                .inbound_rejected
                .get_or_create(&crate::telemetry::metrics::ReasonLabels {
                    reason: "rate-limited",
                })
                .clone(),
            ..Self::buckets(spec, defaults::RATE_LIMIT_MAX_IDENTITIES)
        }
    }

    /// The buckets alone, with room for `max` identities.
    fn buckets(spec: &RateLimit, max: usize) -> InboundRateLimit {
        let mut overrides = FxHashMap::default();
        for o in &spec.overrides {
            for id in &o.identities {
                overrides.insert(
                    Box::from(id.as_str()),
                    Bucket::new(
                        o.requests_per_second,
                        defaults::rate_limit_burst(o.burst, o.requests_per_second),
                    ),
                );
            }
        }
        InboundRateLimit {
            spec: spec.clone(),
            epoch: Instant::now(),
            total: spec.total.as_ref().map(|l| {
                Bucket::new(
                    l.requests_per_second,
                    defaults::rate_limit_burst(l.burst, l.requests_per_second),
                )
            }),
            identities: spec.identity.as_ref().map(|l| {
                let burst = defaults::rate_limit_burst(l.burst, l.requests_per_second);
                Identities::new(l.requests_per_second, burst, max)
            }),
            overrides,
            counters: Default::default(),
            rejected: Counter::default(),
        }
    }

    /// Admits a request from `identity` (verified, or none), or says which
    /// limit refused it; a refusal is counted.
    #[inline]
    pub(crate) fn check(&self, identity: Option<&Arc<str>>) -> Result<(), Limited> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.check_at(identity, now).inspect_err(|l| {
            self.counters[l.limit as usize].inc();
            self.rejected.inc();
        })
    }

    /// The override bucket of `id`, if one names it (no hashing when
    /// there are no overrides).
    #[inline]
    fn override_of(&self, id: &str) -> Option<&Bucket> {
        match self.overrides.is_empty() {
            true => None,
            false => self.overrides.get(id),
        }
    }

    /// The total bucket first, then the caller's; a caller over its own
    /// limit gives the total token back, so it cannot use up the others'
    /// share by being refused.
    fn check_at(&self, identity: Option<&Arc<str>>, now: u64) -> Result<(), Limited> {
        let refuse = |limit, wait: u64| Limited {
            limit,
            retry_after: wait.div_ceil(NANOS).max(1),
        };
        if let Some(t) = &self.total {
            t.take(now).map_err(|w| refuse(Which::Total, w))?;
        }
        let caller = match identity {
            Some(id) => match self.override_of(id) {
                Some(b) => Some((b.take(now), Which::Override)),
                None => self
                    .identities
                    .as_ref()
                    .map(|m| (m.take(id, now), Which::Identity)),
            },
            None => self
                .identities
                .as_ref()
                .map(|m| (m.unverified.take(now), Which::Identity)),
        };
        match caller {
            Some((Err(wait), which)) => {
                if let Some(t) = &self.total {
                    t.give_back();
                }
                Err(refuse(which, wait))
            }
            _ => Ok(()),
        }
    }
}

/// The limit for this sidecar's own service (`service` in `namespace`): the
/// `rateLimit` of the first TrafficPolicy that has one and whose targetRef
/// (kind Service or Backend) names the service. The limiter in force is kept, buckets and all, when
/// its block is unchanged.
pub(crate) fn compile(
    config: &ConfigSet,
    service: Option<&str>,
    namespace: &str,
    metrics: &Metrics,
    previous: Option<&Arc<InboundRateLimit>>,
) -> Option<Arc<InboundRateLimit>> {
    let service = service?;
    let spec = config.traffic_policies.iter().find_map(|p| {
        let t = &p.spec.target_ref;
        let selected = matches!(t.kind.as_str(), "Service" | "Backend")
            && t.name == service
            && t.namespace.as_deref().unwrap_or(&p.meta.namespace) == namespace;
        selected.then_some(p.spec.rate_limit.as_ref()).flatten()
    })?;
    match previous {
        Some(p) if p.spec == *spec => Some(p.clone()),
        _ => Some(Arc::new(InboundRateLimit::new(spec, metrics))),
    }
}

#[cfg(test)]
mod tests;
