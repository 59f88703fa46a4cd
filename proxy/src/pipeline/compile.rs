//! Resources → snapshot: everything a request will need, resolved once.
//!
//! Backends keep their runtime (pools, load, ejection state, DNS and
//! health tasks) across a change when their definition is the same; the
//! name table decides which rules serve which authority; each rule is
//! compiled once however many names lead to it.

use crate::backend::{Backend, Discovery};
use crate::proxy::ProxyOptions;
use crate::route::{Filters, Matcher};
use crate::snapshot::{MeshSettings, Mirror, Rule, Snapshot, VirtualHost, WeightedBackend};
use crate::telemetry::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_mesh::config::grpc_route::GrpcRouteRule;
use weft_mesh::config::policy::TrafficPolicySpec;
use weft_mesh::config::route::{BackendRef, Filter, RouteRetry, RouteRule, Timeouts};
use weft_mesh::config::{defaults, BackendSpec, ConfigSet, Dur, Resource};
use weft_mesh::names::NameTable;

/// Compiles a validated config into snapshot `version`, reusing what
/// `previous` built for unchanged Backends.
pub(crate) fn compile(
    config: ConfigSet,
    version: u64,
    opts: &ProxyOptions,
    metrics: &Metrics,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let config = Arc::new(config);
    // Backends in the config's order, so the name table's indices find them.
    let built: Vec<Arc<Backend>> = config
        .backends
        .iter()
        .map(|b| {
            let previous = previous.and_then(|s| s.backends.get(b.key().as_str()));
            Backend::build(
                b,
                policy_of(&config, b).map(|p| &p.spec),
                previous,
                opts.pool_idle_timeout,
                metrics,
            )
        })
        .collect();
    let backends: HashMap<Arc<str>, Arc<Backend>> =
        built.iter().map(|b| (b.key.clone(), b.clone())).collect();
    let mut by_address = HashMap::new();
    for b in &built {
        if let Discovery::Static(eps) = &b.discovery {
            for e in eps {
                if let Ok(a) = e.address.parse() {
                    by_address.insert(a, b.clone());
                }
            }
        }
    }

    // Each rule is compiled once, however many names lead to it.
    let mut rules: HashMap<(bool, usize, usize), Arc<Rule>> = HashMap::new();
    let mut rule = |grpc: bool, route: usize, rule: usize| -> Arc<Rule> {
        rules
            .entry((grpc, route, rule))
            .or_insert_with(|| {
                let (key, ns, spec) = match grpc {
                    true => {
                        let r = &config.grpc_routes[route];
                        (
                            r.key(),
                            &r.meta.namespace,
                            RuleSpec::grpc(&r.spec.rules[rule]),
                        )
                    }
                    false => {
                        let r = &config.http_routes[route];
                        (
                            r.key(),
                            &r.meta.namespace,
                            RuleSpec::http(&r.spec.rules[rule]),
                        )
                    }
                };
                let mut compiled = compile_rule(&Arc::from(key), ns, spec, &backends, metrics);
                compiled.index = rule as u32;
                Arc::new(compiled)
            })
            .clone()
    };
    let table = NameTable::build(&config, &opts.namespace);
    let names = table.map(|d| VirtualHost {
        name: Arc::from(d.name.as_str()),
        matches: match d.implicit_backend(&config) {
            Some(b) => vec![(Matcher::any(), implicit_rule(&built[b], metrics))],
            None => d
                .matches
                .iter()
                .map(|m| (Matcher::of(&config, m), rule(m.grpc, m.route, m.rule)))
                .collect(),
        },
        backend: d.backend.map(|b| built[b].clone()),
    });
    let mut mesh = MeshSettings::from_flags(opts.access_log, opts.inbound_mode);
    if let Some(m) = config.mesh_configs.first() {
        mesh = mesh.with_mesh_config(&m.spec);
    }
    let authz =
        crate::authz::InboundAuthz::compile(&config, opts.service.as_deref(), &opts.namespace);
    let rate_limit = crate::resilience::rate_limit::compile(
        &config,
        opts.service.as_deref(),
        &opts.namespace,
        metrics,
        previous.and_then(|s| s.rate_limit.as_ref()),
    );
    Snapshot {
        version,
        names,
        backends,
        by_address,
        config,
        applied_at: SystemTime::now(),
        mesh,
        authz,
        rate_limit,
    }
}

/// The TrafficPolicy that targets Backend `b`, if any.
pub(crate) fn policy_of<'a>(
    config: &'a ConfigSet,
    b: &Resource<BackendSpec>,
) -> Option<&'a Resource<TrafficPolicySpec>> {
    config.traffic_policies.iter().find(|p| {
        p.spec.target_ref.name == b.meta.name
            && p.spec
                .target_ref
                .namespace
                .as_deref()
                .unwrap_or(&p.meta.namespace)
                == b.meta.namespace
    })
}

/// A Backend's implicit catch-all rule: every request to its name goes to it.
fn implicit_rule(b: &Arc<Backend>, metrics: &Metrics) -> Arc<Rule> {
    Arc::new(Rule {
        route: Arc::from(""),
        index: 0,
        filters: Filters::default(),
        backends: vec![WeightedBackend {
            backend: b.clone(),
            weight: 1,
            filters: Filters::default(),
            metrics: metrics.route("outbound", "", &b.key),
            retry: b.resilience.retry.clone(),
            per_try_timeout: b.resilience.retry.per_try_timeout,
        }],
        total_weight: 1,
        request_timeout: None,
        local_metrics: metrics.route("outbound", "", &b.key),
        mirror: None,
    })
}

/// What a rule of either route kind gives its compiled form (a GRPCRoute
/// rule has no timeouts or retry of its own).
struct RuleSpec<'a> {
    filters: &'a [Filter],
    backend_refs: &'a [BackendRef],
    timeouts: Option<&'a Timeouts>,
    retry: Option<&'a RouteRetry>,
}

impl<'a> RuleSpec<'a> {
    fn http(r: &'a RouteRule) -> RuleSpec<'a> {
        RuleSpec {
            filters: &r.filters,
            backend_refs: &r.backend_refs,
            timeouts: r.timeouts.as_ref(),
            retry: r.retry.as_ref(),
        }
    }

    fn grpc(r: &'a GrpcRouteRule) -> RuleSpec<'a> {
        RuleSpec {
            filters: &r.filters,
            backend_refs: &r.backend_refs,
            timeouts: None,
            retry: None,
        }
    }
}

fn compile_rule(
    route: &Arc<str>,
    route_ns: &str,
    rule: RuleSpec<'_>,
    backends: &HashMap<Arc<str>, Arc<Backend>>,
    metrics: &Metrics,
) -> Rule {
    let nonzero = |d: Option<Dur>| d.map(|d| d.0).filter(|d| !d.is_zero());
    let timeouts = rule.timeouts;
    let backend_timeout = nonzero(timeouts.and_then(|t| t.backend_request));
    let mut out = Vec::new();
    for b in rule.backend_refs {
        let ns = b.namespace.as_deref().unwrap_or(route_ns);
        if let Some(be) = backends.get(format!("{ns}/{}", b.name).as_str()) {
            let retry = match rule.retry {
                Some(r) => Arc::new(be.resilience.retry.with_route(r)),
                None => be.resilience.retry.clone(),
            };
            out.push(WeightedBackend {
                backend: be.clone(),
                weight: b.weight.unwrap_or(defaults::BACKEND_REF_WEIGHT),
                filters: Filters::new(&b.filters),
                metrics: metrics.route("outbound", route, &be.key),
                per_try_timeout: shorter(backend_timeout, retry.per_try_timeout),
                retry,
            });
        }
    }
    Rule {
        route: route.clone(),
        index: 0,
        filters: Filters::new(rule.filters),
        total_weight: out.iter().map(|b| b.weight as u64).sum(),
        backends: out,
        request_timeout: nonzero(timeouts.and_then(|t| t.request)),
        local_metrics: metrics.route("outbound", route, ""),
        mirror: mirror_of(route, route_ns, rule.filters, backends, metrics).map(|mut m| {
            let request = nonzero(timeouts.and_then(|t| t.request));
            m.timeout = shorter(Some(m.timeout), request).unwrap_or(m.timeout);
            m
        }),
    }
}

/// The rule's `RequestMirror` (validation allows one), its Backend
/// resolved; the copies are never retried, and time out after
/// `MIRROR_TIMEOUT` (the caller shortens it to the rule's timeout).
fn mirror_of(
    route: &Arc<str>,
    route_ns: &str,
    filters: &[Filter],
    backends: &HashMap<Arc<str>, Arc<Backend>>,
    metrics: &Metrics,
) -> Option<Mirror> {
    let m = filters.iter().find_map(|f| f.request_mirror.as_ref())?;
    let b = &m.backend_ref;
    let ns = b.namespace.as_deref().unwrap_or(route_ns);
    let be = backends.get(format!("{ns}/{}", b.name).as_str())?;
    let once = RouteRetry {
        attempts: Some(0),
        ..RouteRetry::default()
    };
    Some(Mirror {
        backend: WeightedBackend {
            backend: be.clone(),
            weight: 1,
            filters: Filters::default(),
            metrics: metrics.route("outbound", route, &be.key),
            retry: Arc::new(be.resilience.retry.with_route(&once)),
            per_try_timeout: be.resilience.retry.per_try_timeout,
        },
        per_million: m.per_million(),
        timeout: weft_mesh::config::defaults::MIRROR_TIMEOUT,
        metrics: crate::snapshot::MirrorMetrics::new(metrics, &be.key),
    })
}

/// The shorter of two optional limits.
fn shorter(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
