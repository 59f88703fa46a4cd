//! Which virtual host and which rule a request reaches, and why every
//! other rule of that host does not: the proxy's own name table and
//! matchers (`NameTable::lookup`, `Matcher::of`, `Matcher::explain`), run
//! over every candidate instead of stopping at the first.

use crate::route::{Matcher, Miss};
use http::{HeaderMap, Method};
use weft_mesh::config::{BackendSpec, ConfigSet, Protocol, Resource};
use weft_mesh::names::{MatchRef, NameTable};

/// The request to explain.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// `host` or `host:port`, as the client sends it.
    pub(crate) authority: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
}

/// One rule (one of its matches) competing for the host.
pub(crate) struct Candidate {
    /// None for a Backend's implicit catch-all.
    pub(crate) at: Option<MatchRef>,
    /// `HTTPRoute ns/name rule 1 match 0`, or `Backend ns/name (implicit rule)`.
    pub(crate) label: String,
    /// The match's conditions in words, in the order they are checked.
    pub(crate) conditions: Vec<String>,
    pub(crate) verdict: Result<(), Miss>,
}

/// What the request's authority leads to.
pub(crate) enum Outcome<'a> {
    /// No name matches; the closest name the config knows, if any.
    NoHost {
        nearest: Option<String>,
    },
    /// A name of an opaque-TCP Backend that no route takes: nothing HTTP is
    /// routed there.
    Opaque {
        found_by: String,
        backend: &'a Resource<BackendSpec>,
    },
    Host(Host),
}

/// The virtual host and its rules in precedence order.
pub(crate) struct Host {
    /// The name the authority was found by (a wildcard as `*.suffix`).
    pub(crate) found_by: String,
    /// The virtual host's own name (a Backend's key, or the route name).
    pub(crate) name: String,
    pub(crate) candidates: Vec<Candidate>,
    /// Index into `candidates` of the first that matches.
    pub(crate) winner: Option<usize>,
}

impl Host {
    /// The candidate that got furthest before failing (most conditions
    /// passed; the earliest among equals): what the user most likely meant.
    pub(crate) fn nearest_miss(&self) -> Option<(usize, &Candidate, &Miss)> {
        let mut best: Option<(usize, &Candidate, &Miss)> = None;
        for (i, c) in self.candidates.iter().enumerate() {
            if let Err(m) = &c.verdict {
                if best.is_none_or(|(_, _, b)| m.passed > b.passed) {
                    best = Some((i, c, m));
                }
            }
        }
        best
    }
}

/// Resolves `req` against `set` as a proxy in `namespace` would.
pub(crate) fn resolve<'a>(set: &'a ConfigSet, namespace: &str, req: &Request) -> Outcome<'a> {
    let table = NameTable::build(set, namespace);
    let Some((found_by, dest)) = table.lookup(&req.authority) else {
        return Outcome::NoHost {
            nearest: nearest_name(&table.names(), &req.authority),
        };
    };
    let found_by = match found_by.starts_with('.') {
        true => format!("*{found_by}"),
        false => found_by.to_owned(),
    };
    let mut candidates = Vec::new();
    if let Some(b) = dest.implicit_backend(set) {
        candidates.push(Candidate {
            at: None,
            label: format!(
                "Backend {} (its implicit rule: no route takes this name)",
                set.backends[b].key()
            ),
            conditions: Vec::new(),
            verdict: Ok(()),
        });
    } else if dest.matches.is_empty() {
        if let Some(b) = dest
            .backend
            .filter(|&b| set.backends[b].spec.protocol == Protocol::Tcp)
        {
            return Outcome::Opaque {
                found_by,
                backend: &set.backends[b],
            };
        }
    }
    let query = req.query.as_deref();
    for m in &dest.matches {
        let matcher = Matcher::of(set, m);
        candidates.push(Candidate {
            at: Some(*m),
            label: label(set, m),
            conditions: matcher.describe(),
            verdict: matcher.explain(&req.method, &req.path, query, &req.headers),
        });
    }
    let winner = candidates.iter().position(|c| c.verdict.is_ok());
    Outcome::Host(Host {
        found_by,
        name: dest.name.clone(),
        candidates,
        winner,
    })
}

/// `HTTPRoute shop/reviews rule 1 match 0` (with the rule's name when it has one).
fn label(set: &ConfigSet, m: &MatchRef) -> String {
    let (kind, key, name) = match m.grpc {
        true => {
            let r = &set.grpc_routes[m.route];
            ("GRPCRoute", r.key(), r.spec.rules[m.rule].name.clone())
        }
        false => {
            let r = &set.http_routes[m.route];
            ("HTTPRoute", r.key(), r.spec.rules[m.rule].name.clone())
        }
    };
    let mut out = format!("{kind} {key} rule {}", m.rule);
    if let Some(n) = name {
        out.push_str(&format!(" ({n})"));
    }
    if let Some(i) = m.matched {
        out.push_str(&format!(" match {i}"));
    }
    out
}

/// The known name closest to `authority` (edit distance, compared with
/// and without the port; the first in order among equals).
fn nearest_name(names: &[String], authority: &str) -> Option<String> {
    let wanted = authority.to_ascii_lowercase();
    let bare = weft_mesh::names::strip_port(&wanted);
    names
        .iter()
        .map(|n| {
            let whole = distance(n, &wanted);
            let host = distance(weft_mesh::names::strip_port(n), bare);
            (whole.min(host), whole, n)
        })
        .min_by_key(|(d, whole, _)| (*d, *whole))
        .map(|(_, _, n)| n.clone())
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_names() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
        let names: Vec<String> = ["reviews.shop", "reviews.shop:8080", "ratings.shop"]
            .map(String::from)
            .into();
        assert_eq!(
            nearest_name(&names, "reveiws.shop:8080").as_deref(),
            Some("reviews.shop:8080")
        );
        assert_eq!(
            nearest_name(&names, "ratings.shop:9").as_deref(),
            Some("ratings.shop")
        );
        assert_eq!(nearest_name(&[], "x"), None);
    }
}
