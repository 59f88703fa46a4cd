//! The URL space: which part of a request is discovery, which names a
//! resource (`/api/v1/namespaces/{ns}/{resource}/{name}/{subresource}`,
//! `/apis/{group}/{version}/...`, cluster-scoped resources without the
//! namespace part), and which verb it is. Authorization runs here, before
//! any handler, so RBAC applies to every endpoint alike.

use super::auth::User;
use super::discovery::Resource;
use super::errors::ApiError;
use super::{api, crds, listwatch, proxy, rbac, reviews, State};
use bytes::Bytes;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A request as the handlers see it.
pub struct Request {
    pub method: http::Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub user: User,
}

impl Request {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    pub fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The field manager: `?fieldManager=`, else the User-Agent up to its
    /// first `/`, as the apiserver derives it.
    pub fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.header("user-agent");
        let m = ua.split('/').next().unwrap_or("");
        if m.is_empty() {
            "unknown".into()
        } else {
            m.to_string()
        }
    }

    pub fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

/// What goes back on the wire.
pub enum Body {
    /// Compact JSON and a newline, as the apiserver writes it.
    Json(Value),
    Text(String),
    Empty,
    /// A watch: newline-delimited events, ending when the sender drops.
    Stream(mpsc::Receiver<Bytes>),
}

pub struct Reply {
    pub code: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    pub fn json(code: u16, body: Value) -> Reply {
        Reply {
            code,
            content_type: Some("application/json".into()),
            headers: Vec::new(),
            body: Body::Json(body),
        }
    }

    pub fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_string(), v.into()));
        self
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let mut r = match e.status {
            Some(s) => Reply::json(e.code, s),
            None => Reply {
                code: e.code,
                content_type: Some("text/plain; charset=utf-8".into()),
                headers: Vec::new(),
                body: Body::Text("404 page not found\n".into()),
            },
        };
        for (k, v) in e.headers {
            r.headers.push((k.to_string(), v));
        }
        r
    }
}

/// A resource URL, parsed.
pub struct Target {
    pub resource: Arc<Resource>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// The RBAC verb of a request on a resource.
pub fn verb(method: &http::Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

fn parse_target(state: &State, path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, res, name, sub) = match rest {
        ["namespaces", n, sub @ ("status" | "finalize")] => {
            (None, "namespaces", Some(*n), Some(*sub))
        }
        ["namespaces", ns, res, more @ ..] if !more.is_empty() || !res.is_empty() => {
            (Some(*ns), *res, more.first().copied(), more.get(1).copied())
        }
        [res, more @ ..] => (None, *res, more.first().copied(), more.get(1).copied()),
        _ => return None,
    };
    if rest.len() > 5 || (ns.is_none() && rest.len() > 3) {
        return None;
    }
    let resource = state.discovery().resource(group, version, res)?;
    if ns.is_some() && !resource.namespaced {
        return None;
    }
    if ns.is_none() && resource.namespaced && name.is_some() {
        return None;
    }
    if let Some(s) = sub {
        if !resource.has_subresource(s) {
            return None;
        }
    }
    Some(Target {
        resource,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    })
}

/// Paths any authenticated user may read (the apiserver's
/// `system:discovery` and `system:public-info-viewer` roles).
fn public_path(path: &str) -> bool {
    path == "/version"
        || path == "/healthz"
        || path == "/livez"
        || path == "/readyz"
        || path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/")
        || path.starts_with("/openapi/")
}

/// Answers one authenticated request.
pub async fn handle(state: Arc<State>, req: Request) -> Reply {
    match route(state, req).await {
        Ok(r) => r,
        Err(e) => e.into(),
    }
}

async fn route(state: Arc<State>, req: Request) -> Result<Reply, ApiError> {
    let path = req.path.clone();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return Ok(Reply {
            code: 200,
            content_type: Some("text/plain; charset=utf-8".into()),
            headers: Vec::new(),
            body: Body::Text("ok".into()),
        });
    }
    if let Some(t) = proxy::parse(&path) {
        let verb = match req.method.as_str() {
            "GET" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => return Err(ApiError::method_not_allowed()),
        };
        let resource = state
            .discovery()
            .resource("", "v1", t.kind)
            .ok_or_else(ApiError::page_not_found)?;
        let target = Target {
            resource,
            namespace: Some(t.namespace.clone()),
            name: Some(t.segment.clone()),
            subresource: Some("proxy".into()),
        };
        rbac::authorize(&state, &req.user, verb, &target)?;
        return proxy::forward(&state, &req, &t).await;
    }
    let Some(target) = parse_target(&state, &path) else {
        if req.method != http::Method::GET {
            return Err(ApiError::page_not_found());
        }
        if req.user.anonymous() && !matches!(path.as_str(), "/version" | "/healthz") {
            return Err(ApiError::forbidden_path(&req.user.name, "get", &path));
        }
        if !public_path(&path) {
            return Err(ApiError::page_not_found());
        }
        return state
            .discovery_reply(&path, req.header("accept"), req.header("if-none-match"))
            .ok_or_else(ApiError::page_not_found);
    };
    let watch = matches!(req.q("watch"), Some("1" | "true"));
    let verb = verb(&req.method, &target, watch);
    rbac::authorize(&state, &req.user, verb, &target)?;
    let r = &target.resource;
    let (group, plural) = (r.group.as_str(), r.plural.as_str());
    let reply = match (verb, group, plural, target.subresource.as_deref()) {
        ("create", "authentication.k8s.io", "tokenreviews", None) => {
            reviews::token_review(&state, &req)
        }
        ("create", "authentication.k8s.io", "selfsubjectreviews", None) => {
            reviews::self_subject_review(&req)
        }
        ("create", "", "serviceaccounts", Some("token")) => {
            reviews::token_request(&state, &req, &target)
        }
        ("create", "authorization.k8s.io", "selfsubjectaccessreviews", None) => {
            reviews::self_subject_access_review(&state, &req)
        }
        ("create", "authorization.k8s.io", "subjectaccessreviews", None) => {
            reviews::subject_access_review(&state, &req)
        }
        (_, "authentication.k8s.io" | "authorization.k8s.io", _, _) => {
            Err(ApiError::method_not_allowed())
        }
        (
            "create" | "update" | "patch" | "delete",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            None,
        ) => crds::write(&state, &req, &target, verb).await,
        ("get", ..) => api::get(&state, &target),
        ("list", ..) => listwatch::list(&state, &req, &target).await,
        ("watch", ..) => listwatch::watch(&state, &req, &target),
        ("create", ..) if target.name.is_none() => api::create(&state, &req, &target).await,
        ("update", ..) => api::update(&state, &req, &target).await,
        ("patch", ..) => api::patch(&state, &req, &target).await,
        ("delete", ..) => api::delete(&state, &req, &target),
        _ => Err(ApiError::method_not_allowed()),
    };
    // Every write of a core v1 Endpoints object carries the deprecation
    // warning, whether it succeeds or not.
    if r.kind == "Endpoints" && matches!(verb, "create" | "update" | "patch") {
        let warning =
            "299 - \"v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice\"";
        let reply = match reply {
            Ok(r) => r,
            Err(e) => e.into(),
        };
        return Ok(reply.header("Warning", warning));
    }
    reply
}

/// `%XX` and `+` decoding of one query component.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 3 <= b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}
