//! A destination at run time: its endpoints (live, swapped atomically), how
//! to balance over them, and how to connect to them.
//!
//! Backends survive config reloads when their definition is unchanged, so
//! pools, latency estimates and DNS watches carry on; when it does change,
//! endpoints at the same address keep their load and connections.

pub(crate) mod dns;
mod endpoint;
pub(crate) mod health_check;
mod pick;
pub(crate) mod sweep;

pub(crate) use endpoint::{Endpoint, EndpointSet};

use crate::balance::{Balancer, Policy};
use crate::resilience::health::Health;
use crate::resilience::policy::Resilience;
use crate::telemetry::metrics::{BackendMetrics, Metrics};
use crate::transport::{Pool, PoolSettings};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use weft_mesh::config::backend::{DnsSpec, EndpointSpec};
use weft_mesh::config::policy::{HashOn, LbPolicy};
use weft_mesh::config::{defaults, BackendSpec, Protocol, Resource, TrafficPolicySpec};

/// What RingHash hashes.
#[derive(Clone, Debug)]
pub(crate) enum HashKey {
    None,
    Header(http::HeaderName),
    Cookie(String),
    SourceIp,
}

/// Where endpoints come from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Discovery {
    Static(Vec<EndpointSpec>),
    Dns(DnsSpec),
}

/// Last DNS result, for `/endpoints`.
#[derive(Clone, Debug, Default)]
pub(crate) struct DnsStatus {
    pub(crate) last_error: Option<String>,
    pub(crate) resolved_addresses: usize,
    pub(crate) ttl_secs: u64,
}

pub(crate) struct Backend {
    /// `namespace/name`.
    pub(crate) key: Arc<str>,
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) settings: PoolSettings,
    pub(crate) policy: Policy,
    pub(crate) hash_key: HashKey,
    /// Protocols besides WebSocket clients may switch to (lower-cased).
    pub(crate) upgrades: Vec<Box<str>>,
    pub(crate) discovery: Discovery,
    /// Made from a Kubernetes Service (`weft.dev/service`): DNS answers
    /// that are this host's own addresses are dropped (see [`dns`]).
    pub(crate) from_service: bool,
    pub(crate) endpoints: ArcSwap<EndpointSet>,
    pub(crate) dns_status: Mutex<DnsStatus>,
    pub(crate) resilience: Arc<Resilience>,
    /// The health-check settings, if active checks are on.
    pub(crate) health_check: Option<weft_mesh::config::policy::HealthCheck>,
    /// Whether the last pick found too few healthy endpoints (logged on change).
    pub(crate) panic: std::sync::atomic::AtomicBool,
    /// This backend's own metrics (retries, overflows, ejections, ...).
    pub(crate) metrics: BackendMetrics,
    /// Faults injected into requests to it (TrafficPolicy `fault`).
    pub(crate) fault: Option<crate::resilience::fault::Fault>,
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
    from_service: bool,
}

pub(crate) fn lb_policy(p: LbPolicy) -> Policy {
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
    pub(crate) fn build(
        res: &Resource<BackendSpec>,
        policy: Option<&TrafficPolicySpec>,
        previous: Option<&Arc<Backend>>,
        default_idle_timeout: std::time::Duration,
        metrics: &Metrics,
    ) -> Arc<Backend> {
        let from_service = res
            .meta
            .annotations
            .contains_key(weft_mesh::names::SERVICE_ANNOTATION);
        let definition = Definition {
            spec: res.spec.clone(),
            policy: policy.cloned(),
            default_idle_timeout,
            from_service,
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
            protocol: res.spec.protocol,
            settings,
            policy: policy_kind.clone(),
            hash_key: hash_key(lb.and_then(|l| l.hash_on.as_ref())),
            upgrades: res
                .spec
                .upgrades
                .iter()
                .map(|u| u.to_ascii_lowercase().into())
                .collect(),
            discovery: discovery.clone(),
            from_service,
            endpoints: ArcSwap::from_pointee(EndpointSet {
                endpoints: Vec::new(),
                balancer: Balancer::new::<Arc<Endpoint>>(policy_kind, &[]),
            }),
            dns_status: Mutex::new(DnsStatus::default()),
            resilience: Resilience::new(policy),
            health_check: policy.and_then(|p| p.health_check.clone()),
            panic: std::sync::atomic::AtomicBool::new(false),
            metrics: metrics.backend(&res.key()),
            fault: policy
                .and_then(|p| p.fault.as_ref())
                .map(|f| crate::resilience::fault::Fault::new(f, &res.key(), metrics)),
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
    pub(crate) fn set_endpoints(&self, eps: Vec<(SocketAddr, u32, Option<Arc<str>>)>) {
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

/// A RoundRobin backend over `n` loopback addresses (never dialled) for
/// unit tests, its TrafficPolicy spec taking `policy` (YAML lines indented
/// under `spec:`) besides the balancer.
#[cfg(test)]
pub(crate) fn loopback_backend(
    n: usize,
    policy: &str,
    metrics: &crate::telemetry::metrics::Metrics,
) -> Arc<Backend> {
    let eps: Vec<String> = (1..=n)
        .map(|i| format!("{{address: \"127.0.0.1:{i}\"}}"))
        .collect();
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{}]\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  loadBalancer: {{policy: RoundRobin}}\n{policy}",
        eps.join(", ")
    );
    let config = weft_mesh::config::load_sources(vec![("t.yaml".into(), yaml)]).expect("valid");
    Backend::build(
        &config.backends[0],
        config.traffic_policies.first().map(|p| &p.spec),
        None,
        std::time::Duration::from_secs(55),
        metrics,
    )
}
