//! The config in force, compiled into lookup-ready form and published
//! through `ArcSwap`: a reload is one pointer swap, and each request finishes
//! on the snapshot it started with.

use crate::backend::Backend;
use crate::config::policy::InboundMode;
use crate::config::{ConfigSet, Protocol};
use crate::http::route::{Filters, Matcher, Precedence};
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    pub retry: Option<crate::config::route::RouteRetry>,
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
    /// Looked up on every request: a fast (non-SipHash) hasher; the keys
    /// come from config, so there is no flooding to defend against.
    pub hosts: rustc_hash::FxHashMap<String, Arc<VirtualHost>>,
    /// `*.example.com` hostnames, as (".example.com", host).
    pub wildcard_hosts: Vec<(String, Arc<VirtualHost>)>,
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

/// A match of some rule competing for an authority: its precedence, its
/// position in the files (the tie-breaker), and the rule it leads to.
type Candidate = (Precedence, usize, Matcher, Arc<Rule>);

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

fn authorities(name: &str, ns: &str, port: Option<u16>, local_ns: &str) -> Vec<String> {
    let mut hosts = vec![
        format!("{name}.{ns}"),
        format!("{name}.{ns}.svc"),
        format!("{name}.{ns}.svc.cluster.local"),
    ];
    // A bare name means a service of the caller's own namespace, as in Kubernetes.
    if ns == local_ns {
        hosts.push(name.to_owned());
    }
    if let Some(p) = port {
        let with_port: Vec<String> = hosts.iter().map(|h| format!("{h}:{p}")).collect();
        hosts.extend(with_port);
    }
    hosts
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            hosts: Default::default(),
            wildcard_hosts: Vec::new(),
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
        let mut backends: HashMap<Arc<str>, Arc<Backend>> = HashMap::new();
        for b in &config.backends {
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
            let rt = Backend::build(b, policy, previous, cx.pool_idle_timeout);
            backends.insert(rt.key.clone(), rt);
        }

        // Each Backend is reachable by its own name with an implicit catch-all rule.
        let mut hosts: rustc_hash::FxHashMap<String, Arc<VirtualHost>> = Default::default();
        let mut by_address = HashMap::new();
        for b in backends.values() {
            if let crate::backend::Discovery::Static(eps) = &b.discovery {
                for e in eps {
                    if let Ok(a) = e.address.parse() {
                        by_address.insert(a, b.clone());
                    }
                }
            }
            let rule = Arc::new(Rule {
                route: Arc::from(""),
                filters: Filters::default(),
                backends: vec![WeightedBackend {
                    backend: b.clone(),
                    weight: 1,
                    filters: Filters::default(),
                    metrics: cx.metrics.route("outbound", "", &b.key),
                }],
                total_weight: 1,
                request_timeout: None,
                backend_timeout: None,
                local_metrics: cx.metrics.route("outbound", "", &b.key),
                retry: None,
            });
            let vh = Arc::new(VirtualHost {
                name: b.key.clone(),
                matches: if b.protocol == Protocol::Tcp {
                    Vec::new()
                } else {
                    vec![(Matcher::any(), rule)]
                },
                backend: Some(b.clone()),
            });
            for h in authorities(&b.name, &b.namespace, b.port, cx.namespace) {
                hosts.insert(h, vh.clone());
            }
        }

        // Routes take over their parents' authorities; several routes on one parent merge.
        let mut merged: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut order = 0usize;
        for r in &config.http_routes {
            let route_key: Arc<str> = Arc::from(r.key());
            let mut names: Vec<String> = Vec::new();
            for p in &r.spec.parent_refs {
                let ns = p.namespace.as_deref().unwrap_or(&r.meta.namespace);
                let port = p.port.or_else(|| {
                    backends
                        .get(format!("{ns}/{}", p.name).as_str())
                        .and_then(|b| b.port)
                });
                names.extend(authorities(&p.name, ns, port, cx.namespace));
            }
            let mut wild: Vec<String> = Vec::new();
            for h in &r.spec.hostnames {
                match h.strip_prefix('*') {
                    Some(suffix) => wild.push(suffix.to_ascii_lowercase()),
                    None => names.push(h.to_ascii_lowercase()),
                }
            }
            for rule in &r.spec.rules {
                let compiled = Arc::new(compile_rule(
                    &route_key,
                    &r.meta.namespace,
                    rule,
                    &backends,
                    cx.metrics,
                ));
                let matchers: Vec<Matcher> = if rule.matches.is_empty() {
                    vec![Matcher::any()]
                } else {
                    rule.matches.iter().map(Matcher::new).collect()
                };
                for m in matchers {
                    order += 1;
                    for n in &names {
                        merged.entry(n.clone()).or_default().push((
                            m.precedence(),
                            order,
                            m.clone(),
                            compiled.clone(),
                        ));
                    }
                    for w in &wild {
                        wildcard.entry(w.clone()).or_default().push((
                            m.precedence(),
                            order,
                            m.clone(),
                            compiled.clone(),
                        ));
                    }
                }
            }
        }
        let finish = |name: &str, mut list: Vec<Candidate>, backend: Option<Arc<Backend>>| {
            list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            Arc::new(VirtualHost {
                name: Arc::from(name),
                matches: list.into_iter().map(|(_, _, m, r)| (m, r)).collect(),
                backend,
            })
        };
        for (host, list) in merged {
            let backend = hosts.get(&host).and_then(|vh| vh.backend.clone());
            let vh = finish(&host, list, backend);
            hosts.insert(host, vh);
        }
        let mut wildcard_hosts: Vec<(String, Arc<VirtualHost>)> = wildcard
            .into_iter()
            .map(|(suffix, list)| (suffix.clone(), finish(&suffix, list, None)))
            .collect();
        // Longest suffix first: the most specific wildcard wins.
        wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));

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
            hosts,
            wildcard_hosts,
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
    pub fn tracing(&self) -> Option<&crate::config::policy::MeshTracing> {
        self.config
            .mesh_configs
            .first()
            .and_then(|m| m.spec.tracing.as_ref())
    }

    /// The virtual host for an authority (`host` or `host:port`), case-insensitively.
    pub fn host(&self, authority: &str) -> Option<&Arc<VirtualHost>> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.host(&authority.to_ascii_lowercase());
        }
        let authority = authority.trim_end_matches('.');
        if let Some(vh) = self.hosts.get(authority) {
            return Some(vh);
        }
        let host = strip_port(authority);
        if host.len() != authority.len() {
            if let Some(vh) = self.hosts.get(host) {
                return Some(vh);
            }
        }
        self.wildcard_hosts
            .iter()
            .find(|(suffix, _)| host.ends_with(suffix.as_str()))
            .map(|(_, vh)| vh)
    }
}

/// `host:port` → `host`; leaves IPv6 literals (`[::1]:80`) their brackets.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map(|(h, _)| &authority[..h.len() + 1])
            .unwrap_or(authority);
    }
    // Digits back from the end, then a colon: a byte loop, as this runs on
    // every request.
    let b = authority.as_bytes();
    let mut i = b.len();
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    match i.checked_sub(1) {
        Some(colon) if b[colon] == b':' => &authority[..colon],
        _ => authority,
    }
}

fn compile_rule(
    route: &Arc<str>,
    route_ns: &str,
    rule: &crate::config::route::RouteRule,
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
                    .unwrap_or(crate::config::defaults::BACKEND_REF_WEIGHT),
                filters: Filters::new(&b.filters),
                metrics: metrics.route("outbound", route, &be.key),
            });
        }
    }
    let timeouts = rule.timeouts.as_ref();
    let nonzero = |d: Option<crate::config::Dur>| d.map(|d| d.0).filter(|d| !d.is_zero());
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

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped() {
        for (a, want) in [
            ("reviews:8080", "reviews"),
            ("reviews", "reviews"),
            ("reviews:", "reviews"),
            ("127.0.0.1:18083", "127.0.0.1"),
            ("a:b:80", "a:b"),
            ("host:http", "host:http"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("8080", "8080"),
            (":80", ""),
            ("", ""),
        ] {
            assert_eq!(strip_port(a), want, "{a}");
        }
    }
}
