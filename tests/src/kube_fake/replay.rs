//! Replaying recorded exchanges against the fake and comparing shapes.
//!
//! A recorded request is sent again with the values that differ from run
//! to run replaced by the fake's own (UIDs, resourceVersions, continue
//! tokens, ServiceAccount tokens, the discovery Etag), which the replayer
//! learns by walking each recorded answer beside the fake's. An answer
//! matches when the status code, content type and a few headers are equal
//! (`replayer.rs`) and the bodies have the same shape: the same field names, recursively, with values of
//! the same JSON type and lists of the same length. Values are not
//! compared, except plain-text bodies, which must be equal. The one
//! tolerance: `managedFields[].fieldsV1` must be an object but its contents
//! are not compared (the fake tracks field ownership coarser than the
//! apiserver; see `fields.rs`).

use serde_json::Value;
use std::collections::HashMap;

/// Differences between a recorded body and the fake's, as readable lines.
pub fn shape_diff(recorded: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", recorded, actual, &mut out);
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(path: &str, r: &Value, a: &Value, out: &mut Vec<String>) {
    if type_name(r) != type_name(a) {
        out.push(format!(
            "{path}: recorded {} ({}), fake {} ({})",
            type_name(r),
            short(r),
            type_name(a),
            short(a)
        ));
        return;
    }
    match (r, a) {
        (Value::Object(rm), Value::Object(am)) => {
            if path.ends_with(".fieldsV1") {
                return;
            }
            for k in rm.keys().filter(|k| !am.contains_key(*k)) {
                out.push(format!("{path}.{k}: missing in the fake's answer"));
            }
            for k in am.keys().filter(|k| !rm.contains_key(*k)) {
                out.push(format!(
                    "{path}.{k}: not in the recording ({})",
                    short(&am[k])
                ));
            }
            for (k, rv) in rm {
                if let Some(av) = am.get(k) {
                    walk(&format!("{path}.{k}"), rv, av, out);
                }
            }
        }
        (Value::Array(ra), Value::Array(aa)) => {
            if ra.len() != aa.len() {
                out.push(format!(
                    "{path}: recorded {} items, fake {}",
                    ra.len(),
                    aa.len()
                ));
            }
            for (i, (rv, av)) in ra.iter().zip(aa).enumerate() {
                walk(&format!("{path}[{i}]"), rv, av, out);
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}...", &s[..60])
    } else {
        s
    }
}

/// Keys whose string values change from run to run.
const LEARNED: &[&str] = &["uid", "resourceVersion", "continue", "token", "clusterIP"];

/// Recorded value → the fake's value.
#[derive(Default, Debug)]
pub struct Substitutions {
    map: HashMap<String, String>,
}

impl Substitutions {
    pub fn insert(&mut self, recorded: &str, actual: &str) {
        if recorded != actual && !recorded.is_empty() {
            self.map
                .entry(recorded.to_string())
                .or_insert_with(|| actual.to_string());
            // A JWT is also known by its header and payload, so a request
            // carrying the recorded claims with another signature (the
            // forged one) keeps that signature on the fake's claims.
            if let (Some((rh, _)), Some((ah, _))) =
                (recorded.rsplit_once('.'), actual.rsplit_once('.'))
            {
                if recorded.matches('.').count() == 2 && actual.matches('.').count() == 2 {
                    self.map
                        .entry(format!("jwt:{rh}"))
                        .or_insert_with(|| ah.to_string());
                }
            }
        }
    }

    /// Learns from a recorded answer and the fake's answer to it.
    pub fn learn(&mut self, recorded: &Value, actual: &Value) {
        match (recorded, actual) {
            (Value::Object(rm), Value::Object(am)) => {
                for (k, rv) in rm {
                    let Some(av) = am.get(k) else { continue };
                    match (rv, av) {
                        (Value::String(r), Value::String(a)) if LEARNED.contains(&k.as_str()) => {
                            self.insert(r, a)
                        }
                        _ => self.learn(rv, av),
                    }
                }
            }
            (Value::Array(ra), Value::Array(aa)) => {
                for (r, a) in ra.iter().zip(aa) {
                    self.learn(r, a);
                }
            }
            _ => {}
        }
    }

    /// The fake's value for a recorded string.
    pub fn string(&self, s: &str) -> String {
        if let Some(v) = self.map.get(s) {
            return v.clone();
        }
        if let Some((head, sig)) = s.rsplit_once('.') {
            if let Some(h) = self.map.get(&format!("jwt:{head}")) {
                return format!("{h}.{sig}");
            }
        }
        s.to_string()
    }

    /// Substitutes every string in a JSON value.
    pub fn value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.string(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, x)| (k.clone(), self.value(x))).collect())
            }
            other => other.clone(),
        }
    }

    /// Substitutes query parameter values in a path (`?k=v&...`).
    pub fn path(&self, p: &str) -> String {
        let Some((path, query)) = p.split_once('?') else {
            return p.to_string();
        };
        let params: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => {
                    let decoded = super::router::percent_decode(v);
                    let s = self.string(&decoded);
                    if s == decoded {
                        kv.to_string()
                    } else {
                        format!("{k}={s}")
                    }
                }
                None => kv.to_string(),
            })
            .collect();
        format!("{path}?{}", params.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shape_diff_finds_what_differs() {
        let rec = json!({"a": 1, "b": {"c": "x"}, "l": [1, 2], "m": {"managedFields": [{"fieldsV1": {"f:a": {}}}]}});
        assert!(shape_diff(&rec, &json!({"a": 2, "b": {"c": "y"}, "l": [3, 4], "m": {"managedFields": [{"fieldsV1": {}}]}})).is_empty());
        let d = shape_diff(
            &rec,
            &json!({"a": "1", "b": {}, "l": [1], "m": {"managedFields": [{"fieldsV1": {}}]}, "z": 0}),
        );
        assert_eq!(d.len(), 4, "{d:?}");
    }

    #[test]
    fn substitutes_learned_values() {
        let mut s = Substitutions::default();
        s.learn(
            &json!({"metadata": {"resourceVersion": "256", "name": "n"}}),
            &json!({"metadata": {"resourceVersion": "7", "name": "n"}}),
        );
        assert_eq!(
            s.path("/x?watch=1&resourceVersion=256"),
            "/x?watch=1&resourceVersion=7"
        );
        assert_eq!(s.value(&json!({"rv": "256"})), json!({"rv": "7"}));
    }
}
