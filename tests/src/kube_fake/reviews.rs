//! The authentication API: TokenRequest (`serviceaccounts/{name}/token`),
//! TokenReview and SelfSubjectReview. None of them stores anything; all
//! answer 201, as the apiserver does.

use super::errors::ApiError;
use super::router::{Reply, Request, Target};
use super::tokens;
use super::util::{now_rfc3339, rfc3339};
use super::State;
use serde_json::{json, Value};

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn managed(req: &Request, api_version: &str, fields: Value, sub: Option<&str>) -> Value {
    let mut e = json!({
        "manager": req.manager(), "operation": "Update", "apiVersion": api_version,
        "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields,
    });
    if let Some(s) = sub {
        e["subresource"] = s.into();
    }
    json!([e])
}

fn spec_fields(spec: &Value) -> Value {
    let mut f = json!({});
    for k in spec.as_object().into_iter().flat_map(|m| m.keys()) {
        f[format!("f:{k}")] = json!({});
    }
    json!({ "f:spec": f })
}

pub fn token_request(state: &State, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    let sa = state
        .store()
        .get("serviceaccounts", &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, &name))?;
    let spec = &body["spec"];
    let mut audiences = strings(&spec["audiences"]);
    if audiences.is_empty() {
        audiences = vec![state.issuer.clone()];
    }
    let expiration = spec["expirationSeconds"].as_u64().unwrap_or(3600).max(600);
    let bound = &spec["boundObjectRef"];
    let pod = if bound.is_object() {
        let pod_name = bound["name"].as_str().unwrap_or("");
        let pods = state
            .discovery()
            .resource("", "v1", "pods")
            .expect("pods are served");
        let p = state
            .store()
            .get("pods", &ns, pod_name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&pods, pod_name))?;
        let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if bound["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u != uid)
        {
            return Err(ApiError::conflict(&pods, pod_name));
        }
        Some((pod_name.to_string(), uid))
    } else {
        None
    };
    let sa_uid = sa["metadata"]["uid"].as_str().unwrap_or("");
    let (token, exp) = tokens::issue(
        state,
        &ns,
        &name,
        sa_uid,
        &audiences,
        expiration,
        pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
    );
    let mut out_spec =
        json!({"audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null});
    if bound.is_object() {
        let mut b = bound.clone();
        if let Some((_, uid)) = &pod {
            b["uid"] = uid.clone().into();
        }
        out_spec["boundObjectRef"] = b;
    }
    Ok(Reply::json(
        201,
        json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": name, "namespace": ns, "uid": sa_uid,
                "creationTimestamp": sa["metadata"]["creationTimestamp"],
                "managedFields": managed(req, "authentication.k8s.io/v1", spec_fields(spec), Some("token")),
            },
            "spec": out_spec,
            "status": {"token": token, "expirationTimestamp": rfc3339(exp)},
        }),
    ))
}

pub fn token_review(state: &State, req: &Request) -> Result<Reply, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    let spec = body["spec"].clone();
    let token = spec["token"].as_str().unwrap_or("");
    let audiences = strings(&spec["audiences"]);
    let status = match tokens::validate(state, token, &audiences) {
        Ok(u) => json!({
            "authenticated": true,
            "user": {"username": u.username(), "uid": u.sa_uid, "groups": u.groups(), "extra": u.extra()},
            "audiences": u.audiences,
        }),
        Err(error) => json!({"user": {}, "error": error}),
    };
    Ok(Reply::json(
        201,
        json!({
            "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"managedFields": managed(req, "authentication.k8s.io/v1", spec_fields(&spec), None)},
            "spec": spec, "status": status,
        }),
    ))
}

pub fn self_subject_review(req: &Request) -> Result<Reply, ApiError> {
    Ok(Reply::json(
        201,
        json!({
            "kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": now_rfc3339()},
            "status": {"userInfo": req.user.info()},
        }),
    ))
}

/// SelfSubjectAccessReview (`kubectl auth can-i`): RBAC's answer for the
/// caller, for `spec.resourceAttributes`.
pub fn self_subject_access_review(state: &State, req: &Request) -> Result<Reply, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    access_review(state, &req.user, &body, "SelfSubjectAccessReview")
}

/// SubjectAccessReview: RBAC's answer for `spec.user` and `spec.groups`
/// (as `kubectl auth can-i --as` and `weft-control-plane check` ask).
pub fn subject_access_review(state: &State, req: &Request) -> Result<Reply, ApiError> {
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    let spec = &body["spec"];
    let user = super::auth::User {
        name: spec["user"].as_str().unwrap_or("").to_string(),
        uid: spec["uid"].as_str().map(str::to_string),
        groups: strings(&spec["groups"]),
        extra: json!({}),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview.authorization.k8s.io",
            "authorization.k8s.io",
            "SubjectAccessReview",
            "",
            vec![super::errors::Cause::invalid(
                "spec.user",
                "",
                "at least one of user or group must be specified",
            )],
        ));
    }
    access_review(state, &user, &body, "SubjectAccessReview")
}

fn access_review(
    state: &State,
    user: &super::auth::User,
    body: &Value,
    kind: &str,
) -> Result<Reply, ApiError> {
    let a = &body["spec"]["resourceAttributes"];
    let s = |k: &str| a[k].as_str().filter(|v| !v.is_empty());
    let resource = match s("subresource") {
        Some(sub) => format!("{}/{sub}", s("resource").unwrap_or("")),
        None => s("resource").unwrap_or("").to_string(),
    };
    let allowed = super::rbac::allowed(
        state,
        user,
        s("verb").unwrap_or(""),
        s("group").unwrap_or(""),
        &resource,
        s("namespace"),
        s("name"),
    );
    let mut status = json!({ "allowed": allowed });
    if !allowed {
        status["reason"] = "no RBAC rule allows it".into();
    }
    Ok(Reply::json(
        201,
        json!({
            "kind": kind, "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": body["spec"], "status": status,
        }),
    ))
}
