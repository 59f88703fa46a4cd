//! Inbound `AuthorizationPolicy`, compiled for the service this sidecar
//! fronts. Deny rules win; when any Allow policy selects the service, a
//! request must match one of its rules; with no policies everything passes.

use weft_mesh::config::policy::{AuthorizationPolicySpec, AuthzAction, AuthzRule};
use weft_mesh::config::{ConfigSet, Resource};

/// A string test: exact, `prefix*`, or `*` (anything).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn new(s: &str) -> Pattern {
        if s == "*" {
            Pattern::Any
        } else if let Some(p) = s.strip_suffix('*') {
            Pattern::Prefix(p.to_owned())
        } else {
            Pattern::Exact(s.to_owned())
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => e == s,
            Pattern::Prefix(p) => s.starts_with(p.as_str()),
        }
    }
}

/// One rule: every part present must match (within a part, any entry).
#[derive(Clone, Debug, Default)]
struct Rule {
    identities: Vec<Pattern>,
    namespaces: Vec<String>,
    methods: Vec<String>,
    paths: Vec<Pattern>,
}

/// What is known of an inbound request (or connection) being authorized.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    /// The peer's verified SPIFFE ID (none on plaintext).
    pub(crate) identity: Option<&'a str>,
    /// Method and path for HTTP; none for opaque TCP.
    pub(crate) request: Option<(&'a str, &'a str)>,
}

/// The `ns` segment of `spiffe://td/ns/<ns>/sa/<sa>`.
fn namespace_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/').skip(1);
    while let Some(p) = parts.next() {
        if p == "ns" {
            return parts.next();
        }
    }
    None
}

impl Rule {
    fn compile(r: &AuthzRule) -> Rule {
        let (identities, namespaces) = match &r.from {
            Some(f) => (
                f.identities.iter().map(|s| Pattern::new(s)).collect(),
                f.namespaces.clone(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (methods, paths) = match &r.to {
            Some(t) => (
                t.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                t.paths.iter().map(|s| Pattern::new(s)).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Rule {
            identities,
            namespaces,
            methods,
            paths,
        }
    }

    fn has_to(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty()
    }

    /// On opaque TCP only the `from` parts can be checked: a Deny rule
    /// ignores its `to` parts (denying more), an Allow rule with `to`
    /// parts matches nothing (allowing less).
    fn matches(&self, s: &Subject, deny: bool) -> bool {
        if !self.identities.is_empty()
            && !s
                .identity
                .is_some_and(|id| self.identities.iter().any(|p| p.matches(id)))
        {
            return false;
        }
        if !self.namespaces.is_empty()
            && !s
                .identity
                .and_then(namespace_of)
                .is_some_and(|ns| self.namespaces.iter().any(|n| n == ns))
        {
            return false;
        }
        match s.request {
            Some((method, path)) => {
                (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
                    && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            }
            None => deny || !self.has_to(),
        }
    }
}

/// The policies selecting this sidecar's service.
#[derive(Clone, Debug, Default)]
pub(crate) struct InboundAuthz {
    deny: Vec<Rule>,
    allow: Vec<Rule>,
    /// Some Allow policy selects the service (even one with no rules).
    has_allow: bool,
}

impl InboundAuthz {
    /// Compiles the policies whose targetRef (kind Service or Backend) names
    /// `service` in `namespace`.
    pub(crate) fn compile(
        config: &ConfigSet,
        service: Option<&str>,
        namespace: &str,
    ) -> InboundAuthz {
        let Some(service) = service else {
            return InboundAuthz::default();
        };
        let selected = config.authorization_policies.iter().filter(|p| {
            let t = &p.spec.target_ref;
            matches!(t.kind.as_str(), "Service" | "Backend")
                && t.name == service
                && t.namespace.as_deref().unwrap_or(&p.meta.namespace) == namespace
        });
        Self::from_specs(selected.map(|p: &Resource<AuthorizationPolicySpec>| &p.spec))
    }

    fn from_specs<'a>(specs: impl Iterator<Item = &'a AuthorizationPolicySpec>) -> InboundAuthz {
        let mut out = InboundAuthz::default();
        for spec in specs {
            let rules = spec.rules.iter().map(Rule::compile);
            match spec.action {
                AuthzAction::Deny => out.deny.extend(rules),
                AuthzAction::Allow => {
                    out.has_allow = true;
                    out.allow.extend(rules);
                }
            }
        }
        out
    }

    /// No policy selects the service: everything is allowed.
    pub(crate) fn is_empty(&self) -> bool {
        !self.has_allow && self.deny.is_empty()
    }

    pub(crate) fn allows(&self, s: &Subject) -> bool {
        if self.deny.iter().any(|r| r.matches(s, true)) {
            return false;
        }
        !self.has_allow || self.allow.iter().any(|r| r.matches(s, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRONTEND: &str = "spiffe://weft.local/ns/default/sa/frontend";
    const OTHER: &str = "spiffe://weft.local/ns/prod/sa/other";

    fn policies(json: &str) -> InboundAuthz {
        let specs: Vec<AuthorizationPolicySpec> = serde_json::from_str(json).unwrap();
        InboundAuthz::from_specs(specs.iter())
    }

    fn http<'a>(id: Option<&'a str>, m: &'a str, p: &'a str) -> Subject<'a> {
        Subject {
            identity: id,
            request: Some((m, p)),
        }
    }

    fn tcp(id: Option<&str>) -> Subject<'_> {
        Subject {
            identity: id,
            request: None,
        }
    }

    #[test]
    fn patterns_and_namespaces() {
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("/api/*").matches("/api/x"));
        assert!(!Pattern::new("/api/*").matches("/apix"));
        assert!(Pattern::new("/exact").matches("/exact"));
        assert!(!Pattern::new("/exact").matches("/exact/more"));
        assert_eq!(namespace_of(FRONTEND), Some("default"));
        assert_eq!(namespace_of(OTHER), Some("prod"));
        assert_eq!(namespace_of("not-spiffe"), None);
    }

    #[test]
    fn no_policies_allow_everything() {
        let a = InboundAuthz::default();
        assert!(a.is_empty());
        assert!(a.allows(&http(None, "GET", "/")));
        assert!(a.allows(&tcp(None)));
    }

    #[test]
    fn allow_deny_and_rule_parts() {
        let a = policies(
            r#"[
  {"targetRef": {"kind": "Service", "name": "reviews"}, "action": "Allow", "rules": [
    {"from": {"identities": ["spiffe://weft.local/ns/default/*"]},
     "to": {"methods": ["GET"], "paths": ["/public/*", "/health"]}},
    {"from": {"namespaces": ["prod"]}}]},
  {"targetRef": {"kind": "Service", "name": "reviews"}, "action": "Deny", "rules": [
    {"to": {"paths": ["/public/secret"]}}]}
]"#,
        );
        assert!(!a.is_empty());
        assert!(a.allows(&http(Some(FRONTEND), "GET", "/public/x")));
        assert!(a.allows(&http(Some(FRONTEND), "GET", "/health")));
        assert!(!a.allows(&http(Some(FRONTEND), "POST", "/public/x")));
        assert!(!a.allows(&http(Some(FRONTEND), "GET", "/private")));
        // Deny wins over the matching Allow.
        assert!(!a.allows(&http(Some(FRONTEND), "GET", "/public/secret")));
        assert!(!a.allows(&http(Some(OTHER), "GET", "/public/secret")));
        // Namespace rule.
        assert!(a.allows(&http(Some(OTHER), "DELETE", "/anything")));
        // Plaintext peers match no identity or namespace rule.
        assert!(!a.allows(&http(None, "GET", "/public/x")));
        // TCP: Allow rules with `to` parts match nothing; the namespace rule applies.
        assert!(!a.allows(&tcp(Some(FRONTEND))));
        assert!(!a.allows(&tcp(Some(OTHER))), "deny ignores `to` on TCP");
    }

    #[test]
    fn allow_policy_without_rules_denies_all() {
        let a = policies(
            r#"[{"targetRef": {"kind": "Backend", "name": "reviews"}, "action": "Allow"}]"#,
        );
        assert!(!a.is_empty());
        assert!(!a.allows(&http(Some(FRONTEND), "GET", "/")));
        let d = policies(
            r#"[{"targetRef": {"kind": "Backend", "name": "reviews"}, "action": "Deny", "rules": [{}]}]"#,
        );
        assert!(!d.allows(&tcp(None)));
    }
}
