//! Status of what the control plane read from the cluster, written back
//! by the replica that holds the status Lease (see [`super::lease`]).
//!
//! A mesh route gets one `status.parents[]` entry per mesh parentRef,
//! `controllerName: weft.dev/mesh`, with `Accepted` and `ResolvedRefs`;
//! a Weft resource gets a `Ready` condition. Conditions carry the
//! object's `observedGeneration`; `lastTransitionTime` moves only when a
//! condition's status does. Other controllers' parents entries (and other
//! condition types) are kept as found: `status.parents` is an atomic list,
//! so each write is a merge patch of `/status` carrying the
//! resourceVersion it was computed from, recomputed from a fresh read on
//! 409. A status that is already right is not written, so the watch event
//! a write causes does not cause another.

use super::objects::{is_mesh_parent, key, Kind, Refusals};
use crate::resources::Rejections;
use crate::state::{ControlPlane, KubernetesStatus};
use k8s_openapi::api::core::v1::Service;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::watch;
use weft_mesh::process::lock;

/// The route status `controllerName`.
pub(crate) const CONTROLLER: &str = "weft.dev/mesh";

/// Merge-patch attempts on conflicts before waiting for the next change.
const ATTEMPTS: usize = 5;

/// One condition as this controller means it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) kind: &'static str,
    pub(crate) ok: bool,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

impl Condition {
    fn new(kind: &'static str, ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Condition {
            kind,
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// What the judgement of objects rests on.
pub(crate) struct Judge<'a> {
    /// `namespace/name` → the Service's ports.
    pub(crate) services: std::collections::HashMap<String, Vec<i32>>,
    /// `namespace/name` of the Weft Backends read from the cluster.
    pub(crate) backends: HashSet<String>,
    pub(crate) rejected: &'a Rejections,
    pub(crate) refused: &'a Refusals,
}

impl Judge<'_> {
    pub(crate) fn services_of(
        services: &[Arc<Service>],
    ) -> std::collections::HashMap<String, Vec<i32>> {
        services
            .iter()
            .filter_map(|s| {
                let key = format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?
                );
                let ports = s
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.ports.as_ref())
                    .map(|ps| ps.iter().map(|p| p.port).collect())
                    .unwrap_or_default();
                Some((key, ports))
            })
            .collect()
    }

    /// The (parentRef, conditions) of each mesh parent of a route; empty
    /// when the route is not a mesh route.
    pub(crate) fn route(&self, kind: &Kind, o: &DynamicObject) -> Vec<(Value, [Condition; 2])> {
        let key = key(kind, o);
        let route_ns = o.metadata.namespace.as_deref().unwrap_or("default");
        let (accepted, resolved) = if let Some(r) = self.refused.get(&key) {
            (
                Condition::new("Accepted", true, "Accepted", "accepted"),
                Condition::new(
                    "ResolvedRefs",
                    false,
                    r.reason,
                    format!("{}: {}", r.path, r.message),
                ),
            )
        } else if let Some(errors) = self.rejected.get(&key) {
            let text = errors
                .iter()
                .map(|(p, m)| {
                    if p.is_empty() {
                        m.clone()
                    } else {
                        format!("{p}: {m}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let missing = errors.iter().all(|(p, m)| {
                p.contains(".backendRefs[")
                    && p.ends_with(".name")
                    && m.starts_with("no Backend named")
            });
            if missing {
                (
                    Condition::new("Accepted", true, "Accepted", "accepted"),
                    Condition::new("ResolvedRefs", false, "BackendNotFound", text),
                )
            } else {
                (
                    Condition::new("Accepted", false, "UnsupportedValue", text),
                    Condition::new(
                        "ResolvedRefs",
                        true,
                        "ResolvedRefs",
                        "all references resolved",
                    ),
                )
            }
        } else {
            (
                Condition::new("Accepted", true, "Accepted", "accepted"),
                Condition::new(
                    "ResolvedRefs",
                    true,
                    "ResolvedRefs",
                    "all references resolved",
                ),
            )
        };
        let parents = o.data["spec"]["parentRefs"].as_array();
        let mut out = Vec::new();
        for (i, p) in parents.into_iter().flatten().enumerate() {
            if !is_mesh_parent(p) {
                continue;
            }
            let ns = p["namespace"].as_str().unwrap_or(route_ns);
            let name = p["name"].as_str().unwrap_or_default();
            let found = if p["kind"] == "Backend" {
                self.backends.contains(&format!("{ns}/{name}"))
            } else {
                self.services
                    .get(&format!("{ns}/{name}"))
                    .is_some_and(|ports| {
                        p["port"]
                            .as_i64()
                            .is_none_or(|want| ports.iter().any(|&x| i64::from(x) == want))
                    })
            };
            let mut a = accepted.clone();
            if !found && a.ok {
                a = Condition::new(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    format!(
                        "spec.parentRefs[{i}]: no {} {ns}/{name} with that port",
                        p["kind"].as_str().unwrap_or("Service")
                    ),
                );
            }
            out.push((p.clone(), [a, resolved.clone()]));
        }
        out
    }

    /// The `Ready` condition of a Weft resource.
    pub(crate) fn weft(&self, kind: &Kind, o: &DynamicObject) -> Condition {
        match self.rejected.get(&key(kind, o)) {
            None => Condition::new("Ready", true, "Ready", "in force"),
            Some(errors) => {
                let text = errors
                    .iter()
                    .map(|(p, m)| {
                        if p.is_empty() {
                            m.clone()
                        } else {
                            format!("{p}: {m}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                Condition::new("Ready", false, "Invalid", text)
            }
        }
    }
}

/// Writes the status of every route and Weft resource that needs it,
/// after every change while this replica holds the Lease.
pub(crate) async fn run(
    client: Client,
    stores: Vec<(&'static Kind, Store<DynamicObject>)>,
    services: Store<Service>,
    cp: Arc<ControlPlane>,
    mut refusals: watch::Receiver<Option<Refusals>>,
    mut leader: watch::Receiver<bool>,
    status: Arc<KubernetesStatus>,
) {
    loop {
        if *leader.borrow_and_update() {
            let refused = refusals.borrow_and_update().clone().unwrap_or_default();
            let rejected = lock(&cp.inputs).rejected();
            let judge = Judge {
                services: Judge::services_of(&services.state()),
                backends: stores
                    .iter()
                    .filter(|(k, _)| k.kind == "Backend")
                    .flat_map(|(_, s)| s.state())
                    .filter_map(|o| {
                        Some(format!(
                            "{}/{}",
                            o.metadata.namespace.as_deref()?,
                            o.metadata.name.as_deref()?
                        ))
                    })
                    .collect(),
                rejected: &rejected,
                refused: &refused,
            };
            for (kind, store) in &stores {
                for o in store.state() {
                    match write(&client, kind, &o, &judge).await {
                        Ok(true) => {
                            status.status_writes.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(object = %key(kind, &o), "status written");
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!("{e}");
                            *lock(&status.last_error) = Some(e);
                        }
                    }
                }
            }
        }
        tokio::select! {
            r = refusals.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
        }
    }
}

/// Shows the objects left out on `/config` (`kubernetes.rejected`), and
/// logs each one when why it is left out changes.
pub(crate) fn report(status: &KubernetesStatus, rejected: &Rejections, refused: &Refusals) {
    let mut shown: std::collections::BTreeMap<String, String> = rejected
        .iter()
        .map(|(k, errors)| {
            let text = errors.iter().map(|(p, m)| format!("{p}: {m}"));
            (k.clone(), text.collect::<Vec<_>>().join("; "))
        })
        .collect();
    for (k, r) in refused {
        shown.insert(
            k.clone(),
            format!("{}: {}: {}", r.reason, r.path, r.message),
        );
    }
    let mut last = lock(&status.rejected);
    for (k, why) in &shown {
        if last.get(k) != Some(why) {
            tracing::warn!(object = %k, "left out: {why}");
        }
    }
    *last = shown;
}

/// Conditions as written: the previous `lastTransitionTime` is kept when
/// a condition's status did not change.
fn conditions(
    want: &[Condition],
    old: Option<&Vec<Value>>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Value> {
    want.iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" };
            let since = old
                .into_iter()
                .flatten()
                .find(|o| o["type"] == c.kind && o["status"] == status)
                .and_then(|o| o["lastTransitionTime"].as_str())
                .unwrap_or(now);
            let mut v = json!({
                "type": c.kind,
                "status": status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since,
            });
            if let Some(g) = generation {
                v["observedGeneration"] = json!(g);
            }
            v
        })
        .collect()
}

/// The status `o` should have, when it differs from what it has.
pub(crate) fn wanted(
    kind: &Kind,
    o: &DynamicObject,
    judge: &Judge<'_>,
    now: &str,
) -> Option<Value> {
    let generation = o.metadata.generation;
    let status = o.data.get("status").cloned().unwrap_or(Value::Null);
    if kind.route {
        // No mesh parent (any more): only entries of ours to drop, if any.
        let ours = judge.route(kind, o);
        let existing: Vec<Value> = status["parents"].as_array().cloned().unwrap_or_default();
        let mut parents: Vec<Value> = existing
            .iter()
            .filter(|p| p["controllerName"] != CONTROLLER)
            .cloned()
            .collect();
        for (parent_ref, conds) in ours {
            let old = existing
                .iter()
                .find(|p| p["controllerName"] == CONTROLLER && p["parentRef"] == parent_ref)
                .and_then(|p| p["conditions"].as_array());
            parents.push(json!({
                "parentRef": parent_ref,
                "controllerName": CONTROLLER,
                "conditions": conditions(&conds, old, generation, now),
            }));
        }
        (parents != existing).then(|| json!({"parents": parents}))
    } else {
        let ready = judge.weft(kind, o);
        let existing: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> = existing
            .iter()
            .filter(|c| c["type"] != "Ready")
            .cloned()
            .collect();
        conds.extend(conditions(&[ready], Some(&existing), generation, now));
        (conds != existing).then(|| json!({"conditions": conds}))
    }
}

/// Writes `o`'s status when it is not already right; `true` when written.
pub(crate) async fn write(
    client: &Client,
    kind: &Kind,
    o: &DynamicObject,
    judge: &Judge<'_>,
) -> Result<bool, String> {
    let ar = kind.api_resource();
    let name = o.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match &o.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut current = o.clone();
    for _ in 0..ATTEMPTS {
        let now = now();
        let Some(status) = wanted(kind, &current, judge, &now) else {
            return Ok(false);
        };
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": status,
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                current = api
                    .get_status(&name)
                    .await
                    .map_err(|e| describe(kind, &name, &e))?;
            }
            Err(e) => return Err(describe(kind, &name, &e)),
        }
    }
    Err(format!(
        "{} {name}: status kept conflicting ({ATTEMPTS} tries); retrying on the next change",
        kind.kind
    ))
}

fn describe(kind: &Kind, name: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden to write the status of {} {name}: grant the control plane's ServiceAccount update and patch on {}/status ({e})",
            kind.kind,
            kind.resource()
        ),
        _ => format!("writing the status of {} {name}: {e}", kind.kind),
    }
}

/// Now, as Kubernetes writes `lastTransitionTime` (seconds, UTC).
fn now() -> String {
    k8s_openapi::jiff::fmt::strtime::format(
        "%Y-%m-%dT%H:%M:%SZ",
        k8s_openapi::jiff::Timestamp::now(),
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::objects::KINDS;
    use super::*;
    use crate::resources::Rejections;

    fn route(generation: i64, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop", "generation": generation},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn status_is_rewritten_only_when_it_changes_and_keeps_what_is_not_ours() {
        let (rejected, refused) = (Rejections::new(), Refusals::new());
        let judge = Judge {
            services: [("shop/reviews".to_string(), vec![80])].into(),
            backends: HashSet::new(),
            rejected: &rejected,
            refused: &refused,
        };
        let theirs = json!({"parentRef": {"name": "reviews"}, "controllerName": "example.com/x", "conditions": []});
        let first = wanted(
            &KINDS[0],
            &route(1, json!({"parents": [theirs]})),
            &judge,
            "T1",
        )
        .unwrap();
        assert_eq!(first["parents"][0], theirs);
        assert_eq!(
            first["parents"][1]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
        // Written: nothing more to write.
        assert_eq!(
            wanted(&KINDS[0], &route(1, first.clone()), &judge, "T2"),
            None
        );
        // A new generation: written again, the transition time kept.
        let second = wanted(&KINDS[0], &route(2, first), &judge, "T3").unwrap();
        let accepted = &second["parents"][1]["conditions"][0];
        assert_eq!(accepted["observedGeneration"], 2);
        assert_eq!(accepted["lastTransitionTime"], "T1");
        // The parent Service goes: NoMatchingParent, a new transition.
        let gone = Judge {
            services: Default::default(),
            ..judge
        };
        let third = wanted(&KINDS[0], &route(2, second), &gone, "T4").unwrap();
        let accepted = &third["parents"][1]["conditions"][0];
        assert_eq!(accepted["reason"], "NoMatchingParent");
        assert_eq!(accepted["lastTransitionTime"], "T4");
    }
}
