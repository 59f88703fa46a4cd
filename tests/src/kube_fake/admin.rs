//! In-process calls as the admin, for a test to set up and inspect the
//! fake's state: they go through the same handlers as HTTP requests (so
//! watches see them) but skip TLS and authentication.

use super::router::{self, Body};
use super::{auth, KubeFake};
use serde_json::{json, Value};

impl KubeFake {
    /// One request as the admin, in-process (no TLS), for setting up and
    /// inspecting state: `(status, body)`. Not for WATCH.
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", http::HeaderValue::from_static("weft-tests/1"));
        let ctype = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        headers.insert("content-type", http::HeaderValue::from_static(ctype));
        let req = router::Request {
            method: method.parse().unwrap_or(http::Method::GET),
            path: path.to_string(),
            query: router::parse_query(query),
            headers,
            body: body
                .map(|b| bytes::Bytes::from(b.to_string()))
                .unwrap_or_default(),
            user: auth::User {
                name: "admin".into(),
                uid: None,
                groups: vec!["system:masters".into(), "system:authenticated".into()],
                extra: Value::Null,
            },
        };
        let reply = router::handle(self.state.clone(), req).await;
        let body = match reply.body {
            Body::Json(v) => v,
            Body::Text(t) => Value::String(t),
            Body::Empty | Body::Stream(_) => Value::Null,
        };
        (reply.code, body)
    }

    /// The URL path of an object (or, with `name` None, its collection).
    pub fn path_of(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> String {
        let r = self
            .state
            .discovery()
            .resource_for_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the fake does not serve {api_version} {kind}"));
        let mut p = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        if let (true, Some(ns)) = (r.namespaced, ns) {
            p.push_str(&format!("/namespaces/{ns}"));
        }
        p.push_str(&format!("/{}", r.plural));
        if let Some(n) = name {
            p.push_str(&format!("/{n}"));
        }
        p
    }

    fn path_for(&self, obj: &Value, with_name: bool) -> String {
        let s = |v: &Value| v.as_str().map(str::to_string);
        let api_version = s(&obj["apiVersion"]).expect("apiVersion");
        let kind = s(&obj["kind"]).expect("kind");
        let ns = s(&obj["metadata"]["namespace"]);
        let name = s(&obj["metadata"]["name"]);
        self.path_of(
            &api_version,
            &kind,
            ns.as_deref(),
            name.as_deref().filter(|_| with_name),
        )
    }

    /// Creates `obj` (apiVersion, kind and metadata decide where) as the
    /// admin and returns the stored object; panics on any error status.
    pub async fn create(&self, obj: Value) -> Value {
        let (code, body) = self
            .request("POST", &self.path_for(&obj, false), Some(&obj))
            .await;
        assert!(code == 201, "create failed with {code}: {body}");
        body
    }

    /// Replaces `obj` (PUT; `metadata.resourceVersion` is a precondition
    /// when present) and returns the stored object.
    pub async fn replace(&self, obj: Value) -> Value {
        let (code, body) = self
            .request("PUT", &self.path_for(&obj, true), Some(&obj))
            .await;
        assert!(code == 200, "replace failed with {code}: {body}");
        body
    }

    /// Merge-patches an object (`subresource` e.g. `Some("status")`).
    pub async fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch: Value,
    ) -> Value {
        let mut path = self.path_of(api_version, kind, ns, Some(name));
        if let Some(s) = subresource {
            path.push_str(&format!("/{s}"));
        }
        let (code, body) = self.request("PATCH", &path, Some(&patch)).await;
        assert!(code == 200, "patch failed with {code}: {body}");
        body
    }

    /// The object, or None when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let (code, body) = self
            .request(
                "GET",
                &self.path_of(api_version, kind, ns, Some(name)),
                None,
            )
            .await;
        (code == 200).then_some(body)
    }

    /// Deletes an object; true when it existed.
    pub async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> bool {
        let (code, _) = self
            .request(
                "DELETE",
                &self.path_of(api_version, kind, ns, Some(name)),
                None,
            )
            .await;
        code == 200
    }

    /// Creates a Namespace with labels.
    pub async fn create_namespace(&self, name: &str, labels: Value) -> Value {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}))
            .await
    }
}
