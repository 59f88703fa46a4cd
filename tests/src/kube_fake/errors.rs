//! Failures as the apiserver reports them: a `Status` object (or, for an
//! unknown URL, the plain-text `404 page not found`), with the reason, code,
//! message and `details` shaped like the recorded ones. Every handler returns
//! an [`ApiError`] for a failure so no answer is shaped by hand elsewhere.

use super::discovery::Resource;
use serde_json::{json, Map, Value};

/// One failure answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    /// The `Status` body; `None` for the plain-text 404.
    pub status: Option<Value>,
    /// Extra response headers (`Retry-After`, `X-Content-Type-Options`).
    pub headers: Vec<(&'static str, String)>,
}

/// One entry of `details.causes`.
pub struct Cause {
    pub reason: &'static str,
    pub message: String,
    pub field: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {value}: {why}"),
            field: field.into(),
        }
    }
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
            field: field.into(),
        }
    }
}

fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    ApiError {
        code,
        status: Some(s),
        headers: Vec::new(),
    }
}

/// `details` naming an object: `{name, group, kind}` with the group left out
/// for the core group, as the apiserver does.
pub fn details(name: Option<&str>, group: &str, kind: &str) -> Value {
    let mut d = Map::new();
    if let Some(n) = name {
        d.insert("name".into(), n.into());
    }
    if !group.is_empty() {
        d.insert("group".into(), group.into());
    }
    d.insert("kind".into(), kind.into());
    Value::Object(d)
}

impl ApiError {
    pub fn page_not_found() -> ApiError {
        ApiError {
            code: 404,
            status: None,
            headers: vec![("X-Content-Type-Options", "nosniff".into())],
        }
    }

    pub fn not_found(r: &Resource, name: &str) -> ApiError {
        status(
            404,
            "NotFound",
            format!("{} {name:?} not found", r.group_resource()),
            Some(details(Some(name), &r.group, &r.plural)),
        )
    }

    /// A missing namespace, for a create into it.
    pub fn namespace_not_found(ns: &str) -> ApiError {
        status(
            404,
            "NotFound",
            format!("namespaces {ns:?} not found"),
            Some(details(Some(ns), "", "namespaces")),
        )
    }

    pub fn already_exists(r: &Resource, name: &str) -> ApiError {
        status(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", r.group_resource()),
            Some(details(Some(name), &r.group, &r.plural)),
        )
    }

    /// A write with a stale `resourceVersion`.
    pub fn conflict(r: &Resource, name: &str) -> ApiError {
        status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                r.group_resource()
            ),
            Some(details(Some(name), &r.group, &r.plural)),
        )
    }

    /// A server-side apply that would take fields other managers own.
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> ApiError {
        status(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    /// 422: `qualified` is how the message names the object (`Service`,
    /// `HTTPRoute.gateway.networking.k8s.io`, `leases.coordination.k8s.io`)
    /// and `kind` what `details.kind` says.
    pub fn invalid(
        qualified: &str,
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<Cause>,
    ) -> ApiError {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let list = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let mut d = details(Some(name), group, kind);
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        status(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {list}"),
            Some(d),
        )
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        status(400, "BadRequest", message.into(), None)
    }

    pub fn method_not_allowed() -> ApiError {
        status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            Some(json!({})),
        )
    }

    pub fn unsupported_media_type(accepted: &[&str]) -> ApiError {
        status(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 410 for a LIST at a resourceVersion the history no longer holds.
    pub fn expired(message: &str, continue_token: Option<String>) -> ApiError {
        let mut e = status(410, "Expired", message.into(), None);
        if let (Some(t), Some(s)) = (continue_token, e.status.as_mut()) {
            s["metadata"] = json!({ "continue": t });
        }
        e
    }

    /// 504 for a LIST at a resourceVersion the fake has not reached.
    pub fn too_large_resource_version(asked: u64, current: u64) -> ApiError {
        let mut e = status(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {asked}, current: {current}"),
            Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
        );
        e.headers.push(("Retry-After", "1".into()));
        e
    }

    pub fn unauthorized() -> ApiError {
        status(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// RBAC's 403: `what` is `endpointslices.discovery.k8s.io "name"` or
    /// `endpointslices.discovery.k8s.io`.
    pub fn forbidden(
        r: &Resource,
        name: Option<&str>,
        user: &str,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> ApiError {
        let what = match name {
            Some(n) => format!("{} {n:?}", r.group_resource()),
            None => r.group_resource(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".into(),
        };
        let mut e = status(
            403,
            "Forbidden",
            format!(
                "{what} is forbidden: User {user:?} cannot {verb} resource {resource:?} in API group {:?} {scope}",
                r.group
            ),
            Some(details(name, &r.group, &r.plural)),
        );
        e.headers.push(("X-Content-Type-Options", "nosniff".into()));
        e
    }

    /// 403 for a URL outside the resource space (`/apis` for anonymous).
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> ApiError {
        let mut e = status(
            403,
            "Forbidden",
            format!("forbidden: User {user:?} cannot {verb} path {path:?}"),
            Some(json!({})),
        );
        e.headers.push(("X-Content-Type-Options", "nosniff".into()));
        e
    }

    /// 403 for a create in a namespace that is being deleted.
    pub fn namespace_terminating(r: &Resource, name: &str, ns: &str) -> ApiError {
        let mut d = details(Some(name), &r.group, &r.plural);
        d["causes"] = json!([{
            "reason": "NamespaceTerminating",
            "message": format!("namespace {ns} is being terminated"),
            "field": "metadata.namespace",
        }]);
        status(
            403,
            "Forbidden",
            format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.group_resource()
            ),
            Some(d),
        )
    }

    /// An admission webhook's denial.
    pub fn denied(code: u16, reason: &str, message: String) -> ApiError {
        status(code, reason, message, None)
    }

    pub fn internal(message: String) -> ApiError {
        status(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
            Some(json!({"causes": [{"message": message}]})),
        )
    }

    /// The watch ERROR event's object for an expired resourceVersion.
    pub fn watch_expired(asked: u64, oldest: u64) -> Value {
        status(
            410,
            "Expired",
            format!("too old resource version: {asked} ({oldest})"),
            None,
        )
        .status
        .unwrap_or(Value::Null)
    }
}
