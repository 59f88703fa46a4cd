//! Checks that serde cannot express: references between resources, value
//! ranges, regexes that must compile. Each error carries a field path.

mod fault;
mod grpc;
mod hedge;
mod mesh;
mod rate_limit;
mod shared;
mod success_rate;

use super::route::{
    Filter, FilterType, PathMatchType, PathModifier, PathModifierType, ValueMatchType,
};
use super::{defaults, ConfigError, ConfigSet, Origin, Resource};
use std::collections::HashSet;

pub(super) fn validate(set: &ConfigSet) -> Vec<ConfigError> {
    let mut v = Validator {
        errors: Vec::new(),
        set,
    };
    v.names();
    for b in &set.backends {
        v.backend(b);
    }
    for r in &set.http_routes {
        v.route(r);
    }
    for r in &set.grpc_routes {
        v.grpc_route(r);
    }
    for p in &set.traffic_policies {
        v.traffic_policy(p);
        v.fault(p);
        v.hedge(p);
    }
    for p in &set.authorization_policies {
        v.authz(p);
    }
    if set.mesh_configs.len() > 1 {
        let second = &set.mesh_configs[1];
        v.errors
            .push(second.origin.error("kind", "only one MeshConfig may exist"));
    }
    for m in &set.mesh_configs {
        v.mesh_config(m);
    }
    v.errors
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    set: &'a ConfigSet,
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl Validator<'_> {
    fn err(&mut self, o: &Origin, path: &str, msg: impl Into<String>) {
        self.errors.push(o.error(path, msg));
    }

    fn names(&mut self) {
        fn check<S>(v: &mut Validator, kind: &str, items: &[Resource<S>]) {
            let mut seen = HashSet::new();
            for r in items {
                if !is_dns_name(&r.meta.name) {
                    v.err(
                        &r.origin,
                        "metadata.name",
                        format!(
                            "{:?} is not a valid name (lowercase letters, digits, '-' and '.')",
                            r.meta.name
                        ),
                    );
                }
                if !is_dns_name(&r.meta.namespace) {
                    v.err(
                        &r.origin,
                        "metadata.namespace",
                        format!("{:?} is not a valid namespace", r.meta.namespace),
                    );
                }
                if !seen.insert(r.key()) {
                    v.err(
                        &r.origin,
                        "metadata.name",
                        format!("{kind} {} is defined twice", r.key()),
                    );
                }
            }
        }
        check(self, "HTTPRoute", &self.set.http_routes);
        check(self, "GRPCRoute", &self.set.grpc_routes);
        check(self, "Backend", &self.set.backends);
        check(self, "TrafficPolicy", &self.set.traffic_policies);
        check(
            self,
            "AuthorizationPolicy",
            &self.set.authorization_policies,
        );
    }

    fn find_backend(&self, ns: &str, name: &str) -> Option<&Resource<super::BackendSpec>> {
        self.set
            .backends
            .iter()
            .find(|b| b.meta.name == name && b.meta.namespace == ns)
    }

    fn backend(&mut self, b: &Resource<super::BackendSpec>) {
        let o = &b.origin;
        for (i, u) in b.spec.upgrades.iter().enumerate() {
            let token = !u.is_empty()
                && u.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c));
            if !token {
                self.err(
                    o,
                    &format!("spec.upgrades[{i}]"),
                    format!("{u:?} is not a protocol name (a token such as \"my-proto\")"),
                );
            } else if u.eq_ignore_ascii_case("h2c") {
                self.err(
                    o,
                    &format!("spec.upgrades[{i}]"),
                    "h2c upgrades are not passed on (HTTP/2 retired them); clients speak HTTP/2 with prior knowledge",
                );
            }
        }
        if b.spec.dns.is_some() && !b.spec.endpoints.is_empty() {
            self.err(o, "spec.dns", "use either endpoints or dns, not both");
        }
        if let Some(dns) = &b.spec.dns {
            if dns.name.is_empty() || dns.name.parse::<std::net::IpAddr>().is_ok() {
                self.err(
                    o,
                    "spec.dns.name",
                    "a DNS name is required (for fixed IPs use endpoints)",
                );
            }
            if dns.port == 0 {
                self.err(o, "spec.dns.port", "port must be 1-65535");
            }
        }
        for (i, e) in b.spec.endpoints.iter().enumerate() {
            if e.address.parse::<std::net::SocketAddr>().is_err() {
                self.err(
                    o,
                    &format!("spec.endpoints[{i}].address"),
                    format!("{:?} is not IP:port (for names use spec.dns)", e.address),
                );
            }
            if e.weight.is_some_and(|w| w > defaults::MAX_WEIGHT) {
                self.err(
                    o,
                    &format!("spec.endpoints[{i}].weight"),
                    format!("weight must be at most {}", defaults::MAX_WEIGHT),
                );
            }
            if let Some(id) = &e.identity {
                if !id.starts_with("spiffe://") {
                    self.err(
                        o,
                        &format!("spec.endpoints[{i}].identity"),
                        "identity must be a spiffe:// URI",
                    );
                }
            }
        }
    }

    fn route(&mut self, r: &Resource<super::HttpRouteSpec>) {
        let o = &r.origin;
        self.parents(o, &r.spec.parent_refs, &r.spec.hostnames);
        for (ri, rule) in r.spec.rules.iter().enumerate() {
            let rp = format!("spec.rules[{ri}]");
            let mut prefix_only = !rule.matches.is_empty();
            for (mi, m) in rule.matches.iter().enumerate() {
                let mp = format!("{rp}.matches[{mi}]");
                if let Some(path) = &m.path {
                    if path.kind != PathMatchType::PathPrefix {
                        prefix_only = false;
                    }
                    match path.kind {
                        PathMatchType::RegularExpression => {
                            if let Err(e) = regex::Regex::new(&path.value) {
                                self.err(
                                    o,
                                    &format!("{mp}.path.value"),
                                    format!("invalid regular expression: {e}"),
                                );
                            }
                        }
                        _ if !path.value.starts_with('/') => {
                            self.err(o, &format!("{mp}.path.value"), "path must start with '/'");
                        }
                        _ => {}
                    }
                }
                self.header_matches(o, &mp, &m.headers);
                for (qi, q) in m.query_params.iter().enumerate() {
                    if q.kind == ValueMatchType::RegularExpression {
                        if let Err(e) = regex::Regex::new(&q.value) {
                            self.err(
                                o,
                                &format!("{mp}.queryParams[{qi}].value"),
                                format!("invalid regular expression: {e}"),
                            );
                        }
                    }
                }
                if let Some(method) = &m.method {
                    if http::Method::from_bytes(method.as_bytes()).is_err()
                        || method.chars().any(|c| c.is_ascii_lowercase())
                    {
                        self.err(
                            o,
                            &format!("{mp}.method"),
                            format!("{method:?} is not an HTTP method (use upper case, e.g. GET)"),
                        );
                    }
                }
            }
            for (fi, f) in rule.filters.iter().enumerate() {
                self.filter(o, &format!("{rp}.filters[{fi}]"), f, prefix_only);
            }
            self.mirrors(o, &rp, &r.meta.namespace, &rule.filters, &rule.backend_refs);
            let has_redirect = rule
                .filters
                .iter()
                .any(|f| f.kind == FilterType::RequestRedirect);
            if rule.backend_refs.is_empty() && !has_redirect {
                self.err(
                    o,
                    &format!("{rp}.backendRefs"),
                    "a rule needs backendRefs (or a RequestRedirect filter)",
                );
            }
            for (bi, b) in rule.backend_refs.iter().enumerate() {
                let bp = format!("{rp}.backendRefs[{bi}]");
                self.backend_ref(o, &bp, &r.meta.namespace, &b.kind, &b.name, &b.namespace);
                if b.weight.is_some_and(|w| w > defaults::MAX_WEIGHT) {
                    self.err(
                        o,
                        &format!("{bp}.weight"),
                        format!("weight must be at most {}", defaults::MAX_WEIGHT),
                    );
                }
                for (fi, f) in b.filters.iter().enumerate() {
                    self.filter(o, &format!("{bp}.filters[{fi}]"), f, prefix_only);
                }
            }
            if let Some(t) = &rule.timeouts {
                if let (Some(req), Some(be)) = (t.request, t.backend_request) {
                    if !req.0.is_zero() && be > req {
                        self.err(
                            o,
                            &format!("{rp}.timeouts.backendRequest"),
                            "backendRequest must not exceed request",
                        );
                    }
                }
            }
            if let Some(retry) = &rule.retry {
                if retry.attempts.is_some_and(|a| a > 10) {
                    self.err(o, &format!("{rp}.retry.attempts"), "at most 10 retries");
                }
                for (ci, c) in retry.codes.iter().enumerate() {
                    if !(400..=599).contains(c) {
                        self.err(
                            o,
                            &format!("{rp}.retry.codes[{ci}]"),
                            "retry codes must be 400-599",
                        );
                    }
                }
            }
        }
    }

    fn backend_ref(
        &mut self,
        o: &Origin,
        path: &str,
        route_ns: &str,
        kind: &Option<String>,
        name: &str,
        ns: &Option<String>,
    ) {
        if let Some(k) = kind {
            if k != "Service" && k != "Backend" {
                self.err(
                    o,
                    &format!("{path}.kind"),
                    format!("kind {k:?} is not supported (Service or Backend)"),
                );
                return;
            }
        }
        let ns = ns.as_deref().unwrap_or(route_ns);
        match self.find_backend(ns, name) {
            None => self.err(
                o,
                &format!("{path}.name"),
                format!("no Backend named {name:?} in namespace {ns:?}"),
            ),
            Some(b) if b.spec.protocol == super::Protocol::Tcp => self.err(
                o,
                &format!("{path}.name"),
                format!(
                    "Backend {name:?} has protocol tcp; an HTTP or gRPC route cannot send to it"
                ),
            ),
            Some(_) => {}
        }
    }

    fn filter(&mut self, o: &Origin, path: &str, f: &Filter, prefix_only: bool) {
        let present = [
            (
                FilterType::RequestHeaderModifier,
                f.request_header_modifier.is_some(),
                "requestHeaderModifier",
            ),
            (
                FilterType::ResponseHeaderModifier,
                f.response_header_modifier.is_some(),
                "responseHeaderModifier",
            ),
            (
                FilterType::RequestRedirect,
                f.request_redirect.is_some(),
                "requestRedirect",
            ),
            (
                FilterType::URLRewrite,
                f.url_rewrite.is_some(),
                "urlRewrite",
            ),
            (
                FilterType::RequestMirror,
                f.request_mirror.is_some(),
                "requestMirror",
            ),
        ];
        for (kind, is_set, field) in present {
            if kind == f.kind && !is_set {
                self.err(
                    o,
                    &format!("{path}.type"),
                    format!("type {:?} needs the field {field}", f.kind),
                );
            }
            if kind != f.kind && is_set {
                self.err(
                    o,
                    &format!("{path}.{field}"),
                    format!("{field} does not belong to a filter of type {:?}", f.kind),
                );
            }
        }
        for m in [&f.request_header_modifier, &f.response_header_modifier]
            .into_iter()
            .flatten()
        {
            for (i, h) in m.set.iter().chain(m.add.iter()).enumerate() {
                if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(&h.value).is_err()
                {
                    self.err(
                        o,
                        path,
                        format!("header #{i} {:?}: invalid name or value", h.name),
                    );
                }
            }
        }
        if let Some(r) = &f.request_redirect {
            if let Some(code) = r.status_code {
                if ![301, 302, 303, 307, 308].contains(&code) {
                    self.err(
                        o,
                        &format!("{path}.requestRedirect.statusCode"),
                        "statusCode must be 301, 302, 303, 307 or 308",
                    );
                }
            }
            if let Some(s) = &r.scheme {
                if s != "http" && s != "https" {
                    self.err(
                        o,
                        &format!("{path}.requestRedirect.scheme"),
                        "scheme must be http or https",
                    );
                }
            }
            if let Some(p) = &r.path {
                self.path_modifier(o, &format!("{path}.requestRedirect.path"), p, prefix_only);
            }
        }
        if let Some(r) = &f.url_rewrite {
            if let Some(p) = &r.path {
                self.path_modifier(o, &format!("{path}.urlRewrite.path"), p, prefix_only);
            }
        }
    }

    fn path_modifier(&mut self, o: &Origin, path: &str, p: &PathModifier, prefix_only: bool) {
        let (value, field) = match p.kind {
            PathModifierType::ReplaceFullPath => (&p.replace_full_path, "replaceFullPath"),
            PathModifierType::ReplacePrefixMatch => (&p.replace_prefix_match, "replacePrefixMatch"),
        };
        match value {
            None => self.err(
                o,
                &format!("{path}.type"),
                format!("type {:?} needs {field}", p.kind),
            ),
            Some(v) if !v.starts_with('/') => {
                self.err(o, &format!("{path}.{field}"), "path must start with '/'")
            }
            _ => {}
        }
        if p.kind == PathModifierType::ReplacePrefixMatch && !prefix_only {
            self.err(
                o,
                &format!("{path}.type"),
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match",
            );
        }
    }

    fn traffic_policy(&mut self, p: &Resource<super::TrafficPolicySpec>) {
        let o = &p.origin;
        let t = &p.spec.target_ref;
        if t.kind != "Service" && t.kind != "Backend" {
            self.err(
                o,
                "spec.targetRef.kind",
                format!("kind {:?} is not supported (Service or Backend)", t.kind),
            );
        }
        let ns = t.namespace.as_deref().unwrap_or(&p.meta.namespace);
        if self.find_backend(ns, &t.name).is_none() {
            self.err(
                o,
                "spec.targetRef.name",
                format!("no Backend named {:?} in namespace {ns:?}", t.name),
            );
        }
        if let Some(lb) = &p.spec.load_balancer {
            let n = lb.hash_on.as_ref().map(|h| {
                h.header.is_some() as u8
                    + h.cookie.is_some() as u8
                    + h.source_ip.unwrap_or(false) as u8
            });
            if lb.policy == super::policy::LbPolicy::RingHash && n != Some(1) {
                self.err(o, "spec.loadBalancer.hashOn", "RingHash needs exactly one of hashOn.header, hashOn.cookie, hashOn.sourceIP: true");
            }
            if lb.policy != super::policy::LbPolicy::RingHash && lb.hash_on.is_some() {
                self.err(
                    o,
                    "spec.loadBalancer.hashOn",
                    "hashOn applies only to policy RingHash",
                );
            }
            if let Some(h) = lb.hash_on.as_ref().and_then(|h| h.header.as_ref()) {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    self.err(
                        o,
                        "spec.loadBalancer.hashOn.header",
                        format!("{h:?} is not a valid header name"),
                    );
                }
            }
        }
        if let Some(r) = &p.spec.retry {
            if let Some(b) = &r.max_buffered_body {
                if parse_size(b).is_none() {
                    self.err(
                        o,
                        "spec.retry.maxBufferedBody",
                        format!("{b:?} is not a size (e.g. 64KiB, 1MiB, 65536)"),
                    );
                }
            }
            if let Some(bud) = &r.budget {
                if bud.percent.is_some_and(|x| x > 100) {
                    self.err(o, "spec.retry.budget.percent", "percent must be 0-100");
                }
            }
        }
        if let Some(rl) = &p.spec.rate_limit {
            self.rate_limit(o, rl);
        }
        if p.spec.panic_threshold.is_some_and(|x| x > 100) {
            self.err(o, "spec.panicThreshold", "panicThreshold must be 0-100");
        }
        if let Some(od) = &p.spec.outlier_detection {
            if od.max_ejection_percent.is_some_and(|x| x > 100) {
                self.err(
                    o,
                    "spec.outlierDetection.maxEjectionPercent",
                    "must be 0-100",
                );
            }
        }
        self.success_rate(o, &p.spec);
        if let Some(hc) = &p.spec.health_check {
            let n = hc.http.is_some() as u8 + hc.tcp.is_some() as u8 + hc.grpc.is_some() as u8;
            if n != 1 {
                self.err(o, "spec.healthCheck", "set exactly one of http, tcp, grpc");
            }
            if let Some(h) = &hc.http {
                if !h.path.starts_with('/') {
                    self.err(o, "spec.healthCheck.http.path", "path must start with '/'");
                }
            }
        }
    }

    fn authz(&mut self, p: &Resource<super::AuthorizationPolicySpec>) {
        let o = &p.origin;
        for (ri, r) in p.spec.rules.iter().enumerate() {
            for (ii, id) in r.from.iter().flat_map(|f| f.identities.iter()).enumerate() {
                if id != "*" && !id.starts_with("spiffe://") {
                    self.err(
                        o,
                        &format!("spec.rules[{ri}].from.identities[{ii}]"),
                        "identities are spiffe:// URIs, optionally ending in '*', or '*'",
                    );
                }
            }
        }
    }
}

/// Parses `64KiB`, `1MiB`, `1GiB`, `512` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else if let Some(n) = s.strip_suffix("GiB") {
        (n, 1024 * 1024 * 1024)
    } else {
        (s, 1)
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}
