//! A match's conditions and why a request fails one, in words, for
//! `weft-proxy explain`. It walks the same conditions in the same order as
//! [`Matcher::matches`] (path, method, headers, query) with the same
//! per-condition checks, so the two cannot disagree; a test holds them to
//! that on a table of cases. Never on the request path.

use super::{query_value, Matcher, PathMatcher, ValueMatcher};
use http::{HeaderMap, Method};

/// Why a request does not match: how many of the match's conditions it
/// passed before failing one, and the failing condition in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Miss {
    pub(crate) passed: usize,
    pub(crate) reason: String,
}

/// A regex as written: without the `^(?:…)$` anchoring added at compile.
fn written(r: &regex::Regex) -> &str {
    let s = r.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
}

impl ValueMatcher {
    fn describe(&self) -> String {
        match self {
            ValueMatcher::Exact(v) => format!("= {v:?}"),
            ValueMatcher::Regex(r) => format!("matches regex {}", written(r)),
        }
    }

    /// Why `got` (the values present) fails this matcher.
    fn mismatch(&self, got: &[&str]) -> String {
        let got = got
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        match self {
            ValueMatcher::Exact(v) => format!("is {got}, not {v:?}"),
            ValueMatcher::Regex(r) => {
                format!("is {got}, which does not match regex {}", written(r))
            }
        }
    }
}

impl Matcher {
    /// Its conditions in the order they are checked, in words (`path
    /// prefix /api`, `method GET`, `header x-canary = "1"`); empty when it
    /// matches every request.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.path {
            PathMatcher::Prefix(p) if p.is_empty() => {}
            PathMatcher::Prefix(p) => out.push(format!("path prefix {p}")),
            PathMatcher::Exact(p) => out.push(format!("path exactly {p}")),
            PathMatcher::Regex(r) => out.push(format!("path matches regex {}", written(r))),
        }
        if let Some(m) = &self.method {
            out.push(format!("method {m}"));
        }
        for (name, vm) in &self.headers {
            out.push(format!("header {name} {}", vm.describe()));
        }
        for (name, vm) in &self.query {
            out.push(format!("query {name} {}", vm.describe()));
        }
        out
    }

    /// [`Matcher::matches`], saying why not: `Ok` when the request
    /// matches, else the first condition it fails.
    pub(crate) fn explain(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), Miss> {
        let mut passed = 0;
        let miss = |passed, reason| Err(Miss { passed, reason });
        if !self.path.matches(path) {
            let reason = match &self.path {
                PathMatcher::Exact(p) => format!("path {path} is not exactly {p}"),
                PathMatcher::Prefix(p) if path.starts_with(p.as_str()) => format!(
                    "path {path} starts with {p} but not at a segment boundary ({p} or {p}/...)"
                ),
                PathMatcher::Prefix(p) => format!("path {path} does not start with {p}"),
                PathMatcher::Regex(r) => {
                    format!("path {path} does not match regex {}", written(r))
                }
            };
            return miss(passed, reason);
        }
        passed += 1;
        if let Some(m) = &self.method {
            if m != method {
                return miss(passed, format!("method {method} != {m}"));
            }
            passed += 1;
        }
        for (name, vm) in &self.headers {
            let all = headers.get_all(name);
            let texts: Vec<&str> = all.iter().filter_map(|v| v.to_str().ok()).collect();
            if !texts.iter().any(|s| vm.matches(s)) {
                let reason = match (all.iter().next(), texts.is_empty()) {
                    (None, _) => format!("header {name} missing"),
                    (Some(_), true) => format!("header {name} is not text"),
                    (Some(_), false) => format!("header {name} {}", vm.mismatch(&texts)),
                };
                return miss(passed, reason);
            }
            passed += 1;
        }
        for (name, vm) in &self.query {
            match query_value(query, name) {
                None => return miss(passed, format!("query parameter {name} missing")),
                Some(v) if !vm.matches(v) => {
                    return miss(
                        passed,
                        format!("query parameter {name} {}", vm.mismatch(&[v])),
                    )
                }
                Some(_) => passed += 1,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use weft_mesh::config::route::{self as cfg, PathMatchType, ValueMatchType};

    fn path(kind: PathMatchType, v: &str) -> Option<cfg::PathMatch> {
        Some(cfg::PathMatch {
            kind,
            value: v.into(),
        })
    }

    fn value(kind: ValueMatchType, name: &str, v: &str) -> cfg::HeaderMatch {
        cfg::HeaderMatch {
            kind,
            name: name.into(),
            value: v.into(),
        }
    }

    /// explain() and matches() agree on every (matcher, request) pair of
    /// a table, and the reasons read as documented.
    #[test]
    fn explain_agrees_with_matches() {
        use PathMatchType::*;
        use ValueMatchType::RegularExpression as Re;
        let matchers = [
            Matcher::any(),
            Matcher::new(&cfg::RouteMatch {
                path: path(Exact, "/api/v2"),
                ..Default::default()
            }),
            Matcher::new(&cfg::RouteMatch {
                path: path(PathPrefix, "/admin/"),
                method: Some("POST".into()),
                ..Default::default()
            }),
            Matcher::new(&cfg::RouteMatch {
                path: path(RegularExpression, "/api/v[0-9]+"),
                headers: vec![
                    value(ValueMatchType::Exact, "x-canary", "1"),
                    value(Re, "x-user", "a.*"),
                ],
                query_params: vec![value(ValueMatchType::Exact, "debug", "on")],
                ..Default::default()
            }),
        ];
        let mut canary = HeaderMap::new();
        canary.insert("x-canary", HeaderValue::from_static("1"));
        let mut both = canary.clone();
        both.append("x-user", HeaderValue::from_static("bob"));
        both.append("x-user", HeaderValue::from_static("alice"));
        let mut wrong = HeaderMap::new();
        wrong.insert("x-canary", HeaderValue::from_static("0"));
        let requests: Vec<(Method, &str, Option<&str>, &HeaderMap)> = vec![
            (Method::GET, "/", None, &canary),
            (Method::GET, "/api/v2", None, &canary),
            (Method::GET, "/api/v2", Some("debug=on"), &both),
            (Method::GET, "/api/v2", Some("debug=off"), &both),
            (Method::GET, "/api/v2", Some("x=1"), &both),
            (Method::GET, "/api/v2", Some("debug=on"), &wrong),
            (Method::GET, "/api/vx", Some("debug=on"), &both),
            (Method::POST, "/admin", None, &wrong),
            (Method::POST, "/admin/users", None, &wrong),
            (Method::GET, "/admin/users", None, &wrong),
            (Method::POST, "/administrator", None, &wrong),
        ];
        let mut hits = 0;
        for (i, m) in matchers.iter().enumerate() {
            for (method, p, q, h) in &requests {
                let yes = m.matches(method, p, *q, h);
                let why = m.explain(method, p, *q, h);
                assert_eq!(yes, why.is_ok(), "matcher {i}, {method} {p} {q:?}: {why:?}");
                if let Err(miss) = &why {
                    assert!(miss.passed < m.describe().len().max(1), "{miss:?}");
                }
                hits += yes as usize;
            }
        }
        assert!(hits > 5 && hits < matchers.len() * requests.len());

        let reason = |m: &Matcher, method: Method, p: &str, q: Option<&str>, h: &HeaderMap| {
            m.explain(&method, p, q, h).unwrap_err().reason
        };
        assert_eq!(
            reason(&matchers[1], Method::GET, "/api", None, &canary),
            "path /api is not exactly /api/v2"
        );
        assert_eq!(
            reason(&matchers[2], Method::POST, "/api/v2", None, &canary),
            "path /api/v2 does not start with /admin"
        );
        assert_eq!(
            reason(&matchers[2], Method::POST, "/administrator", None, &canary),
            "path /administrator starts with /admin but not at a segment boundary (/admin or /admin/...)"
        );
        assert_eq!(
            reason(&matchers[2], Method::GET, "/admin", None, &canary),
            "method GET != POST"
        );
        let e = matchers[3]
            .explain(&Method::GET, "/api/v2", None, &HeaderMap::new())
            .unwrap_err();
        assert_eq!(
            e,
            Miss {
                passed: 1,
                reason: "header x-canary missing".into()
            }
        );
        assert_eq!(
            reason(&matchers[3], Method::GET, "/api/v2", None, &wrong),
            "header x-canary is \"0\", not \"1\""
        );
        assert_eq!(
            reason(
                &matchers[3],
                Method::GET,
                "/api/v2",
                Some("debug=off"),
                &both
            ),
            "query parameter debug is \"off\", not \"on\""
        );
        assert_eq!(
            reason(&matchers[3], Method::GET, "/v1", None, &both),
            "path /v1 does not match regex /api/v[0-9]+"
        );
        assert_eq!(
            matchers[3].describe(),
            [
                "path matches regex /api/v[0-9]+",
                "header x-canary = \"1\"",
                "header x-user matches regex a.*",
                "query debug = \"on\""
            ]
        );
        assert!(Matcher::any().describe().is_empty());
    }
}
