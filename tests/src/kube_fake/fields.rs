//! `metadata.managedFields` and server-side apply.
//!
//! The apiserver tracks which manager set which field, at the granularity of
//! every leaf and list key. The fake tracks coarser paths: each key under a
//! top-level field (`spec.ports`, `status.parents`), each label and
//! annotation, and each top-level scalar; lists are atomic. That is enough
//! for what a controller meets: a manager's entry appears with
//! `operation`, `subresource` and `time`; a second manager applying a field
//! another one set to a different value gets 409 with one
//! `FieldManagerConflict` cause per owner unless it forces; a write that
//! changes a field takes it from the other owners; equal values are
//! co-owned; and an apply that drops a field it alone owned removes it.
//! `fieldsV1` is written in the apiserver's `f:` notation for these paths.

use super::util::now_rfc3339;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

type Path = Vec<String>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// The main resource; `status` too when the kind has no `/status`.
    Main {
        status_subresource: bool,
    },
    Status,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            Scope::Main { .. } => None,
        }
    }
}

/// The tracked paths present in `obj` for `scope`.
pub fn paths(obj: &Value, scope: Scope) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        let take = match scope {
            Scope::Status => k == "status",
            Scope::Main { status_subresource } => {
                !(matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                    || status_subresource && k == "status")
            }
        };
        if !take {
            continue;
        }
        match v.as_object() {
            Some(inner) if !inner.is_empty() => {
                for k2 in inner.keys() {
                    out.insert(vec![k.clone(), k2.clone()]);
                }
            }
            _ => {
                out.insert(vec![k.clone()]);
            }
        }
    }
    if matches!(scope, Scope::Main { .. }) {
        let meta = &obj["metadata"];
        for map in ["labels", "annotations"] {
            for k in meta[map].as_object().into_iter().flat_map(|m| m.keys()) {
                out.insert(vec!["metadata".into(), map.into(), k.clone()]);
            }
        }
        for list in ["finalizers", "ownerReferences"] {
            if meta.get(list).is_some() {
                out.insert(vec!["metadata".into(), list.into()]);
            }
        }
    }
    out
}

pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, seg| v.get(seg))
}

fn set_at(obj: &mut Value, path: &[String], value: Value) {
    let mut v = obj;
    for seg in &path[..path.len() - 1] {
        if !v[seg.as_str()].is_object() {
            v[seg.as_str()] = json!({});
        }
        v = &mut v[seg.as_str()];
    }
    v[path[path.len() - 1].as_str()] = value;
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let (last, parent) = path.split_last().expect("non-empty path");
    let mut v = obj;
    for seg in parent {
        match v.get_mut(seg) {
            Some(x) => v = x,
            None => return,
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove(last);
    }
}

/// `fieldsV1` for a set of paths.
pub fn fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for (i, seg) in p.iter().enumerate() {
            let entry = node
                .entry(format!("f:{seg}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
            if i + 1 < p.len() && !(i == 0 && seg == "metadata") {
                entry.insert(".".into(), json!({}));
            }
            node = entry;
        }
    }
    Value::Object(root)
}

fn paths_from_fields_v1(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let children: Vec<(&String, &Value)> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("f:"))
        .collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k[2..].to_string());
        paths_from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

/// One managedFields entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: Option<String>,
    paths: BTreeSet<Path>,
}

impl Entry {
    fn same(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }

    /// How a conflict message names this owner.
    fn phrase(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn read(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut paths = BTreeSet::new();
            paths_from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut paths);
            let s = |k: &str| e[k].as_str().map(str::to_string);
            Entry {
                manager: s("manager").unwrap_or_default(),
                operation: s("operation").unwrap_or_default(),
                api_version: s("apiVersion").unwrap_or_default(),
                subresource: s("subresource"),
                time: s("time"),
                paths,
            }
        })
        .collect()
}

fn write(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.paths.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&e.paths),
            });
            if let Some(t) = e.time {
                v["time"] = t.into();
            }
            if let Some(s) = e.subresource {
                v["subresource"] = s.into();
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

fn changed_paths(old: Option<&Value>, new: &Value, scope: Scope) -> BTreeSet<Path> {
    let mut all = paths(new, scope);
    if let Some(o) = old {
        all.extend(paths(o, scope));
    }
    all.into_iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .collect()
}

/// Records a create, update or patch by `manager` (operation Update) in
/// `new`'s managedFields, carrying the entries over from `old`.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    scope: Scope,
) {
    let changed = changed_paths(old, new, scope);
    let mut entries = old.map(read).unwrap_or_default();
    if changed.is_empty() {
        write(new, entries);
        return;
    }
    for e in entries.iter_mut() {
        e.paths.retain(|p| !changed.contains(p));
    }
    let sub = scope.subresource();
    let gained: BTreeSet<Path> = changed
        .into_iter()
        .filter(|p| value_at(new, p).is_some())
        .collect();
    match entries.iter_mut().find(|e| e.same(manager, "Update", sub)) {
        Some(e) => {
            e.paths.extend(gained);
            e.time = Some(now_rfc3339());
            e.api_version = api_version.into();
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Update".into(),
            api_version: api_version.into(),
            subresource: sub.map(str::to_string),
            time: Some(now_rfc3339()),
            paths: gained,
        }),
    }
    write(new, entries);
}

/// A failed apply: the 409 message and causes.
pub struct ApplyConflict {
    pub message: String,
    pub causes: Vec<Value>,
}

/// Server-side apply of `applied` onto `live` by `manager`. Returns the new
/// object, or the conflicts when another manager owns a field this apply
/// would change and `force` is not set.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    scope: Scope,
) -> Result<Value, ApplyConflict> {
    let sub = scope.subresource();
    let mut entries = read(live);
    let want = paths(applied, scope);
    let differs = |p: &Path| value_at(live, p) != value_at(applied, p);
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in entries.iter().filter(|e| !e.same(manager, "Apply", sub)) {
        for p in e.paths.iter().filter(|p| want.contains(*p) && differs(p)) {
            conflicts.push((e.phrase(), format!(".{}", p.join("."))));
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            let parts: Vec<String> = conflicts
                .iter()
                .map(|(who, f)| format!("conflicts with {who}:\n- {f}"))
                .collect();
            format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
        };
        let causes = conflicts
            .iter()
            .map(|(who, f)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": f})
            })
            .collect();
        return Err(ApplyConflict { message, causes });
    }
    let mut out = live.clone();
    let previously: BTreeSet<Path> = entries
        .iter()
        .find(|e| e.same(manager, "Apply", sub))
        .map(|e| e.paths.clone())
        .unwrap_or_default();
    for p in &want {
        if let Some(v) = value_at(applied, p) {
            set_at(&mut out, p, v.clone());
        }
    }
    for p in previously.difference(&want) {
        let others = entries
            .iter()
            .any(|e| !e.same(manager, "Apply", sub) && e.paths.contains(p));
        if !others {
            remove_at(&mut out, p);
        }
    }
    let changed: BTreeSet<Path> = want.iter().filter(|p| differs(p)).cloned().collect();
    for e in entries
        .iter_mut()
        .filter(|e| !e.same(manager, "Apply", sub))
    {
        e.paths.retain(|p| !changed.contains(p));
    }
    let object_changed = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            v
        };
        strip(&out) != strip(live)
    };
    let idx = entries.iter().position(|e| e.same(manager, "Apply", sub));
    let time = if object_changed {
        Some(now_rfc3339())
    } else {
        idx.and_then(|i| entries[i].time.clone())
    };
    if let Some(i) = idx {
        entries.remove(i);
    }
    entries.insert(
        0,
        Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: api_version.into(),
            subresource: sub.map(str::to_string),
            time,
            paths: want,
        },
    );
    write(&mut out, entries);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_conflicts_then_forces() {
        let scope = Scope::Status;
        let mut live = json!({"metadata": {"name": "r"}, "status": {"parents": [1]}});
        record_update(None, &mut live, "writer", "g/v1", scope);
        let applied = json!({"status": {"parents": [2]}});
        let err = apply(&live, &applied, "weft", false, "g/v1", scope)
            .err()
            .unwrap();
        assert_eq!(err.causes.len(), 1);
        let out = apply(&live, &applied, "weft", true, "g/v1", scope)
            .ok()
            .unwrap();
        assert_eq!(out["status"]["parents"], json!([2]));
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["weft"]);
    }
}
