//! Reading route status as the control plane writes it: our
//! `status.parents[]` entry (`controllerName: weft.dev/mesh`) and its
//! conditions.

use crate::kube_fake::KubeFake;
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

const GATEWAY: &str = "gateway.networking.k8s.io/v1";

/// Our `status.parents` entry of a route object, once it has one.
pub fn ours(route: &Value) -> Option<Value> {
    route["status"]["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == "weft.dev/mesh")
        .cloned()
}

/// Condition `kind` of a conditions list (`Null` when absent).
pub fn condition(conds: &Value, kind: &str) -> Value {
    conds
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Whether a condition has `status` for `reason`.
pub fn is(cond: &Value, status: &str, reason: &str) -> bool {
    cond["status"] == status && cond["reason"] == reason
}

/// Waits (up to 20 s) until our entry on the Gateway API route `kind`
/// `ns/name` satisfies `ok`, and returns it; panics with `what` and the
/// route as last read.
pub async fn route_status(
    fake: &KubeFake,
    kind: &str,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let last = Mutex::new(Value::Null);
    let found = crate::eventually_or(Duration::from_secs(20), || async {
        let r = fake.get(GATEWAY, kind, Some(ns), name).await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = r.clone();
        ours(&r).filter(|p| ok(p))
    })
    .await;
    found.unwrap_or_else(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner());
        panic!("{kind} {ns}/{name}: {what}; it is {last}")
    })
}
