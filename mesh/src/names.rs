//! The name table: which authority leads to which route rules and Backend.
//!
//! A Backend `reviews` in namespace `shop` with `port: 8080` is reachable as
//! `reviews.shop`, `reviews.shop.svc`, `reviews.shop.svc.cluster.local`,
//! each with or without `:8080`, and as plain `reviews` from its own
//! namespace, as in Kubernetes. An HTTPRoute or GRPCRoute takes over the
//! names of its `parentRefs` and adds its `hostnames` (exact, or
//! `*.suffix`); several routes of one kind on one name merge, their matches
//! ordered by Gateway API precedence. HTTPRoutes and GRPCRoutes never
//! merge: when both kinds claim a name, the kind of the oldest route
//! (`metadata.creationTimestamp`, a route without one counting as newest;
//! then `namespace/name` in alphabetical order) keeps it and the other
//! kind's routes do not serve that name, as the Gateway API has it for two
//! route kinds on one listener hostname.
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

use crate::config::grpc_route::GrpcRouteMatch;
use crate::config::route::{ParentRef, PathMatchType, RouteMatch, ValueMatchType};
use crate::config::{ConfigSet, Metadata, Protocol};
use std::collections::{HashMap, HashSet};

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

/// One match of one rule of one HTTPRoute or GRPCRoute, by index into the
/// config set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchRef {
    /// A GRPCRoute's match (else an HTTPRoute's).
    pub grpc: bool,
    /// Index into `ConfigSet::http_routes` (`grpc_routes` when `grpc`).
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

/// The precedence of a GRPCRoute match (`None`: a rule without matches),
/// in the same shape so one sort orders both kinds (they never compete for
/// one name): an Exact method match before a RegularExpression one before
/// none, then the most characters of service, of method, the most headers.
pub fn grpc_precedence(m: Option<&GrpcRouteMatch>) -> Precedence {
    let Some(m) = m else {
        return (0, 0, false, 0, 0);
    };
    let headers = m.headers.len();
    match &m.method {
        None => (0, 0, false, 0, headers),
        Some(mm) => {
            let kind = match mm.kind {
                ValueMatchType::Exact => 2,
                ValueMatchType::RegularExpression => 1,
            };
            let len = |s: Option<&str>| s.map_or(0, str::len);
            (kind, len(mm.service()), false, len(mm.method()), headers)
        }
    }
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
    #[inline]
    pub fn get(&self, authority: &str) -> Option<&T> {
        self.lookup(authority).map(|(_, t)| t)
    }

    /// [`NameTable::get`], with the name it was found by: the authority
    /// itself, the host without its port, or a wildcard's suffix
    /// (`.example.com` for `*.example.com`).
    pub fn lookup(&self, authority: &str) -> Option<(&str, &T)> {
        if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.lookup(&authority.to_ascii_lowercase());
        }
        let authority = authority.trim_end_matches('.');
        if let Some((k, &i)) = self.exact.get_key_value(authority) {
            return self.at(k, i);
        }
        let host = strip_port(authority);
        if host.len() != authority.len() {
            if let Some((k, &i)) = self.exact.get_key_value(host) {
                return self.at(k, i);
            }
        }
        self.wildcard
            .iter()
            .find(|(suffix, _)| host.ends_with(&**suffix))
            .and_then(|(k, i)| self.at(k, *i))
    }

    fn at<'a>(&'a self, name: &'a str, i: u32) -> Option<(&'a str, &'a T)> {
        Some((name, self.entries.get(i as usize)?))
    }

    /// Every name, sorted: exact ones as written, wildcards as `*.suffix`.
    pub fn names(&self) -> Vec<String> {
        let exact = self.exact.keys().map(|k| k.to_string());
        let wild = self.wildcard.iter().map(|(k, _)| format!("*{k}"));
        let mut all: Vec<String> = exact.chain(wild).collect();
        all.sort();
        all
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

        // Consumer routes of this namespace shadow the producer routes of
        // their parents (see the module comment).
        let parents = set
            .http_routes
            .iter()
            .map(|r| (&r.meta, &r.spec.parent_refs))
            .chain(
                set.grpc_routes
                    .iter()
                    .map(|r| (&r.meta, &r.spec.parent_refs)),
            );
        let consumed: HashSet<(&str, &str)> = parents
            .filter(|(meta, _)| meta.namespace == local_ns)
            .flat_map(|(meta, refs)| refs.iter().map(move |p| (meta, p)))
            .filter_map(|(meta, p)| {
                let ns = p.namespace.as_deref()?;
                (ns != meta.namespace).then_some((ns, p.name.as_str()))
            })
            .collect();

        // Routes take over their parents' names; several routes on one name merge.
        let mut merged: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Candidate>> = HashMap::new();
        let mut order = 0usize;
        let mut add = |names: &(Vec<String>, Vec<String>), c: Candidate| {
            for n in &names.0 {
                merged.entry(n.clone()).or_default().push(c);
            }
            for w in &names.1 {
                wildcard.entry(w.clone()).or_default().push(c);
            }
        };
        // Each route of either kind: its names here, and each rule's
        // matches with their precedence.
        type Rules = Vec<Vec<(Option<usize>, Precedence)>>;
        let names_of = |r, parents, hostnames| {
            route_names(
                set,
                &backend_index,
                r,
                parents,
                hostnames,
                local_ns,
                &consumed,
            )
        };
        let http = set.http_routes.iter().enumerate().map(|(ri, r)| {
            let rules: Rules = (r.spec.rules.iter())
                .map(|rule| {
                    (each_match(&rule.matches).into_iter())
                        .map(|(i, m)| (i, precedence(m)))
                        .collect()
                })
                .collect();
            (
                false,
                ri,
                names_of(&r.meta, &r.spec.parent_refs, &r.spec.hostnames),
                rules,
            )
        });
        let grpc = set.grpc_routes.iter().enumerate().map(|(ri, r)| {
            let rules: Rules = (r.spec.rules.iter())
                .map(|rule| {
                    (each_match(&rule.matches).into_iter())
                        .map(|(i, m)| (i, grpc_precedence(m)))
                        .collect()
                })
                .collect();
            (
                true,
                ri,
                names_of(&r.meta, &r.spec.parent_refs, &r.spec.hostnames),
                rules,
            )
        });
        for (grpc, route, names, rules) in http.chain(grpc) {
            let Some(names) = names else { continue };
            for (rule, matches) in rules.into_iter().enumerate() {
                for (matched, p) in matches {
                    order += 1;
                    let at = MatchRef {
                        grpc,
                        route,
                        rule,
                        matched,
                    };
                    add(&names, (p, order, at));
                }
            }
        }
        let ordered = |mut list: Vec<Candidate>| -> Vec<MatchRef> {
            one_kind(set, &mut list);
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

/// The names a route takes: its parents' (exact) and its hostnames
/// (exact, and wildcard suffixes); None when it applies to none of its
/// parents here (another namespace's consumer route, or a producer route
/// this namespace's consumer routes shadow).
#[allow(clippy::too_many_arguments)]
fn route_names(
    set: &ConfigSet,
    backend_index: &HashMap<String, usize>,
    route: &Metadata,
    parent_refs: &[ParentRef],
    hostnames: &[String],
    local_ns: &str,
    consumed: &HashSet<(&str, &str)>,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut names: Vec<String> = Vec::new();
    let mut applies = parent_refs.is_empty();
    for p in parent_refs {
        let ns = p.namespace.as_deref().unwrap_or(&route.namespace);
        let consumer = ns != route.namespace;
        if consumer && route.namespace != local_ns {
            continue; // another namespace's consumer route
        }
        if !consumer && consumed.contains(&(ns, p.name.as_str())) {
            continue; // shadowed by this namespace's consumer routes
        }
        applies = true;
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
    if !applies {
        return None;
    }
    let mut wild: Vec<String> = Vec::new();
    for h in hostnames {
        match h.strip_prefix('*') {
            Some(suffix) => wild.push(suffix.to_ascii_lowercase()),
            None => names.push(h.to_ascii_lowercase()),
        }
    }
    Some((names, wild))
}

/// A rule's matches with their indices; one `None` for a rule without.
fn each_match<M>(matches: &[M]) -> Vec<(Option<usize>, Option<&M>)> {
    if matches.is_empty() {
        vec![(None, None)]
    } else {
        matches
            .iter()
            .enumerate()
            .map(|(i, m)| (Some(i), Some(m)))
            .collect()
    }
}

/// When HTTPRoutes and GRPCRoutes both claim a name, keeps only the
/// candidates of the kind whose oldest route is oldest (see the module
/// comment).
fn one_kind(set: &ConfigSet, list: &mut Vec<Candidate>) {
    let kinds = (
        list.iter().any(|c| !c.2.grpc),
        list.iter().any(|c| c.2.grpc),
    );
    if kinds != (true, true) {
        return;
    }
    let meta = |m: &MatchRef| -> &Metadata {
        match m.grpc {
            true => &set.grpc_routes[m.route].meta,
            false => &set.http_routes[m.route].meta,
        }
    };
    let age = |m: &Metadata| {
        (
            m.creation_timestamp.is_none(),
            m.creation_timestamp.clone(),
            m.namespace.clone(),
            m.name.clone(),
        )
    };
    let Some(oldest) = list.iter().map(|c| c.2).min_by_key(|m| age(meta(m))) else {
        return;
    };
    list.retain(|c| c.2.grpc == oldest.grpc);
}

#[cfg(test)]
mod tests;
