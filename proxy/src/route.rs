//! Request matching with Gateway API semantics (HTTPRoute and GRPCRoute
//! matches compile to the same matcher), and the filters a rule applies.
//! Why a match fails, in words, is `route/explain.rs` (for `weft-proxy
//! explain`, off the request path).

mod explain;
pub(crate) use explain::Miss;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;
use weft_mesh::config::grpc_route::GrpcRouteMatch;
use weft_mesh::config::route::{self as cfg, PathMatchType, PathModifierType, ValueMatchType};
use weft_mesh::config::ConfigSet;
use weft_mesh::names::MatchRef;

/// A compiled `matches[]` entry.
#[derive(Clone, Debug)]
pub(crate) struct Matcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
}

#[derive(Clone, Debug)]
enum PathMatcher {
    Exact(String),
    /// Stored without a trailing slash; matches whole path segments.
    Prefix(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn new(kind: ValueMatchType, value: &str) -> ValueMatcher {
        match kind {
            ValueMatchType::Exact => ValueMatcher::Exact(value.to_owned()),
            // Validated at load; an invalid one can only match nothing.
            ValueMatchType::RegularExpression => Regex::new(&format!("^(?:{value})$"))
                .map(ValueMatcher::Regex)
                .unwrap_or_else(|_| ValueMatcher::Exact("\u{0}never".into())),
        }
    }
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatcher::Exact(e) => e == v,
            ValueMatcher::Regex(r) => r.is_match(v),
        }
    }
}

impl Matcher {
    pub(crate) fn new(m: &cfg::RouteMatch) -> Matcher {
        let path = match &m.path {
            None => PathMatcher::Prefix(String::new()),
            Some(p) => match p.kind {
                PathMatchType::Exact => PathMatcher::Exact(p.value.clone()),
                PathMatchType::PathPrefix => {
                    PathMatcher::Prefix(p.value.trim_end_matches('/').to_owned())
                }
                PathMatchType::RegularExpression => Regex::new(&format!("^(?:{})$", p.value))
                    .map(PathMatcher::Regex)
                    .unwrap_or_else(|_| PathMatcher::Exact("\u{0}never".into())),
            },
        };
        Matcher {
            path,
            method: m
                .method
                .as_ref()
                .and_then(|x| Method::from_bytes(x.as_bytes()).ok()),
            headers: header_matchers(&m.headers),
            query: m
                .query_params
                .iter()
                .map(|q| (q.name.clone(), ValueMatcher::new(q.kind, &q.value)))
                .collect(),
        }
    }

    /// A GRPCRoute match: the call's path is `/<service>/<method>`, so the
    /// service/method match is a path match (an exact path when both are
    /// Exact, else an anchored regex over the two segments).
    pub(crate) fn grpc(m: &GrpcRouteMatch) -> Matcher {
        let path = match &m.method {
            None => PathMatcher::Prefix(String::new()),
            Some(mm) => {
                let exact = mm.kind == ValueMatchType::Exact;
                match (mm.service(), mm.method()) {
                    (Some(s), Some(me)) if exact => PathMatcher::Exact(format!("/{s}/{me}")),
                    (service, method) => {
                        let part = |p: Option<&str>| match p {
                            None => "[^/]+".to_owned(),
                            Some(p) if exact => regex::escape(p),
                            Some(p) => format!("(?:{p})"),
                        };
                        Regex::new(&format!("^/{}/{}$", part(service), part(method)))
                            .map(PathMatcher::Regex)
                            .unwrap_or_else(|_| PathMatcher::Exact("\u{0}never".into()))
                    }
                }
            }
        };
        Matcher {
            path,
            method: None,
            headers: header_matchers(&m.headers),
            query: Vec::new(),
        }
    }

    /// Matches everything (a rule without `matches`).
    pub(crate) fn any() -> Matcher {
        Matcher::new(&cfg::RouteMatch::default())
    }

    /// The prefix this match matched, for `ReplacePrefixMatch`.
    pub(crate) fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathMatcher::Prefix(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn matches(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> bool {
        if !self.path.matches(path) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        for (name, vm) in &self.headers {
            // Repeated headers match if any value does.
            if !headers
                .get_all(name)
                .iter()
                .any(|v| v.to_str().is_ok_and(|s| vm.matches(s)))
            {
                return false;
            }
        }
        for (name, vm) in &self.query {
            if !query_value(query, name).is_some_and(|v| vm.matches(v)) {
                return false;
            }
        }
        true
    }

    /// The matcher of one name-table match, as `compile` builds it (and
    /// `explain` rebuilds it); the indices come from a table built from
    /// `config`.
    pub(crate) fn of(config: &ConfigSet, m: &MatchRef) -> Matcher {
        match (m.grpc, m.matched) {
            (_, None) => Matcher::any(),
            (true, Some(i)) => {
                Matcher::grpc(&config.grpc_routes[m.route].spec.rules[m.rule].matches[i])
            }
            (false, Some(i)) => {
                Matcher::new(&config.http_routes[m.route].spec.rules[m.rule].matches[i])
            }
        }
    }
}

/// A query parameter's first value (a name without `=` has the value "").
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
        .next()
}

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(p) => p == path,
            PathMatcher::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatcher::Regex(r) => r.is_match(path),
        }
    }
}

fn header_matchers(headers: &[cfg::HeaderMatch]) -> Vec<(HeaderName, ValueMatcher)> {
    headers
        .iter()
        .filter_map(|h| {
            Some((
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                ValueMatcher::new(h.kind, &h.value),
            ))
        })
        .collect()
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier`.
#[derive(Debug, Default)]
pub(crate) struct HeaderMod {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderMod {
    pub(crate) fn new(m: &cfg::HeaderModifier) -> HeaderMod {
        let pairs = |v: &[cfg::HeaderValue]| {
            v.iter()
                .filter_map(|h| {
                    Some((
                        HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                        HeaderValue::from_str(&h.value).ok()?,
                    ))
                })
                .collect()
        };
        HeaderMod {
            set: pairs(&m.set),
            add: pairs(&m.add),
            remove: m
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
        }
    }

    pub(crate) fn apply(&self, h: &mut HeaderMap) {
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            h.remove(n);
        }
    }
}

/// The filters of a rule or backendRef, compiled.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    pub(crate) request_headers: Option<HeaderMod>,
    pub(crate) response_headers: Option<HeaderMod>,
    pub(crate) redirect: Option<cfg::Redirect>,
    pub(crate) rewrite: Option<cfg::UrlRewrite>,
}

impl Filters {
    pub(crate) fn new(filters: &[cfg::Filter]) -> Filters {
        let mut out = Filters::default();
        for f in filters {
            if let Some(m) = &f.request_header_modifier {
                out.request_headers = Some(HeaderMod::new(m));
            }
            if let Some(m) = &f.response_header_modifier {
                out.response_headers = Some(HeaderMod::new(m));
            }
            if let Some(r) = &f.request_redirect {
                out.redirect = Some(r.clone());
            }
            if let Some(r) = &f.url_rewrite {
                out.rewrite = Some(r.clone());
            }
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.redirect.is_none()
            && self.rewrite.is_none()
    }
}

/// Applies a path modifier; `prefix` is what the rule's PathPrefix matched.
pub(crate) fn modify_path(path: &str, m: &cfg::PathModifier, prefix: Option<&str>) -> String {
    match m.kind {
        PathModifierType::ReplaceFullPath => m
            .replace_full_path
            .clone()
            .unwrap_or_else(|| path.to_owned()),
        PathModifierType::ReplacePrefixMatch => {
            let repl = m.replace_prefix_match.as_deref().unwrap_or("/");
            let rest = prefix.and_then(|p| path.strip_prefix(p)).unwrap_or(path);
            let repl = repl.trim_end_matches('/');
            let joined = format!("{repl}{rest}");
            if joined.is_empty() {
                "/".into()
            } else if !joined.starts_with('/') {
                format!("/{joined}")
            } else {
                joined
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: PathMatchType, v: &str) -> Matcher {
        Matcher::new(&cfg::RouteMatch {
            path: Some(cfg::PathMatch {
                kind,
                value: v.into(),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let p = m(PathMatchType::PathPrefix, "/api/");
        let h = HeaderMap::new();
        assert!(p.matches(&Method::GET, "/api", None, &h));
        assert!(p.matches(&Method::GET, "/api/v1", None, &h));
        assert!(!p.matches(&Method::GET, "/apiv1", None, &h));
        assert!(m(PathMatchType::PathPrefix, "/").matches(&Method::GET, "/x", None, &h));
    }

    #[test]
    fn headers_and_query() {
        let mt = Matcher::new(&cfg::RouteMatch {
            headers: vec![cfg::HeaderMatch {
                kind: ValueMatchType::Exact,
                name: "x-canary".into(),
                value: "1".into(),
            }],
            query_params: vec![cfg::HeaderMatch {
                kind: ValueMatchType::RegularExpression,
                name: "v".into(),
                value: "[0-9]+".into(),
            }],
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("1"));
        assert!(mt.matches(&Method::GET, "/", Some("a=b&v=12"), &h));
        assert!(!mt.matches(&Method::GET, "/", Some("v=x"), &h));
        assert!(!mt.matches(&Method::GET, "/", Some("v=12"), &HeaderMap::new()));
    }

    #[test]
    fn grpc_service_and_method() {
        use weft_mesh::config::grpc_route::GrpcMethodMatch;
        let g = |kind, service: Option<&str>, method: Option<&str>| {
            Matcher::grpc(&GrpcRouteMatch {
                method: Some(GrpcMethodMatch {
                    kind,
                    service: service.map(Into::into),
                    method: method.map(Into::into),
                }),
                headers: Vec::new(),
            })
        };
        let h = HeaderMap::new();
        let hit = |m: &Matcher, p: &str| m.matches(&Method::POST, p, None, &h);
        let both = g(ValueMatchType::Exact, Some("a.B"), Some("Get"));
        assert!(hit(&both, "/a.B/Get"));
        assert!(!hit(&both, "/a.B/Put"));
        let service = g(ValueMatchType::Exact, Some("a.B"), None);
        assert!(hit(&service, "/a.B/Put"));
        assert!(!hit(&service, "/aXB/Put"), "the dot is literal");
        assert!(!hit(&service, "/a.B/Put/x"));
        let method = g(ValueMatchType::Exact, None, Some("Get"));
        assert!(hit(&method, "/x.Y/Get"));
        assert!(!hit(&method, "/x.Y/GetAll"));
        let re = g(
            ValueMatchType::RegularExpression,
            Some(r"shop\.v[0-9]+\.Cart"),
            Some("Get.*"),
        );
        assert!(hit(&re, "/shop.v2.Cart/GetItems"));
        assert!(!hit(&re, "/shop.v2.Cart/Put"));
        assert!(!hit(&re, "/xshop.v2.Cart/Get"));
    }

    #[test]
    fn prefix_rewrite() {
        let pm = cfg::PathModifier {
            kind: PathModifierType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some("/v2".into()),
        };
        assert_eq!(modify_path("/api/x", &pm, Some("/api")), "/v2/x");
        assert_eq!(modify_path("/api", &pm, Some("/api")), "/v2");
        let root = cfg::PathModifier {
            replace_prefix_match: Some("/".into()),
            ..pm
        };
        assert_eq!(modify_path("/api/x", &root, Some("/api")), "/x");
    }
}
