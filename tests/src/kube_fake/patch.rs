//! The two patch formats every resource takes: JSON merge patch (RFC 7386)
//! and JSON patch (RFC 6902). Errors use the wording of the library the
//! apiserver uses (evanphx/json-patch), as clients and webhooks see it in a
//! 500 or 422 message.

use serde_json::Value;

/// RFC 7386: objects merge key by key, `null` deletes, anything else
/// (lists included) replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    if !path.starts_with('/') {
        return Err(format!("invalid JSON pointer: {path:?}"));
    }
    Ok(path[1..].split('/').map(unescape).collect())
}

fn get_mut<'a>(doc: &'a mut Value, segs: &[String]) -> Option<&'a mut Value> {
    let mut v = doc;
    for s in segs {
        v = match v {
            Value::Object(m) => m.get_mut(s)?,
            Value::Array(a) => a.get_mut(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn missing(op: &str, path: &str) -> String {
    format!("{op} operation does not apply: doc is missing path: {path}: missing value")
}

fn add(doc: &mut Value, path: &str, value: Value, op: &str) -> Result<(), String> {
    let segs = split(path)?;
    let Some((last, parent)) = segs.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>().map_err(|_| missing(op, path))?
            };
            if idx > a.len() {
                return Err(format!(
                    "{op} operation does not apply: doc is missing path: {path}: invalid index"
                ));
            }
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(missing(op, path)),
    }
}

fn remove(doc: &mut Value, path: &str, op: &str) -> Result<Value, String> {
    let segs = split(path)?;
    let Some((last, parent)) = segs.split_last() else {
        return Err(missing(op, path));
    };
    match get_mut(doc, parent) {
        Some(Value::Object(m)) => m.remove(last).ok_or_else(|| missing(op, path)),
        Some(Value::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(missing(op, path)),
        },
        _ => Err(missing(op, path)),
    }
}

/// RFC 6902, all six operations. The whole patch applies or none of it.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("json patch must be an array of operations")?;
    let mut out = doc.clone();
    for o in ops {
        let op = o["op"].as_str().ok_or("missing op")?;
        let path = o["path"].as_str().ok_or("missing path")?;
        match op {
            "add" => add(&mut out, path, o["value"].clone(), op)?,
            "remove" => {
                remove(&mut out, path, op)?;
            }
            "replace" => {
                let segs = split(path)?;
                let slot = get_mut(&mut out, &segs).ok_or_else(|| missing(op, path))?;
                *slot = o["value"].clone();
            }
            "move" | "copy" => {
                let from = o["from"].as_str().ok_or("missing from")?;
                let v = if op == "move" {
                    remove(&mut out, from, op)?
                } else {
                    get_mut(&mut out, &split(from)?)
                        .cloned()
                        .ok_or_else(|| missing(op, from))?
                };
                add(&mut out, path, v, op)?;
            }
            "test" => {
                let segs = split(path)?;
                let actual = get_mut(&mut out, &segs).ok_or_else(|| missing(op, path))?;
                if *actual != o["value"] {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut t, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn json_patch_ops_and_errors() {
        let d = json!({"spec": {"containers": [{"name": "a"}]}});
        let p = json!([
            {"op": "add", "path": "/spec/initContainers", "value": []},
            {"op": "add", "path": "/spec/initContainers/-", "value": {"name": "p"}},
            {"op": "replace", "path": "/spec/containers/0/name", "value": "b"},
        ]);
        let out = json_patch(&d, &p).unwrap();
        assert_eq!(out["spec"]["initContainers"][0]["name"], "p");
        assert_eq!(out["spec"]["containers"][0]["name"], "b");
        let bad = json!([{"op": "replace", "path": "/spec/initContainers/0/image", "value": "x"}]);
        assert_eq!(
            json_patch(&d, &bad).unwrap_err(),
            "replace operation does not apply: doc is missing path: /spec/initContainers/0/image: missing value"
        );
    }
}
