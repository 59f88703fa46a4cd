//! OpenAPI v3 as far as kubectl and helm read it before a write: the
//! `/openapi/v3` index (the recorded one, with the group-versions served
//! since added and those no longer served removed) and, per group-version,
//! a document whose PATCH operations name their kind and take the
//! `fieldValidation` query parameter. That is what client-go's
//! query-parameter verifier looks for to leave field validation to the
//! server (`fieldValidation=Strict`) instead of validating on the client;
//! the documents carry no schemas (`components.schemas` is empty).

use super::discovery::Resource;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `api/v1` or `apis/<group>/<version>`: the index key of a resource's
/// group-version.
fn gv_key(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

fn hash(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// The index: the recorded text when it still says what is served, else
/// rebuilt with the same shape.
pub fn index(recorded: &str, resources: &[Arc<Resource>]) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(recorded) else {
        return recorded.to_string();
    };
    let served: BTreeSet<String> = resources.iter().map(|r| gv_key(r)).collect();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return recorded.to_string();
    };
    let mut changed = false;
    let stale: Vec<String> = paths
        .keys()
        .filter(|k| k.starts_with("apis/") && k.matches('/').count() == 2 && !served.contains(*k))
        .cloned()
        .collect();
    for k in stale {
        paths.remove(&k);
        changed = true;
    }
    for gv in &served {
        if !paths.contains_key(gv) {
            let text = document(gv, resources)
                .map(|d| d.to_string())
                .unwrap_or_default();
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", hash(&text))}),
            );
            changed = true;
        }
    }
    if changed {
        doc.to_string()
    } else {
        recorded.to_string()
    }
}

/// The document for `api/v1` or `apis/<group>/<version>`.
pub fn document(gv: &str, resources: &[Arc<Resource>]) -> Option<Value> {
    let mut paths = Map::new();
    for r in resources.iter().filter(|r| gv_key(r) == gv) {
        let mut base = format!("/{}", gv_key(r));
        if r.namespaced {
            base.push_str("/namespaces/{namespace}");
        }
        let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
        ]);
        let op = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": kind,
                   "parameters": params, "responses": {"200": {"description": "OK"}}})
        };
        let mut object = Map::new();
        for (verb, method, action) in [
            ("get", "get", "get"),
            ("update", "put", "put"),
            ("patch", "patch", "patch"),
            ("delete", "delete", "delete"),
        ] {
            if r.verbs.iter().any(|v| v == verb) {
                object.insert(method.into(), op(action));
            }
        }
        paths.insert(
            format!("{base}/{}/{{name}}", r.plural),
            Value::Object(object),
        );
        let mut collection = Map::new();
        if r.verbs.iter().any(|v| v == "create") {
            collection.insert("post".into(), op("post"));
        }
        if r.verbs.iter().any(|v| v == "list") {
            collection.insert("get".into(), op("list"));
        }
        paths.insert(format!("{base}/{}", r.plural), Value::Object(collection));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.2"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
