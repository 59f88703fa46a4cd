//! Label and field selectors, as LIST and WATCH take them in the query.
//!
//! Labels: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//! joined by commas. Fields: `path=v`, `path==v`, `path!=v` on the fields the
//! apiserver indexes: `metadata.name` and `metadata.namespace` for every
//! kind, plus the per-kind ones a controller filters on (Pods by node, phase
//! or ServiceAccount, Secrets by type, ...). Anything else is a 400, with
//! the apiserver's wording.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// A parsed label or field selector (all requirements must hold).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    reqs: Vec<(String, Op)>,
    fields: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Id(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Open,
    Close,
    Comma,
}

fn lex(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            ' ' | '\t' => i += 1,
            '=' if next == Some('=') => {
                out.push(Tok::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1;
            }
            '!' if next == Some('=') => {
                out.push(Tok::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Tok::Not);
                i += 1;
            }
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !" \t=!(),".contains(b[i]) {
                    i += 1;
                }
                out.push(Tok::Id(b[start..i].iter().collect()));
            }
        }
    }
    out
}

fn show(t: Option<&Tok>) -> String {
    match t {
        None => "EOS".into(),
        Some(Tok::Id(s)) => s.clone(),
        Some(Tok::Eq) => "=".into(),
        Some(Tok::DoubleEq) => "==".into(),
        Some(Tok::NotEq) => "!=".into(),
        Some(Tok::Not) => "!".into(),
        Some(Tok::Open) => "(".into(),
        Some(Tok::Close) => ")".into(),
        Some(Tok::Comma) => ",".into(),
    }
}

fn expected(t: Option<&Tok>, what: &str) -> String {
    format!(
        "unable to parse requirement: found '{}', expected: {what}",
        show(t)
    )
}

impl Selector {
    /// Parses a `labelSelector`; the error is the apiserver's 400 message.
    pub fn labels(s: &str) -> Result<Selector, String> {
        let toks = lex(s);
        let mut reqs = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let (k, op);
            if toks[i] == Tok::Not {
                let Some(Tok::Id(key)) = toks.get(i + 1) else {
                    return Err(expected(toks.get(i + 1), "identifier"));
                };
                k = key.clone();
                op = Op::NotExists;
                i += 2;
            } else {
                let Some(Tok::Id(key)) = toks.get(i) else {
                    return Err(expected(toks.get(i), "identifier"));
                };
                k = key.clone();
                i += 1;
                match toks.get(i) {
                    None | Some(Tok::Comma) => op = Op::Exists,
                    Some(Tok::Eq | Tok::DoubleEq | Tok::NotEq) => {
                        let neg = toks[i] == Tok::NotEq;
                        let v = match toks.get(i + 1) {
                            Some(Tok::Id(v)) => {
                                i += 2;
                                v.clone()
                            }
                            None | Some(Tok::Comma) => {
                                i += 1;
                                String::new()
                            }
                            t => return Err(expected(t, "identifier")),
                        };
                        op = if neg { Op::NotEq(v) } else { Op::Eq(v) };
                    }
                    Some(Tok::Id(w)) if w == "in" || w == "notin" => {
                        let neg = w == "notin";
                        if toks.get(i + 1) != Some(&Tok::Open) {
                            return Err(expected(toks.get(i + 1), "'('"));
                        }
                        i += 2;
                        let mut vals = Vec::new();
                        loop {
                            match toks.get(i) {
                                Some(Tok::Id(v)) => vals.push(v.clone()),
                                Some(Tok::Comma) => {}
                                Some(Tok::Close) => break,
                                t => return Err(expected(t, "')'")),
                            }
                            i += 1;
                        }
                        i += 1;
                        op = if neg { Op::NotIn(vals) } else { Op::In(vals) };
                    }
                    t => return Err(expected(t, "'=', '!=', '==', 'in', notin'")),
                }
            }
            reqs.push((k, op));
            match toks.get(i) {
                None => {}
                Some(Tok::Comma) => i += 1,
                t => return Err(expected(t, "','")),
            }
        }
        Ok(Selector {
            reqs,
            fields: false,
        })
    }

    /// Parses a `fieldSelector` for a kind; unsupported fields are a 400.
    pub fn fields(s: &str, kind: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, op) = if let Some((k, v)) = part.split_once("!=") {
                (k, Op::NotEq(v.to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k, Op::Eq(v.to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k, Op::Eq(v.to_string()))
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            if !field_supported(kind, k) {
                return Err(format!("field label not supported: {k}"));
            }
            reqs.push((k.to_string(), op));
        }
        Ok(Selector { reqs, fields: true })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v: Option<String> = if self.fields {
                field_value(obj, k)
            } else {
                obj["metadata"]["labels"][k.as_str()]
                    .as_str()
                    .map(str::to_string)
            };
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v.as_deref() == Some(x.as_str()),
                Op::NotEq(x) => v.as_deref() != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.contains(&v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(&v)),
            }
        })
    }
}

/// The fields the apiserver accepts in a fieldSelector, per kind.
fn field_supported(kind: &str, field: &str) -> bool {
    if field == "metadata.name" || field == "metadata.namespace" {
        return true;
    }
    let extra: &[&str] = match kind {
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Secret" => &["type"],
        "Namespace" => &["status.phase"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &[],
    };
    extra.contains(&field)
}

fn field_value(obj: &Value, path: &str) -> Option<String> {
    let mut v = obj;
    for seg in path.split('.') {
        v = v.get(seg)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        // An unset field compares as the empty string, as in the apiserver.
        _ => None,
    }
    .or(Some(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_matches_labels() {
        let o = json!({"metadata": {"labels": {"app": "a", "tier": "x"}}});
        for (s, want) in [
            ("app=a", true),
            ("app==a,tier", true),
            ("app!=a", false),
            ("!missing", true),
            ("tier in (x,y)", true),
            ("tier notin (x)", false),
        ] {
            assert_eq!(Selector::labels(s).unwrap().matches(&o), want, "{s}");
        }
        assert_eq!(
            Selector::labels("kubernetes.io/service-name===x").unwrap_err(),
            "unable to parse requirement: found '=', expected: identifier"
        );
    }

    #[test]
    fn field_selectors_check_support() {
        let o = json!({"metadata": {"name": "n"}, "spec": {"nodeName": "node-0"}});
        assert!(Selector::fields("metadata.name=n", "Service")
            .unwrap()
            .matches(&o));
        assert!(Selector::fields("spec.nodeName=node-0", "Pod")
            .unwrap()
            .matches(&o));
        assert!(Selector::fields("spec.nodeName=x", "Service").is_err());
    }
}
