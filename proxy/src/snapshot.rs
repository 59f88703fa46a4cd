//! The config in force, compiled into lookup-ready form and published
//! through `ArcSwap`: a reload is one pointer swap, and each request finishes
//! on the snapshot it started with.

use crate::backend::Backend;
use crate::http::route::{Filters, Matcher};
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_mesh::config::policy::InboundMode;
use weft_mesh::config::ConfigSet;
use weft_mesh::names::NameTable;

/// One backend a rule may send to, with its share.
pub struct WeightedBackend {
    pub backend: Arc<Backend>,
    pub weight: u32,
    pub filters: Filters,
    pub metrics: RouteMetrics,
}

/// A rule of an HTTPRoute (or the implicit catch-all of a Backend).
pub struct Rule {
    /// `namespace/name` of the route ("" for a Backend's implicit route).
    pub route: Arc<str>,
    pub filters: Filters,
    pub backends: Vec<WeightedBackend>,
    pub total_weight: u64,
    /// Whole request (until response headers), retries included.
    pub request_timeout: Option<Duration>,
    /// Each try.
    pub backend_timeout: Option<Duration>,
    /// Metrics for answers the rule makes itself (redirects, no backend).
    pub local_metrics: RouteMetrics,
    /// The route's retry settings (GEP-1731), over the backend's.
    pub retry: Option<weft_mesh::config::route::RouteRetry>,
}

/// Everything reachable under one authority.
pub struct VirtualHost {
    pub name: Arc<str>,
    /// (match, rule) in precedence order: the first that matches wins.
    pub matches: Vec<(Matcher, Arc<Rule>)>,
    /// The Backend of that name, for CONNECT and opaque TCP.
    pub backend: Option<Arc<Backend>>,
}

pub struct Snapshot {
    pub version: u64,
    /// Every name this proxy routes, looked up on every request.
    pub names: NameTable<VirtualHost>,
    pub backends: HashMap<Arc<str>, Arc<Backend>>,
    /// Backends by static endpoint address, to classify intercepted connections.
    pub by_address: HashMap<SocketAddr, Arc<Backend>>,
    pub config: Arc<ConfigSet>,
    pub applied_at: SystemTime,
    /// The access log is on: the MeshConfig's `accessLog.enabled`, else `--access-log`.
    pub access_log: bool,
    /// Inbound AuthorizationPolicy for this sidecar's service.
    pub authz: crate::authz::InboundAuthz,
    /// Strict inbound mode: plaintext inbound connections are refused.
    pub inbound_strict: bool,
}

/// What the compiler needs besides the config.
pub struct CompileContext<'a> {
    pub namespace: &'a str,
    pub metrics: &'a Metrics,
    pub previous: Option<&'a Snapshot>,
    pub pool_idle_timeout: Duration,
    /// `--access-log`, for when no MeshConfig says.
    pub access_log: bool,
    /// `--service`: the service whose AuthorizationPolicies apply inbound.
    pub service: Option<&'a str>,
    /// `--inbound-mode`, for when no MeshConfig says.
    pub inbound_mode: InboundMode,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            names: NameTable::empty(),
            backends: HashMap::new(),
            by_address: HashMap::new(),
            config: Arc::new(ConfigSet::default()),
            applied_at: SystemTime::now(),
            access_log: false,
            authz: crate::authz::InboundAuthz::default(),
            inbound_strict: false,
        }
    }

    /// Compiles a validated config.
    pub fn compile(config: ConfigSet, version: u64, cx: &CompileContext) -> Snapshot {
        let config = Arc::new(config);
        // Backends in the config's order, so the name table's indices find them.
        let built: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                let policy = config
                    .traffic_policies
                    .iter()
                    .find(|p| {
                        p.spec.target_ref.name == b.meta.name
                            && p.spec
                                .target_ref
                                .namespace
                                .as_deref()
                                .unwrap_or(&p.meta.namespace)
                                == b.meta.namespace
                    })
                    .map(|p| &p.spec);
                let key = b.key();
                let previous = cx.previous.and_then(|s| s.backends.get(key.as_str()));
                Backend::build(b, policy, previous, cx.pool_idle_timeout)
            })
            .collect();
        let backends: HashMap<Arc<str>, Arc<Backend>> =
            built.iter().map(|b| (b.key.clone(), b.clone())).collect();
        let mut by_address = HashMap::new();
        for b in &built {
            if let crate::backend::Discovery::Static(eps) = &b.discovery {
                for e in eps {
                    if let Ok(a) = e.address.parse() {
                        by_address.insert(a, b.clone());
                    }
                }
            }
        }

        // Each rule is compiled once, however many names lead to it.
        let mut rules: HashMap<(usize, usize), Arc<Rule>> = HashMap::new();
        let mut rule = |route: usize, rule: usize| -> Arc<Rule> {
            rules
                .entry((route, rule))
                .or_insert_with(|| {
                    let r = &config.http_routes[route];
                    let key: Arc<str> = Arc::from(r.key());
                    Arc::new(compile_rule(
                        &key,
                        &r.meta.namespace,
                        &r.spec.rules[rule],
                        &backends,
                        cx.metrics,
                    ))
                })
                .clone()
        };
        let table = NameTable::build(&config, cx.namespace);
        let names = table.map(|d| VirtualHost {
            name: Arc::from(d.name.as_str()),
            matches: match d.implicit_backend(&config) {
                Some(b) => vec![(Matcher::any(), implicit_rule(&built[b], cx.metrics))],
                None => d
                    .matches
                    .iter()
                    .map(|m| {
                        let spec = &config.http_routes[m.route].spec.rules[m.rule];
                        let matcher = match m.matched {
                            Some(i) => Matcher::new(&spec.matches[i]),
                            None => Matcher::any(),
                        };
                        (matcher, rule(m.route, m.rule))
                    })
                    .collect(),
            },
            backend: d.backend.map(|b| built[b].clone()),
        });

        let access_log = config
            .mesh_configs
            .first()
            .and_then(|m| m.spec.access_log.as_ref())
            .and_then(|a| a.enabled)
            .unwrap_or(cx.access_log);
        let inbound_mode = config
            .mesh_configs
            .first()
            .and_then(|m| m.spec.default_inbound_mode)
            .unwrap_or(cx.inbound_mode);
        let authz = crate::authz::InboundAuthz::compile(&config, cx.service, cx.namespace);
        Snapshot {
            version,
            names,
            backends,
            by_address,
            config,
            applied_at: SystemTime::now(),
            access_log,
            authz,
            inbound_strict: inbound_mode == InboundMode::Strict,
        }
    }

    /// The MeshConfig's tracing settings, if it has any.
    pub fn tracing(&self) -> Option<&weft_mesh::config::policy::MeshTracing> {
        self.config
            .mesh_configs
            .first()
            .and_then(|m| m.spec.tracing.as_ref())
    }

    /// The virtual host for an authority (`host` or `host:port`), case-insensitively.
    pub fn host(&self, authority: &str) -> Option<&VirtualHost> {
        self.names.get(authority)
    }
}

/// A Backend's implicit catch-all rule: every request to its name goes to it.
fn implicit_rule(b: &Arc<Backend>, metrics: &Metrics) -> Arc<Rule> {
    Arc::new(Rule {
        route: Arc::from(""),
        filters: Filters::default(),
        backends: vec![WeightedBackend {
            backend: b.clone(),
            weight: 1,
            filters: Filters::default(),
            metrics: metrics.route("outbound", "", &b.key),
        }],
        total_weight: 1,
        request_timeout: None,
        backend_timeout: None,
        local_metrics: metrics.route("outbound", "", &b.key),
        retry: None,
    })
}

fn compile_rule(
    route: &Arc<str>,
    route_ns: &str,
    rule: &weft_mesh::config::route::RouteRule,
    backends: &HashMap<Arc<str>, Arc<Backend>>,
    metrics: &Metrics,
) -> Rule {
    let mut out = Vec::new();
    for b in &rule.backend_refs {
        let ns = b.namespace.as_deref().unwrap_or(route_ns);
        if let Some(be) = backends.get(format!("{ns}/{}", b.name).as_str()) {
            out.push(WeightedBackend {
                backend: be.clone(),
                weight: b
                    .weight
                    .unwrap_or(weft_mesh::config::defaults::BACKEND_REF_WEIGHT),
                filters: Filters::new(&b.filters),
                metrics: metrics.route("outbound", route, &be.key),
            });
        }
    }
    let timeouts = rule.timeouts.as_ref();
    let nonzero = |d: Option<weft_mesh::config::Dur>| d.map(|d| d.0).filter(|d| !d.is_zero());
    Rule {
        route: route.clone(),
        filters: Filters::new(&rule.filters),
        total_weight: out.iter().map(|b| b.weight as u64).sum(),
        backends: out,
        request_timeout: nonzero(timeouts.and_then(|t| t.request)),
        backend_timeout: nonzero(timeouts.and_then(|t| t.backend_request)),
        local_metrics: metrics.route("outbound", route, ""),
        retry: rule.retry.clone(),
    }
}
