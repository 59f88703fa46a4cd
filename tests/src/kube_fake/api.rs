//! The write and read verbs on one object: GET, POST (create), PUT,
//! PATCH (merge, JSON patch, server-side apply; strategic merge is taken as
//! a merge patch for built-in kinds and refused for custom resources, as the
//! apiserver refuses it) and DELETE, for the main resource and `/status`.
//!
//! Optimistic concurrency is the apiserver's: a `metadata.resourceVersion`
//! in a PUT or patch body is a precondition (409 Conflict when stale); kinds
//! that forbid unconditional updates (Lease, custom resources) answer 422
//! to a PUT without one. Status sent to the main resource is ignored, and a
//! `/status` write changes nothing but status; neither bumps `generation`
//! unless the spec changed.

use super::errors::ApiError;
use super::fields::{self, Scope};
use super::router::{Reply, Request, Target};
use super::util::{name_suffix, now_rfc3339, uuid};
use super::{admission, kinds, patch, protobuf, schema, State};
use serde_json::{json, Value};
use std::sync::Arc;

fn served(mut obj: Value, t: &Target) -> Value {
    obj["apiVersion"] = t.resource.api_version().into();
    obj
}

fn scope(t: &Target) -> Scope {
    if t.subresource.as_deref() == Some("status") {
        Scope::Status
    } else {
        Scope::Main {
            status_subresource: t.resource.has_subresource("status"),
        }
    }
}

/// Validation after defaulting: a custom resource against its CRD's
/// schema, a built-in kind by `kinds`.
fn check(state: &State, t: &Target, obj: &Value) -> Result<(), ApiError> {
    let r = &t.resource;
    if r.custom && r.schema.is_some() {
        return schema::validate(r, obj, matches!(scope(t), Scope::Status));
    }
    kinds::validate(&r.kind, &r.group, r.custom, obj, &|ip| {
        state.in_service_range(ip)
    })
}

/// The `Warning` headers for unknown fields dropped on decode.
fn warn(mut reply: Reply, warnings: Vec<String>) -> Reply {
    for w in warnings {
        reply = reply.header("Warning", w);
    }
    reply
}

fn ns(t: &Target) -> String {
    t.namespace.clone().unwrap_or_default()
}

fn rv_of(o: &Value) -> Option<&str> {
    o["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Parses a JSON body the way the apiserver reports a broken one.
fn parse_json(req: &Request, kind: &str) -> Result<Value, ApiError> {
    if req
        .header("content-type")
        .starts_with(protobuf::CONTENT_TYPE)
    {
        return protobuf::decode(&req.body, kind).map_err(|e| {
            if matches!(kind, "Secret" | "ConfigMap") {
                ApiError::bad_request(format!(
                    "{kind} in version \"v1\" cannot be handled as a {kind}: {e}"
                ))
            } else {
                ApiError::unsupported_media_type(&["application/json", "application/yaml"])
            }
        });
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        let text = String::from_utf8_lossy(&req.body);
        let head: String = text.chars().take(30).collect();
        let why = if e.is_eof() {
            "unexpected end of JSON input".to_string()
        } else {
            e.to_string()
        };
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {kind}): couldn't get version/kind; json parse error: {why} ({head} ...)"
        ))
    })
}

pub fn get(state: &State, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.as_deref().unwrap_or("");
    let store = state.store();
    let obj = store
        .get(&r.group_resource(), &ns(t), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r, name))?;
    Ok(Reply::json(200, served(obj, t)))
}

pub async fn create(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let body = parse_json(req, &r.kind)?;
    create_object(state, req, t, body, None).await
}

/// The create path, shared by POST and by a server-side apply of an object
/// that does not exist yet (`applied_by` names the apply's manager).
async fn create_object(
    state: &Arc<State>,
    req: &Request,
    t: &Target,
    mut obj: Value,
    applied_by: Option<(&str, Value)>,
) -> Result<Reply, ApiError> {
    let r = &t.resource;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    match obj["kind"].as_str() {
        None | Some("") => obj["kind"] = r.kind.clone().into(),
        Some(k) if k != r.kind => {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): kind {k} does not match",
                r.kind
            )))
        }
        _ => {}
    }
    obj["apiVersion"] = r.api_version().into();
    let ns = ns(t);
    if r.namespaced {
        match obj["metadata"]["namespace"].as_str() {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => obj["metadata"]["namespace"] = ns.clone().into(),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        match obj["metadata"]["generateName"].as_str() {
            Some(prefix) => obj["metadata"]["name"] = format!("{prefix}{}", name_suffix()).into(),
            None => {
                return Err(ApiError::invalid(
                    &r.kind,
                    &r.group,
                    &r.kind,
                    "",
                    vec![super::errors::Cause {
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ))
            }
        }
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    kinds::decode_check(&r.kind, &obj)?;
    if r.namespaced {
        let store = state.store();
        match store.get("namespaces", "", &ns) {
            None => return Err(ApiError::namespace_not_found(&ns)),
            Some(n) if n["status"]["phase"] == "Terminating" => {
                return Err(ApiError::namespace_terminating(r, &name, &ns))
            }
            _ => {}
        }
    }
    if r.has_subresource("status") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            m.remove(k);
        }
    }
    let scope = Scope::Main {
        status_subresource: r.has_subresource("status"),
    };
    let warnings = schema::decode(r, req, &mut obj)?;
    let manager = req.manager();
    // The webhook sees a defaulted object with managedFields but, as on the
    // apiserver, no uid or creationTimestamp yet.
    kinds::default(&r.kind, &mut obj, &mut || state.allocate_cluster_ip());
    if r.kind == "Pod" {
        // A Pod's phase and QoS class are set after admission.
        obj["status"] = json!({});
    }
    fields::record_update(None, &mut obj, &manager, &r.api_version(), scope);
    admission::mutate(state, req, r, &mut obj, "CREATE").await?;
    kinds::default(&r.kind, &mut obj, &mut || state.allocate_cluster_ip());
    check(state, t, &obj)?;
    obj["metadata"]["uid"] = uuid().into();
    obj["metadata"]["creationTimestamp"] = now_rfc3339().into();
    if kinds::has_generation(&r.kind) || r.custom {
        obj["metadata"]["generation"] = 1.into();
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    match applied_by {
        Some((manager, applied)) => {
            let skeleton = obj.clone();
            obj = fields::apply(&skeleton, &applied, manager, true, &r.api_version(), scope)
                .map_err(|c| ApiError::apply_conflict(c.message, c.causes))?;
            if let Some(entry) = obj.pointer_mut("/metadata/managedFields/0") {
                entry["time"] = now_rfc3339().into();
            }
        }
        None => fields::record_update(None, &mut obj, &manager, &r.api_version(), scope),
    }
    let mut store = state.store();
    let gr = r.group_resource();
    if store.get(&gr, &ns, &name).is_some() {
        return Err(ApiError::already_exists(r, &name));
    }
    let stored = if req.dry_run() {
        obj
    } else {
        store.write(&gr, &ns, &name, obj)
    };
    Ok(warn(Reply::json(201, served(stored, t)), warnings))
}

fn existing(state: &State, t: &Target) -> Option<Value> {
    let name = t.name.as_deref().unwrap_or("");
    state
        .store()
        .get(&t.resource.group_resource(), &ns(t), name)
        .cloned()
}

pub async fn update(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.clone().unwrap_or_default();
    let body = parse_json(req, &r.kind)?;
    kinds::decode_check(&r.kind, &body)?;
    let old = existing(state, t).ok_or_else(|| ApiError::not_found(r, &name))?;
    if let Some(n) = body["metadata"]["name"].as_str() {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    match rv_of(&body) {
        Some(rv) if Some(rv) != rv_of(&old) => return Err(ApiError::conflict(r, &name)),
        None if !kinds::unconditional_update(&r.kind, r.custom) => {
            return Err(ApiError::invalid(
                &r.group_resource(),
                &r.group,
                &r.plural,
                &name,
                vec![super::errors::Cause::invalid(
                    "metadata.resourceVersion",
                    "0",
                    "must be specified for an update",
                )],
            ))
        }
        _ => {}
    }
    commit(state, req, t, old, body, true).await
}

/// Turns a candidate object into the stored next version of `old`.
async fn commit(
    state: &Arc<State>,
    req: &Request,
    t: &Target,
    old: Value,
    candidate: Value,
    record: bool,
) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let scope = scope(t);
    let mut new = match scope {
        Scope::Status => {
            let mut n = old.clone();
            n["status"] = candidate["status"].clone();
            if n["status"].is_null() {
                if let Some(m) = n.as_object_mut() {
                    m.remove("status");
                }
            }
            if !record {
                n["metadata"]["managedFields"] = candidate["metadata"]["managedFields"].clone();
            }
            n
        }
        Scope::Main { status_subresource } => {
            let mut n = candidate;
            if status_subresource {
                match old.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            n
        }
    };
    new["apiVersion"] = r.api_version().into();
    new["kind"] = r.kind.clone().into();
    let warnings = schema::decode(r, req, &mut new)?;
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match old["metadata"].get(k) {
            Some(v) => new["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if record {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
    }
    if matches!(scope, Scope::Main { .. }) {
        if r.kind == "Service" && new["spec"]["clusterIP"].is_null() {
            new["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
            new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
        kinds::default(&r.kind, &mut new, &mut || state.allocate_cluster_ip());
        if r.kind == "Service" {
            new["status"] = old["status"].clone();
        }
    }
    check(state, t, &new)?;
    let strip = |v: &Value| {
        let mut v = v.clone();
        for k in ["metadata", "status"] {
            if let Some(m) = v.as_object_mut() {
                m.remove(k);
            }
        }
        v
    };
    if matches!(scope, Scope::Main { .. }) && strip(&new) != strip(&old) {
        if let Some(g) = old["metadata"]["generation"].as_i64() {
            new["metadata"]["generation"] = (g + 1).into();
        }
    }
    if record {
        fields::record_update(
            Some(&old),
            &mut new,
            &req.manager(),
            &r.api_version(),
            scope,
        );
    }
    if new
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(Value::is_null)
    {
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    }
    if new == old {
        return Ok(Reply::json(200, served(old, t)));
    }
    let mut store = state.store();
    let (gr, ns, name) = (
        r.group_resource(),
        ns(t),
        t.name.clone().unwrap_or_default(),
    );
    match store.get(&gr, &ns, &name) {
        Some(cur) if rv_of(cur) == rv_of(&old) => {}
        _ => return Err(ApiError::conflict(r, &name)),
    }
    let stored = if req.dry_run() {
        new
    } else {
        store.write(&gr, &ns, &name, new)
    };
    Ok(warn(Reply::json(200, served(stored, t)), warnings))
}

pub async fn patch(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.clone().unwrap_or_default();
    let ctype = req.header("content-type");
    let ctype = ctype.split(';').next().unwrap_or("").trim().to_string();
    let accepted: &[&str] = if r.custom {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]
    } else {
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ]
    };
    if !accepted.contains(&ctype.as_str()) && ctype != "application/apply-patch+json" {
        return Err(ApiError::unsupported_media_type(accepted));
    }
    if ctype.starts_with("application/apply-patch") {
        return apply(state, req, t).await;
    }
    let p = parse_json(req, &r.kind)?;
    let old = existing(state, t).ok_or_else(|| ApiError::not_found(r, &name))?;
    let candidate = if ctype == "application/json-patch+json" {
        patch::json_patch(&old, &p).map_err(|e| {
            ApiError::invalid(
                &r.kind,
                &r.group,
                &r.kind,
                &name,
                vec![super::errors::Cause {
                    reason: "FieldValueInvalid",
                    message: e.clone(),
                    field: "patch".into(),
                }],
            )
        })?
    } else {
        let mut c = old.clone();
        patch::merge(&mut c, &p);
        c
    };
    if rv_of(&candidate) != rv_of(&old) {
        return Err(ApiError::conflict(r, &name));
    }
    kinds::decode_check(&r.kind, &candidate)?;
    commit(state, req, t, old, candidate, true).await
}

/// Server-side apply (`application/apply-patch+yaml`).
async fn apply(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.clone().unwrap_or_default();
    let Some(manager) = req.q("fieldManager").map(str::to_string) else {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let text = String::from_utf8_lossy(&req.body);
    let applied: Value = serde_saphyr::from_str(&text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    kinds::decode_check(&r.kind, &applied)?;
    let force = req.q("force") == Some("true");
    let Some(old) = existing(state, t) else {
        if t.subresource.is_some() {
            return Err(ApiError::not_found(r, &name));
        }
        let mut obj = applied.clone();
        obj["metadata"]["name"] = name.clone().into();
        return create_object(state, req, t, obj, Some((&manager, applied))).await;
    };
    if let Some(rv) = rv_of(&applied) {
        if Some(rv) != rv_of(&old) {
            return Err(ApiError::conflict(r, &name));
        }
    }
    let new = fields::apply(&old, &applied, &manager, force, &r.api_version(), scope(t))
        .map_err(|c| ApiError::apply_conflict(c.message, c.causes))?;
    commit(state, req, t, old, new, false).await
}

pub fn delete(state: &State, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.clone().unwrap_or_default();
    let (gr, ns) = (r.group_resource(), ns(t));
    let opts: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut store = state.store();
    let old = store
        .get(&gr, &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r, &name))?;
    let pre = &opts["preconditions"];
    if pre["resourceVersion"]
        .as_str()
        .is_some_and(|v| Some(v) != rv_of(&old))
        || pre["uid"]
            .as_str()
            .is_some_and(|u| old["metadata"]["uid"] != u)
    {
        return Err(ApiError::conflict(r, &name));
    }
    if r.kind == "Namespace" {
        if old["status"]["phase"] == "Terminating" || req.dry_run() {
            return Ok(Reply::json(200, served(old, t)));
        }
        let mut n = old;
        n["metadata"]["deletionTimestamp"] = now_rfc3339().into();
        n["status"]["phase"] = "Terminating".into();
        let stored = store.write(&gr, &ns, &name, n);
        return Ok(Reply::json(200, served(stored, t)));
    }
    let mut last = old.clone();
    if r.kind == "Pod" {
        last["metadata"]["deletionTimestamp"] = now_rfc3339().into();
        last["metadata"]["deletionGracePeriodSeconds"] = 0.into();
        if let Some(g) = last["metadata"]["generation"].as_i64() {
            last["metadata"]["generation"] = (g + 1).into();
        }
    }
    let last = if req.dry_run() {
        last
    } else {
        if r.kind == "Service" {
            state.release_cluster_ip(old["spec"]["clusterIP"].as_str().unwrap_or(""));
        }
        store.remove(&gr, &ns, &name, last)
    };
    if kinds::delete_returns_object(&r.kind) {
        return Ok(Reply::json(200, served(last, t)));
    }
    let mut details = super::errors::details(Some(&name), &r.group, &r.plural);
    details["uid"] = old["metadata"]["uid"].clone();
    Ok(Reply::json(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}
