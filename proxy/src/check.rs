//! `weft-proxy check`'s warnings: fields Weft accepts in a file that the
//! standard-channel Gateway API CRDs would drop in a cluster (the API
//! server prunes fields its schema lacks), so a route that works from a
//! file would silently lose them under `kubectl apply`.
//!
//! The list is data, one entry per field path; a test derives it from the
//! upstream CRDs (`charts/weft/files/gateway-api/`, `tests/fixtures/gateway-api/`) and Weft's own schemas, so
//! it cannot drift from either.

use std::fmt;
use weft_mesh::config::yaml::{self, Located, Pos};

/// A field the standard channel lacks, and what a cluster user does instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// `HTTPRoute`, `GRPCRoute`.
    pub kind: &'static str,
    /// The field path, `[]` standing for any list index.
    pub path: &'static str,
    /// How to get the same behaviour from standard-channel resources.
    pub instead: &'static str,
}

/// Every field Weft reads that the standard-channel CRDs (Gateway API
/// v1.6.1) drop. All are in the experimental channel.
pub const DROPPED_BY_STANDARD_CRDS: &[Dropped] = &[Dropped {
    kind: "HTTPRoute",
    path: "spec.rules[].retry",
    instead: "set `retry` on a TrafficPolicy whose targetRef is the rule's backend",
}];

/// One warning: where, which field, what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    pub pos: Pos,
    /// The concrete path, `spec.rules[2].retry`.
    pub path: String,
    pub kind: &'static str,
    pub instead: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}: the standard-channel {} CRD drops this field (experimental channel only), so in a cluster it would be lost; {}, or install the experimental-channel {} CRD",
            self.file, self.pos.line, self.pos.column, self.path, self.kind, self.instead, self.kind
        )
    }
}

/// The warnings for `(file, text)` sources that already loaded cleanly.
pub fn warnings(sources: &[(String, String)]) -> Vec<Warning> {
    let mut out = Vec::new();
    for (file, text) in sources {
        // The sources loaded, so they parse; a failure here is no warning.
        let Ok(docs) = yaml::documents(text) else {
            continue;
        };
        for doc in &docs {
            let kind = doc.tree.str_at(&["kind"]).unwrap_or_default();
            for d in DROPPED_BY_STANDARD_CRDS.iter().filter(|d| d.kind == kind) {
                let mut found = Vec::new();
                find(&doc.tree, &segments(d.path), String::new(), &mut found);
                out.extend(found.into_iter().map(|(path, pos)| Warning {
                    file: file.clone(),
                    pos,
                    path,
                    kind: d.kind,
                    instead: d.instead,
                }));
            }
        }
    }
    out
}

enum Seg<'a> {
    Key(&'a str),
    Each,
}

/// `spec.rules[].retry` → `spec`, `rules`, each, `retry`.
fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let key = part.trim_end_matches("[]");
        out.push(Seg::Key(key));
        for _ in 0..(part.len() - key.len()) / 2 {
            out.push(Seg::Each);
        }
    }
    out
}

/// Every place `segs` is written under `node`: its concrete path and the
/// position of its key.
fn find(node: &Located, segs: &[Seg<'_>], at: String, out: &mut Vec<(String, Pos)>) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    match (first, node) {
        (Seg::Key(k), Located::Map(entries)) => {
            for (key, key_pos, _, child) in entries.iter().filter(|e| e.0 == *k) {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                if rest.is_empty() {
                    // `retry: null` is as absent as no `retry` at all.
                    if !matches!(child, Located::Null) {
                        out.push((path, *key_pos));
                    }
                } else {
                    find(child, rest, path, out);
                }
            }
        }
        (Seg::Each, Located::Seq(items)) => {
            for (i, (_, child)) in items.iter().enumerate() {
                find(child, rest, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\nspec: {}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Service, name: a}]\n  rules:\n    - backendRefs: [{name: a}]\n    - backendRefs: [{name: a}]\n      retry:\n        attempts: 3\n    - retry: {attempts: 1}\n";

    #[test]
    fn each_written_field_is_named_at_its_key() {
        let w = warnings(&[("r.yaml".into(), ROUTE.into())]);
        let got: Vec<(String, u32, u32)> = w
            .iter()
            .map(|w| (w.path.clone(), w.pos.line, w.pos.column))
            .collect();
        assert_eq!(
            got,
            [
                ("spec.rules[1].retry".to_owned(), 14, 7),
                ("spec.rules[2].retry".to_owned(), 16, 7)
            ]
        );
        let line = w[0].to_string();
        assert!(
            line.starts_with("r.yaml:14:7: warning: spec.rules[1].retry: "),
            "{line}"
        );
        assert!(
            line.contains("TrafficPolicy") && line.contains("experimental-channel HTTPRoute CRD")
        );
    }

    #[test]
    fn other_kinds_and_absent_fields_warn_of_nothing() {
        let text = "kind: TrafficPolicy\nspec:\n  rules:\n    - retry: {}\n---\nkind: HTTPRoute\nspec:\n  rules:\n    - retry: null\n";
        assert!(warnings(&[("t.yaml".into(), text.into())]).is_empty());
    }
}
