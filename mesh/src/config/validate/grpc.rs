//! The checks of a `GRPCRoute` that serde cannot make, as the Gateway API
//! CRD makes them: a method match names a service or a method (valid
//! protobuf names when Exact), regexes compile, only the gRPC filters,
//! each header modifier at most once per list. Parents, backendRefs and
//! the filters' own fields are checked as an HTTPRoute's are.

use super::super::grpc_route::{GrpcMethodMatch, GrpcRouteSpec};
use super::super::route::{FilterType, ValueMatchType};
use super::super::{defaults, Origin, Resource};
use super::Validator;
use std::collections::HashSet;

/// Longest service or method the CRD accepts.
const MAX_NAME: usize = 1024;

impl Validator<'_> {
    pub(super) fn grpc_route(&mut self, r: &Resource<GrpcRouteSpec>) {
        let o = &r.origin;
        self.parents(o, &r.spec.parent_refs, &r.spec.hostnames);
        self.grpc_sizes(r);
        let mut rule_names = HashSet::new();
        for (ri, rule) in r.spec.rules.iter().enumerate() {
            let rp = format!("spec.rules[{ri}]");
            if let Some(n) = &rule.name {
                if !rule_names.insert(n.as_str()) {
                    self.err(
                        o,
                        &format!("{rp}.name"),
                        format!("rule name {n:?} is used twice in this route"),
                    );
                }
            }
            for (mi, m) in rule.matches.iter().enumerate() {
                let mp = format!("{rp}.matches[{mi}]");
                if let Some(method) = &m.method {
                    self.grpc_method(o, &format!("{mp}.method"), method);
                }
                self.header_matches(o, &mp, &m.headers);
            }
            self.grpc_filters(o, &format!("{rp}.filters"), &rule.filters);
            self.mirrors(o, &rp, &r.meta.namespace, &rule.filters, &rule.backend_refs);
            if rule.backend_refs.is_empty() {
                self.err(o, &format!("{rp}.backendRefs"), "a rule needs backendRefs");
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
                self.grpc_filters(o, &format!("{bp}.filters"), &b.filters);
            }
        }
    }

    /// The CRD's list limits: 32 parents, 16 hostnames, 16 rules of at
    /// most 64 matches (128 in all), 16 backendRefs, filters and headers.
    fn grpc_sizes(&mut self, r: &Resource<GrpcRouteSpec>) {
        let o = &r.origin;
        let mut over = |path: String, len: usize, max: usize| {
            if len > max {
                self.err(o, &path, format!("at most {max} entries ({len} given)"));
            }
        };
        over("spec.parentRefs".into(), r.spec.parent_refs.len(), 32);
        over("spec.hostnames".into(), r.spec.hostnames.len(), 16);
        over("spec.rules".into(), r.spec.rules.len(), 16);
        for (ri, rule) in r.spec.rules.iter().enumerate() {
            over(format!("spec.rules[{ri}].matches"), rule.matches.len(), 64);
            over(format!("spec.rules[{ri}].filters"), rule.filters.len(), 16);
            over(
                format!("spec.rules[{ri}].backendRefs"),
                rule.backend_refs.len(),
                16,
            );
            for (mi, m) in rule.matches.iter().enumerate() {
                let path = format!("spec.rules[{ri}].matches[{mi}].headers");
                over(path, m.headers.len(), 16);
            }
        }
        let total: usize = r.spec.rules.iter().map(|x| x.matches.len()).sum();
        if total > 128 {
            self.err(
                o,
                "spec.rules",
                format!("at most 128 matches across all rules ({total} given)"),
            );
        }
    }

    fn grpc_method(&mut self, o: &Origin, path: &str, m: &GrpcMethodMatch) {
        if m.service().is_none() && m.method().is_none() {
            self.err(o, path, "one or both of service and method must be set");
        }
        for (field, value) in [("service", m.service()), ("method", m.method())] {
            let Some(value) = value else { continue };
            let fp = format!("{path}.{field}");
            if value.len() > MAX_NAME {
                self.err(o, &fp, format!("at most {MAX_NAME} characters"));
                continue;
            }
            match m.kind {
                ValueMatchType::RegularExpression => {
                    if let Err(e) = regex::Regex::new(value) {
                        self.err(o, &fp, format!("invalid regular expression: {e}"));
                    }
                }
                ValueMatchType::Exact if field == "service" && !is_service_name(value) => {
                    self.err(
                        o,
                        &fp,
                        format!("{value:?} is not a gRPC service name (dotted identifiers, e.g. \"shop.v1.Cart\")"),
                    );
                }
                ValueMatchType::Exact if field == "method" && !is_identifier(value) => {
                    self.err(
                        o,
                        &fp,
                        format!("{value:?} is not a gRPC method name (letters, digits and '_', not starting with a digit)"),
                    );
                }
                ValueMatchType::Exact => {}
            }
        }
    }

    fn grpc_filters(&mut self, o: &Origin, path: &str, filters: &[super::super::route::Filter]) {
        let mut seen = HashSet::new();
        for (fi, f) in filters.iter().enumerate() {
            let fp = format!("{path}[{fi}]");
            match f.kind {
                FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
                    if !seen.insert(f.kind as u8) {
                        self.err(
                            o,
                            &format!("{fp}.type"),
                            format!("{:?} filter cannot be repeated", f.kind),
                        );
                    }
                }
                FilterType::RequestMirror => {}
                other => {
                    self.err(
                        o,
                        &format!("{fp}.type"),
                        format!("{other:?} is not a GRPCRoute filter (RequestHeaderModifier, ResponseHeaderModifier or RequestMirror)"),
                    );
                    continue;
                }
            }
            self.filter(o, &fp, f, false);
        }
    }
}

/// `^\.?[A-Za-z_][A-Za-z_0-9]*(\.[A-Za-z_][A-Za-z_0-9]*)*$`, the CRD's rule.
fn is_service_name(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    s.split('.').all(is_identifier)
}

/// `^[A-Za-z_][A-Za-z_0-9]*$`.
fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
