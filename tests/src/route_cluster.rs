//! A cluster for the route tests: Services with one endpoint, HTTPRoutes
//! on `reviews`, a fake with the control plane's account, and what the
//! control plane says of its status writes.

use crate::control_plane::ControlPlane;
use crate::kube_cluster::{endpoint_slice, install_control_plane_account_with};
use crate::kube_fake::KubeFake;
use serde_json::{json, Value};
use std::net::SocketAddr;

const GATEWAY: &str = "gateway.networking.k8s.io/v1";

/// Service `shop/<name>` on port 9080 with one ready endpoint at `addr`.
pub async fn service(fake: &KubeFake, name: &str, addr: SocketAddr) {
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 9080, "targetPort": "web"}]}}))
        .await;
    let ip = addr.ip().to_string();
    let slice = endpoint_slice(
        "shop",
        &format!("{name}-a"),
        name,
        addr.port(),
        &[(&ip, true)],
    );
    fake.create(slice).await;
}

/// A fake cluster (with the Weft CRDs or not), the control plane's
/// ServiceAccount with `rules`, and namespaces `shop`, `web` and `other`.
pub async fn fake_with(rules: Vec<Value>, weft_crds: bool) -> KubeFake {
    let b = KubeFake::builder();
    let fake = if weft_crds { b.weft_crds() } else { b }.start().await;
    install_control_plane_account_with(&fake, &["shop", "web", "other"], rules).await;
    fake
}

pub fn route(ns: &str, name: &str, parent_ns: Option<&str>, rules: Value) -> Value {
    let mut parent = json!({"group": "", "kind": "Service", "name": "reviews"});
    if let Some(p) = parent_ns {
        parent["namespace"] = json!(p);
    }
    json!({"apiVersion": GATEWAY, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [parent], "rules": rules}})
}

pub async fn get(fake: &KubeFake, api: &str, kind: &str, ns: &str, name: &str) -> Value {
    fake.get(api, kind, Some(ns), name)
        .await
        .unwrap_or_else(|| panic!("{kind} {ns}/{name} is gone"))
}

/// How many status writes control plane `cp` made.
pub async fn w(cp: &ControlPlane) -> u64 {
    cp.admin_json("/config").await["kubernetes"]["status_writes"]
        .as_u64()
        .unwrap()
}
