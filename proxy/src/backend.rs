//! A destination at run time: its endpoints (live, swapped atomically), how
//! to balance over them, and how to connect to them.
//!
//! Backends survive config reloads when their definition is unchanged, so
//! pools, latency estimates and DNS watches carry on; when it does change,
//! endpoints at the same address keep their load and connections.

use crate::balance::{hash_bytes, Balancer, Candidate, Load, Policy};
use crate::body::RequestBody;
use crate::resilience::health::Health;
use crate::resilience::outlier::Outlier;
use crate::resilience::policy::Resilience;
use crate::transport::{Pool, PoolSettings};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use weft_mesh::config::backend::{DnsSpec, EndpointSpec};
use weft_mesh::config::policy::{HashOn, LbPolicy};
use weft_mesh::config::{defaults, BackendSpec, Protocol, Resource, TrafficPolicySpec};

/// One address traffic can go to.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub identity: Option<Arc<str>>,
    pub load: Arc<Load>,
    pub pool: Arc<Pool<RequestBody>>,
    /// Passive ejection state (consecutive failures, half-open probe).
    pub outlier: Arc<Outlier>,
    /// Active health-check state.
    pub health: Arc<Health>,
    hash_id: u64,
}

impl Endpoint {
    /// An endpoint outside any backend (the local app, a passthrough destination).
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            weight: 1,
            identity: None,
            load: Arc::new(Load::new()),
            pool: Arc::new(Pool::default()),
            outlier: Arc::new(Outlier::default()),
            health: Arc::new(Health::default()),
            hash_id: hash_bytes(addr.to_string().as_bytes()),
        }
    }
}

impl Candidate for Arc<Endpoint> {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn load(&self) -> &Load {
        &self.load
    }
    fn hash_id(&self) -> u64 {
        self.hash_id
    }
}

/// The endpoints of a backend at one moment, with their balancer.
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
}

/// What RingHash hashes.
#[derive(Clone, Debug)]
pub enum HashKey {
    None,
    Header(http::HeaderName),
    Cookie(String),
    SourceIp,
}

/// Where endpoints come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    Static(Vec<EndpointSpec>),
    Dns(DnsSpec),
}

/// Last DNS result, for `/endpoints`.
#[derive(Clone, Debug, Default)]
pub struct DnsStatus {
    pub last_error: Option<String>,
    pub resolved_addresses: usize,
    pub ttl_secs: u64,
}

pub struct Backend {
    /// `namespace/name`.
    pub key: Arc<str>,
    pub name: String,
    pub namespace: String,
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub settings: PoolSettings,
    pub policy: Policy,
    pub hash_key: HashKey,
    pub discovery: Discovery,
    pub endpoints: ArcSwap<EndpointSet>,
    pub dns_status: Mutex<DnsStatus>,
    pub resilience: Arc<Resilience>,
    /// The health-check settings, if active checks are on.
    pub health_check: Option<weft_mesh::config::policy::HealthCheck>,
    /// Whether the last pick found too few healthy endpoints (logged on change).
    pub panic: std::sync::atomic::AtomicBool,
    /// The definition this runtime was built from; equal definitions reuse it.
    definition: Definition,
}

/// What a Backend's runtime is built from: a new config with the same
/// definition keeps the runtime (pools, load, ejection state, tasks).
#[derive(PartialEq)]
struct Definition {
    spec: BackendSpec,
    policy: Option<TrafficPolicySpec>,
    default_idle_timeout: std::time::Duration,
}

fn lb_policy(p: LbPolicy) -> Policy {
    match p {
        LbPolicy::RoundRobin => Policy::RoundRobin,
        LbPolicy::LeastRequest => Policy::LeastRequest,
        LbPolicy::PeakEWMA => Policy::PeakEwma,
        LbPolicy::Random => Policy::Random,
        LbPolicy::RingHash => Policy::RingHash,
    }
}

fn hash_key(h: Option<&HashOn>) -> HashKey {
    match h {
        Some(HashOn {
            header: Some(name), ..
        }) => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .unwrap_or(HashKey::None),
        Some(HashOn {
            cookie: Some(c), ..
        }) => HashKey::Cookie(c.clone()),
        Some(HashOn {
            source_ip: Some(true),
            ..
        }) => HashKey::SourceIp,
        _ => HashKey::None,
    }
}

impl Backend {
    /// Builds the runtime of a Backend resource, reusing `previous` when the
    /// definition is the same.
    pub fn build(
        res: &Resource<BackendSpec>,
        policy: Option<&TrafficPolicySpec>,
        previous: Option<&Arc<Backend>>,
        default_idle_timeout: std::time::Duration,
    ) -> Arc<Backend> {
        let definition = Definition {
            spec: res.spec.clone(),
            policy: policy.cloned(),
            default_idle_timeout,
        };
        if let Some(prev) = previous {
            if prev.definition == definition {
                return prev.clone();
            }
        }
        let lb = policy.and_then(|p| p.load_balancer.as_ref());
        let pool_cfg = policy.and_then(|p| p.connection_pool.as_ref());
        let settings = PoolSettings {
            connect_timeout: policy
                .and_then(|p| p.connect_timeout)
                .map(|d| d.0)
                .unwrap_or(defaults::CONNECT_TIMEOUT),
            idle_timeout: pool_cfg
                .and_then(|p| p.idle_timeout)
                .map(|d| d.0)
                .unwrap_or(default_idle_timeout),
            max_idle: pool_cfg
                .and_then(|p| p.max_idle_per_endpoint)
                .unwrap_or(defaults::POOL_MAX_IDLE_PER_ENDPOINT) as usize,
        };
        let policy_kind = lb_policy(lb.map(|l| l.policy).unwrap_or_default());
        let discovery = match &res.spec.dns {
            Some(d) => Discovery::Dns(d.clone()),
            None => Discovery::Static(res.spec.endpoints.clone()),
        };
        let backend = Backend {
            key: Arc::from(res.key()),
            name: res.meta.name.clone(),
            namespace: res.meta.namespace.clone(),
            protocol: res.spec.protocol,
            port: res.spec.port,
            settings,
            policy: policy_kind.clone(),
            hash_key: hash_key(lb.and_then(|l| l.hash_on.as_ref())),
            discovery: discovery.clone(),
            endpoints: ArcSwap::from_pointee(EndpointSet {
                endpoints: Vec::new(),
                balancer: Balancer::new::<Arc<Endpoint>>(policy_kind, &[]),
            }),
            dns_status: Mutex::new(DnsStatus::default()),
            resilience: Resilience::new(policy),
            health_check: policy.and_then(|p| p.health_check.clone()),
            panic: std::sync::atomic::AtomicBool::new(false),
            definition,
        };
        // Carry over what we know of endpoints at the same address.
        let seed: Vec<(SocketAddr, u32, Option<Arc<str>>)> = match (&discovery, previous) {
            (Discovery::Static(eps), _) => eps
                .iter()
                .filter_map(|e| {
                    Some((
                        e.address.parse().ok()?,
                        e.weight.unwrap_or(defaults::ENDPOINT_WEIGHT),
                        e.identity.as_deref().map(Arc::from),
                    ))
                })
                .collect(),
            (Discovery::Dns(d), Some(prev)) if prev.discovery == discovery => prev
                .endpoints
                .load()
                .endpoints
                .iter()
                .map(|e| (SocketAddr::new(e.addr.ip(), d.port), e.weight, None))
                .collect(),
            _ => Vec::new(),
        };
        backend.set_endpoints_from(seed, previous.map(|p| &**p));
        Arc::new(backend)
    }

    /// Replaces the endpoint set; endpoints already known keep their load and pool.
    pub fn set_endpoints(&self, eps: Vec<(SocketAddr, u32, Option<Arc<str>>)>) {
        self.set_endpoints_from(eps, None)
    }

    fn set_endpoints_from(
        &self,
        eps: Vec<(SocketAddr, u32, Option<Arc<str>>)>,
        other: Option<&Backend>,
    ) {
        let mut known: HashMap<SocketAddr, Arc<Endpoint>> = HashMap::new();
        for src in [Some(self), other].into_iter().flatten() {
            for e in src.endpoints.load().endpoints.iter() {
                known.entry(e.addr).or_insert_with(|| e.clone());
            }
        }
        let endpoints: Vec<Arc<Endpoint>> = eps
            .into_iter()
            .map(|(addr, weight, identity)| match known.get(&addr) {
                Some(e) => {
                    // Without active checks nothing would ever clear an old
                    // "unhealthy" verdict: such endpoints start over.
                    let restart = self.health_check.is_none() && e.health.is_unhealthy();
                    let same_identity = e.identity == identity;
                    if !restart && e.weight == weight && same_identity {
                        return e.clone();
                    }
                    Arc::new(Endpoint {
                        addr,
                        weight,
                        // Connections verified against another identity must not be reused.
                        pool: match same_identity {
                            true => e.pool.clone(),
                            false => Arc::new(Pool::default()),
                        },
                        identity,
                        load: e.load.clone(),
                        outlier: e.outlier.clone(),
                        health: match restart {
                            true => Arc::new(Health::default()),
                            false => e.health.clone(),
                        },
                        hash_id: e.hash_id,
                    })
                }
                None => Arc::new(Endpoint {
                    weight,
                    identity,
                    ..Endpoint::new(addr)
                }),
            })
            .collect();
        let balancer = Balancer::new(self.policy.clone(), &endpoints);
        self.endpoints.store(Arc::new(EndpointSet {
            endpoints,
            balancer,
        }));
    }
}

/// An endpoint chosen for one try.
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    /// This try is the single probe of a half-open (previously ejected) endpoint.
    pub probe: bool,
}

impl Backend {
    /// Chooses an endpoint: never one already `tried` by this request when
    /// another exists; never an ejected or unhealthy one — unless fewer than
    /// `panicThreshold` % are available, when all of them share the load
    /// rather than overloading the few left (panic mode).
    pub fn pick(
        &self,
        hash: Option<u64>,
        tried: &[SocketAddr],
        metrics: &crate::telemetry::metrics::Metrics,
    ) -> Option<Pick> {
        use crate::resilience::outlier::Admission;
        let set = self.endpoints.load();
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let usable = |e: &Endpoint| {
            !e.health.is_unhealthy()
                && matches!(e.outlier.admission(), Admission::Open | Admission::ProbeDue)
        };
        let available = eps.iter().filter(|e| usable(e)).count();
        let panic = (available as u64) * 100
            < u64::from(self.resilience.panic_threshold) * eps.len() as u64;
        self.note_panic(panic, available, eps.len(), metrics);
        let avoid = |i: usize| !panic && !usable(&eps[i]);
        let fresh = |i: usize| tried.contains(&eps[i].addr) || avoid(i);
        let mut idx = set.balancer.pick_filtered(eps, hash, fresh)?;
        if fresh(idx) {
            // Every usable endpoint was tried already: try one of them again
            // rather than one that is ejected or failing its checks.
            idx = set.balancer.pick_filtered(eps, hash, avoid)?;
        }
        let endpoint = eps[idx].clone();
        let probe = endpoint.outlier.try_probe();
        Some(Pick { endpoint, probe })
    }

    /// Logs panic mode once on entry and once on exit, and keeps the gauge.
    fn note_panic(
        &self,
        panic: bool,
        available: usize,
        total: usize,
        metrics: &crate::telemetry::metrics::Metrics,
    ) {
        use std::sync::atomic::Ordering;
        if self.panic.load(Ordering::Relaxed) == panic {
            return;
        }
        if self.panic.swap(panic, Ordering::Relaxed) != panic {
            let g = metrics
                .panic_mode
                .get_or_create(&crate::telemetry::metrics::BackendLabels {
                    backend: self.key.to_string(),
                })
                .clone();
            g.set(i64::from(panic));
            if panic {
                tracing::warn!(backend = %self.key, available, total, threshold = self.resilience.panic_threshold, "panic mode: too few healthy endpoints, balancing over all of them");
            } else {
                tracing::info!(backend = %self.key, available, total, "panic mode over");
            }
        }
    }

    /// How many endpoints are out of the balancer now (ejected or unhealthy).
    pub fn unavailable(&self) -> usize {
        self.endpoints
            .load()
            .endpoints
            .iter()
            .filter(|e| e.health.is_unhealthy() || e.outlier.is_ejected())
            .count()
    }
}
