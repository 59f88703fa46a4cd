//! The name table: which authority leads to which route rules and Backend.
//!
//! A Backend `reviews` in namespace `shop` with `port: 8080` is reachable as
//! `reviews.shop`, `reviews.shop.svc`, `reviews.shop.svc.cluster.local`,
//! each with or without `:8080`, and as plain `reviews` from its own
//! namespace, as in Kubernetes. An HTTPRoute takes over the names of its
//! `parentRefs` and adds its `hostnames` (exact, or `*.suffix`); several
//! routes on one name merge, their matches ordered by Gateway API
//! precedence.
//!
//! A Backend annotated `weft.dev/service: NAME` stands for one port of the
//! Kubernetes Service `NAME` (the control plane writes one per Service
//! port): it is reachable by the Service's names with its port, and, when
//! the Backend is named after the Service itself (the Service's default
//! port), without one too. `weft.dev/cluster-ips: IP[,IP]` adds the
//! Service's cluster IPs as names the same way (`IP:port`; the bare IP for
//! the default port), for clients that address a Service by its ClusterIP.
//!
//! The table is pure: built from a validated [`ConfigSet`] for the
//! namespace a proxy runs in, it says *what* a name reaches, by index into
//! the set. The proxy maps every [`Destination`] to its compiled form once
//! ([`NameTable::map`]) and looks names up on each request; the control
//! plane uses the same table to decide which resources a proxy needs, so
//! both sides agree on what `reviews`, `reviews.shop` or `reviews:8080`
//! means.

use crate::config::route::{PathMatchType, RouteMatch};
use crate::config::{ConfigSet, Protocol};
use std::collections::HashMap;

/// Names and what they lead to. Lookups are case-insensitive and ignore a
/// trailing dot; a name with a port falls back to the name without it, and
/// to the longest matching wildcard suffix.
pub struct NameTable<T> {
    /// Looked up on every request: a fast (non-SipHash) hasher; the keys
    /// come from config, so there is no flooding to defend against.
    exact: rustc_hash::FxHashMap<Box<str>, u32>,
    /// `*.example.com` hostnames as (".example.com", entry), longest first
    /// so the most specific wildcard wins.
    wildcard: Vec<(Box<str>, u32)>,
    entries: Vec<T>,
}

/// What one name leads to, before anything is compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct Destination {
    /// How errors and the admin page name it: the Backend's key
    /// (`namespace/name`) for a Backend's own names, else the route
    /// hostname or parent name it was reached by.
    pub name: String,
    /// The route matches competing for this name, highest precedence first
    /// (the first that matches a request wins). Empty when no route takes
    /// the name: then the Backend's implicit catch-all applies, unless it is
    /// opaque TCP.
    pub matches: Vec<MatchRef>,
    /// The Backend of that name (an index into `ConfigSet::backends`), for
    /// CONNECT and opaque TCP.
    pub backend: Option<usize>,
}

/// One match of one rule of one HTTPRoute, by index into the config set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchRef {
    /// Index into `ConfigSet::http_routes`.
    pub route: usize,
    /// Index into that route's `spec.rules`.
    pub rule: usize,
    /// Index into that rule's `matches`; `None` for a rule without matches
    /// (it matches every request).
    pub matched: Option<usize>,
}

/// Precedence of a match, compared descending (Gateway API order): exact
/// path, then the longest prefix, then a method, the most headers, the most
/// query parameters.
pub type Precedence = (u8, usize, bool, usize, usize);

/// The precedence of `m` (`None`: a rule without matches).
pub fn precedence(m: Option<&RouteMatch>) -> Precedence {
    let Some(m) = m else {
        return (2, 1, false, 0, 0);
    };
    let (kind, len) = match &m.path {
        None => (2, 1),
        Some(p) => match p.kind {
            PathMatchType::Exact => (3, p.value.len()),
            PathMatchType::PathPrefix => (2, p.value.trim_end_matches('/').len() + 1),
            PathMatchType::RegularExpression => (1, 0),
        },
    };
    (
        kind,
        len,
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    )
}

/// The annotation that makes a Backend one port of a Service (see the
/// module comment).
pub const SERVICE_ANNOTATION: &str = "weft.dev/service";

/// The annotation listing a Service's cluster IPs (comma-separated) on the
/// Backends of its ports.
pub const CLUSTER_IPS_ANNOTATION: &str = "weft.dev/cluster-ips";

/// The names a service is reachable by from a proxy in `local_ns`.
pub fn authorities(name: &str, ns: &str, port: Option<u16>, local_ns: &str) -> Vec<String> {
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

/// The names `IP:port` (and the bare IP when `bare`) of the cluster IPs
/// a Backend's annotation lists; IPv6 in brackets.
fn cluster_ip_names(
    b: &crate::config::Resource<crate::config::BackendSpec>,
    port: Option<u16>,
    bare: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let ips = b.meta.annotations.get(CLUSTER_IPS_ANNOTATION);
    for ip in ips.into_iter().flat_map(|l| l.split(',')) {
        let host = match ip.trim() {
            "" => continue,
            v6 if v6.contains(':') => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        if let Some(p) = port {
            out.push(format!("{host}:{p}"));
        }
        if bare {
            out.push(host);
        }
    }
    out
}

/// The name an original destination is looked up by: `IP:port`, IPv6 in
/// brackets (as [`NameTable::get_exact`] and the control plane expect).
pub fn address_name(addr: std::net::SocketAddr) -> String {
    match addr.ip().to_canonical() {
        std::net::IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
    }
}

impl Destination {
    /// The Backend whose implicit catch-all rule serves this name: there
    /// is one when no route takes the name and the Backend speaks HTTP.
    pub fn implicit_backend(&self, set: &ConfigSet) -> Option<usize> {
        let b = self.backend?;
        (self.matches.is_empty() && set.backends[b].spec.protocol != Protocol::Tcp).then_some(b)
    }
}

impl<T> NameTable<T> {
    /// A table that knows no name.
    pub fn empty() -> NameTable<T> {
        NameTable {
            exact: Default::default(),
            wildcard: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// What `authority` (`host` or `host:port`) leads to.
    pub fn get(&self, authority: &str) -> Option<&T> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.get(&authority.to_ascii_lowercase());
        }
        let authority = authority.trim_end_matches('.');
        if let Some(&i) = self.exact.get(authority) {
            return self.entries.get(i as usize);
        }
        let host = strip_port(authority);
        if host.len() != authority.len() {
            if let Some(&i) = self.exact.get(host) {
                return self.entries.get(i as usize);
            }
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.ends_with(&**suffix))
            .and_then(|&(_, i)| self.entries.get(i as usize))
    }

    /// What exactly `name` (lower case, no trailing dot) leads to: no
    /// fallback to the name without its port, nor to wildcards. For
    /// original destinations (`IP:port`), where another port of the same
    /// IP is another service, or none.
    pub fn get_exact(&self, name: &str) -> Option<&T> {
        self.exact
            .get(name)
            .and_then(|&i| self.entries.get(i as usize))
    }

    /// Every destination, once each (several names may share one).
    pub fn entries(&self) -> &[T] {
        &self.entries
    }

    /// The same names, each leading to `f` of what it led to (called once
    /// per destination, however many names share it).
    pub fn map<U>(&self, f: impl FnMut(&T) -> U) -> NameTable<U> {
        NameTable {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
            entries: self.entries.iter().map(f).collect(),
        }
    }
}

/// A match competing for a name: its precedence, its position in the files
/// (the tie-breaker), and which match it is.
type Candidate = (Precedence, usize, MatchRef);

impl NameTable<Destination> {
    /// The names a proxy in namespace `local_ns` knows from `set`.
    pub fn build(set: &ConfigSet, local_ns: &str) -> NameTable<Destination> {
        let mut table = NameTable::empty();
        let backend_index: HashMap<String, usize> = set
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.key(), i))
            .collect();

        // Each Backend is reachable by its own names.
        for (i, b) in set.backends.iter().enumerate() {
            let entry = table.push(Destination {
                name: b.key(),
                matches: Vec::new(),
                backend: Some(i),
            });
            let (service, bare) = match b.meta.annotations.get(SERVICE_ANNOTATION) {
                Some(s) => (s.as_str(), *s == b.meta.name),
                None => (b.meta.name.as_str(), true),
            };
            for h in authorities(service, &b.meta.namespace, b.spec.port, local_ns) {
                // Another port of a Service is reached only by naming it.
                if bare || h.contains(':') {
                    table.exact.insert(h.into(), entry);
                }
            }
            for h in cluster_ip_names(b, b.spec.port, bare) {
                table.exact.insert(h.into(), entry);
            }
        }

        // Routes take over their parents' names; several routes on one name merge.
        let mut merged: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut order = 0usize;
        for (ri, r) in set.http_routes.iter().enumerate() {
            let mut names: Vec<String> = Vec::new();
            for p in &r.spec.parent_refs {
                let ns = p.namespace.as_deref().unwrap_or(&r.meta.namespace);
                let parent = backend_index
                    .get(&format!("{ns}/{}", p.name))
                    .map(|&b| &set.backends[b]);
                let default_port = parent.and_then(|b| b.spec.port);
                let port = p.port.or(default_port);
                names.extend(authorities(&p.name, ns, port, local_ns));
                // A Service's cluster IPs are its names too (mesh ClusterIP
                // matching): the route takes them over with the port.
                if let Some(b) = parent {
                    names.extend(cluster_ip_names(b, port, port == default_port));
                }
            }
            let mut wild: Vec<String> = Vec::new();
            for h in &r.spec.hostnames {
                match h.strip_prefix('*') {
                    Some(suffix) => wild.push(suffix.to_ascii_lowercase()),
                    None => names.push(h.to_ascii_lowercase()),
                }
            }
            for (rule_i, rule) in r.spec.rules.iter().enumerate() {
                let refs: Vec<(Option<usize>, Option<&RouteMatch>)> = if rule.matches.is_empty() {
                    vec![(None, None)]
                } else {
                    rule.matches
                        .iter()
                        .enumerate()
                        .map(|(i, m)| (Some(i), Some(m)))
                        .collect()
                };
                for (matched, m) in refs {
                    order += 1;
                    let c = (
                        precedence(m),
                        order,
                        MatchRef {
                            route: ri,
                            rule: rule_i,
                            matched,
                        },
                    );
                    for n in &names {
                        merged.entry(n.clone()).or_default().push(c);
                    }
                    for w in &wild {
                        wildcard.entry(w.clone()).or_default().push(c);
                    }
                }
            }
        }
        let ordered = |mut list: Vec<Candidate>| -> Vec<MatchRef> {
            list.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            list.into_iter().map(|(_, _, m)| m).collect()
        };
        for (host, list) in merged {
            let backend = table
                .exact
                .get(host.as_str())
                .and_then(|&i| table.entries[i as usize].backend);
            let entry = table.push(Destination {
                name: host.clone(),
                matches: ordered(list),
                backend,
            });
            table.exact.insert(host.into(), entry);
        }
        for (suffix, list) in wildcard {
            let entry = table.push(Destination {
                name: suffix.clone(),
                matches: ordered(list),
                backend: None,
            });
            table.wildcard.push((suffix.into(), entry));
        }
        table
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        table
    }

    fn push(&mut self, d: Destination) -> u32 {
        self.entries.push(d);
        (self.entries.len() - 1) as u32
    }
}

#[cfg(test)]
mod tests;
