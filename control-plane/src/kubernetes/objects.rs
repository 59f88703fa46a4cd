//! Routes (`HTTPRoute`, `GRPCRoute`) and Weft's own resources read from
//! the cluster: one watcher each into a store of raw objects, and their
//! translation into the documents the file loader reads.
//!
//! A kind whose CRD is not installed (404) or that the control plane may
//! not read (403) is reported by name (log and `/config`) and retried with
//! backoff; the other kinds keep flowing.
//!
//! Only mesh routes are ours: the parentRefs that name a core `Service`
//! (or a Weft `Backend`) are kept, Gateway parents dropped, and a route
//! with none is skipped. Server-set metadata and status are stripped. A
//! rule without backendRefs sends to the route's first parent Service, as
//! GAMMA reads it. A backendRef to another namespace needs a
//! `ReferenceGrant` (`gateway.networking.k8s.io/v1beta1`) in that
//! namespace allowing the route's kind and namespace to the backend's kind
//! (and name, if the grant names one), else it is refused
//! (`RefNotPermitted`); a consumer route's backendRef to its own parent
//! Service needs none. Refusals found here never reach the loader; its own
//! errors come back through `resources::Inputs::rejected`.

use super::watch_error::{code, describe};
use crate::resources::ClusterObject;
use crate::state::KubernetesStatus as Status;
use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use weft_mesh::process::lock;

/// One watched kind.
pub(crate) struct Kind {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    /// A Gateway API route (else a Weft resource).
    pub(crate) route: bool,
}

/// The ReferenceGrants' index in [`KINDS`]: read for permissions, not a
/// document.
pub(crate) const GRANTS: usize = 6;

impl Kind {
    pub(crate) fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }

    /// `plural.group`, as RBAC and errors name it.
    pub(crate) fn resource(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const GATEWAY: &str = "gateway.networking.k8s.io";
const WEFT: &str = "weft.dev";

pub(crate) const KINDS: [Kind; 7] = [
    Kind {
        group: GATEWAY,
        version: "v1",
        kind: "HTTPRoute",
        plural: "httproutes",
        route: true,
    },
    // Treated exactly as HTTPRoute; the loader decides what it accepts.
    Kind {
        group: GATEWAY,
        version: "v1",
        kind: "GRPCRoute",
        plural: "grpcroutes",
        route: true,
    },
    Kind {
        group: WEFT,
        version: "v1alpha1",
        kind: "Backend",
        plural: "backends",
        route: false,
    },
    Kind {
        group: WEFT,
        version: "v1alpha1",
        kind: "TrafficPolicy",
        plural: "trafficpolicies",
        route: false,
    },
    Kind {
        group: WEFT,
        version: "v1alpha1",
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        route: false,
    },
    Kind {
        group: WEFT,
        version: "v1alpha1",
        kind: "MeshConfig",
        plural: "meshconfigs",
        route: false,
    },
    Kind {
        group: GATEWAY,
        version: "v1beta1",
        kind: "ReferenceGrant",
        plural: "referencegrants",
        route: false,
    },
];

/// The stores of every kind in [`KINDS`], in that order.
pub(crate) struct Objects {
    pub(crate) stores: Vec<(&'static Kind, Store<DynamicObject>)>,
    /// Per kind: listed once, or found unavailable (404/403).
    settled: Vec<watch::Receiver<bool>>,
}

impl Objects {
    /// Starts a watcher per kind, waking `changed` on every change.
    pub(crate) fn start(client: &Client, changed: &Arc<Notify>, status: &Arc<Status>) -> Objects {
        let mut stores = Vec::new();
        let mut settled = Vec::new();
        for kind in &KINDS {
            let ar = kind.api_resource();
            let writer = reflector::store::Writer::new(ar.clone());
            stores.push((kind, writer.as_reader()));
            let (tx, rx) = watch::channel(false);
            settled.push(rx);
            let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
            tokio::spawn(run(kind, api, writer, tx, changed.clone(), status.clone()));
        }
        Objects { stores, settled }
    }

    /// Waits until every kind was listed once or found unavailable.
    pub(crate) async fn settled(&self) {
        for s in &self.settled {
            let _ = s.clone().wait_for(|done| *done).await;
        }
    }

    /// Every object as a document for the loader, and the ones refused
    /// before loading (by key, with their `(field path, message)`).
    pub(crate) fn documents(&self) -> (Vec<ClusterObject>, Refusals) {
        let mut docs = Vec::new();
        let mut refused = Refusals::new();
        let grants = self.stores[GRANTS].1.state();
        for (kind, store) in &self.stores[..GRANTS] {
            let mut objects = store.state();
            objects.sort_by_key(|o| key(kind, o));
            for o in objects {
                match document(kind, &o, &grants) {
                    Ok(Some(text)) => docs.push(ClusterObject {
                        key: key(kind, &o),
                        text,
                    }),
                    Ok(None) => {}
                    Err(r) => {
                        refused.insert(key(kind, &o), r);
                    }
                }
            }
        }
        (docs, refused)
    }
}

/// `Kind namespace/name`: how cluster objects are named among the sources.
pub(crate) fn key(kind: &Kind, o: &DynamicObject) -> String {
    let ns = o.metadata.namespace.as_deref().unwrap_or("default");
    let name = o.metadata.name.as_deref().unwrap_or_default();
    format!("{} {ns}/{name}", kind.kind)
}

/// A route refused before loading: the status reason, the field path and
/// the message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) reason: &'static str,
    pub(crate) path: String,
    pub(crate) message: String,
}

pub(crate) type Refusals = BTreeMap<String, Refusal>;

/// Runs one kind's watcher for ever.
async fn run(
    kind: &'static Kind,
    api: Api<DynamicObject>,
    writer: reflector::store::Writer<DynamicObject>,
    settled: watch::Sender<bool>,
    changed: Arc<Notify>,
    status: Arc<Status>,
) {
    let what = kind.resource();
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitDone) => {
                let n = status.lists.fetch_add(1, Ordering::Relaxed) + 1;
                if lock(&status.unavailable).remove(&what).is_some() {
                    tracing::info!(resource = %what, "available again");
                }
                tracing::info!(resource = %what, lists = n, "listed");
                settled.send_replace(true);
                changed.notify_one();
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => changed.notify_one(),
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(e) => {
                status.errors.fetch_add(1, Ordering::Relaxed);
                let message = describe(&what, &e);
                match code(&e) {
                    Some(404) => {
                        let m = format!(
                            "{what} is not served (its CRD is not installed); retrying ({e})"
                        );
                        tracing::warn!(resource = %what, "{m}");
                        // Shown under `unavailable`, not as the last error:
                        // a kind not installed is a choice, not a fault.
                        lock(&status.unavailable).insert(what.clone(), m);
                        settled.send_replace(true);
                        continue;
                    }
                    Some(403) => {
                        tracing::warn!(resource = %what, "{message}");
                        lock(&status.unavailable).insert(what.clone(), message.clone());
                        settled.send_replace(true);
                    }
                    Some(410) => tracing::info!(resource = %what, "{message}"),
                    _ => tracing::warn!(resource = %what, "{message}"),
                }
                *lock(&status.last_error) = Some(message);
            }
        }
    }
}

/// A parentRef that is a core Service (or a Weft Backend): a mesh parent.
pub(crate) fn is_mesh_parent(p: &Value) -> bool {
    let group = p["group"].as_str().unwrap_or(GATEWAY);
    let kind = p["kind"].as_str().unwrap_or("Gateway");
    (group.is_empty() && kind == "Service") || (group == WEFT && kind == "Backend")
}

/// The document the loader reads for `o`: `None` when it is not ours (a
/// route with no mesh parent).
pub(crate) fn document(
    kind: &Kind,
    o: &DynamicObject,
    grants: &[Arc<DynamicObject>],
) -> Result<Option<String>, Refusal> {
    let mut meta = Map::new();
    meta.insert("name".into(), json!(o.metadata.name));
    if let Some(ns) = &o.metadata.namespace {
        meta.insert("namespace".into(), json!(ns));
    }
    if let Some(l) = o.metadata.labels.as_ref().filter(|l| !l.is_empty()) {
        meta.insert("labels".into(), json!(l));
    }
    if let Some(a) = &o.metadata.annotations {
        let kept: BTreeMap<&String, &String> = a
            .iter()
            .filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/"))
            .collect();
        if !kept.is_empty() {
            meta.insert("annotations".into(), json!(kept));
        }
    }
    let mut spec = o.data.get("spec").cloned().unwrap_or_else(|| json!({}));
    if kind.route && !mesh_spec(kind, o, &mut spec, grants)? {
        return Ok(None);
    }
    let doc = json!({
        "apiVersion": format!("{}/{}", kind.group, kind.version),
        "kind": kind.kind,
        "metadata": meta,
        "spec": spec,
    });
    // JSON is YAML; pretty, so errors point at a line of their own.
    Ok(serde_json::to_string_pretty(&doc).ok())
}

/// Keeps a route's mesh parents and checks its backendRefs; `false` when
/// it has no mesh parent.
fn mesh_spec(
    route_kind: &Kind,
    o: &DynamicObject,
    spec: &mut Value,
    grants: &[Arc<DynamicObject>],
) -> Result<bool, Refusal> {
    let route_ns = o.metadata.namespace.as_deref().unwrap_or("default");
    let parents: Vec<Value> = spec["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_mesh_parent(p))
        .cloned()
        .collect();
    let Some(first) = parents.first().cloned() else {
        return Ok(false);
    };
    let parent_keys: Vec<(String, String)> = parents
        .iter()
        .map(|p| {
            let ns = p["namespace"].as_str().unwrap_or(route_ns).to_string();
            (ns, p["name"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    spec["parentRefs"] = Value::Array(parents);
    let rules = spec["rules"].as_array_mut().map(|r| r.iter_mut());
    for (ri, rule) in rules.into_iter().flatten().enumerate() {
        let redirect = rule["filters"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["type"] == "RequestRedirect"));
        let empty = rule["backendRefs"].as_array().is_none_or(Vec::is_empty);
        if empty && !redirect {
            let mut to = json!({"name": first["name"]});
            if let Some(ns) = first.get("namespace") {
                to["namespace"] = ns.clone();
            }
            if let Some(port) = first.get("port") {
                to["port"] = port.clone();
            }
            if first["kind"] == "Backend" {
                to["kind"] = json!("Backend");
            }
            rule["backendRefs"] = json!([to]);
            continue;
        }
        let refs = rule["backendRefs"].as_array().map(|r| r.iter());
        for (bi, b) in refs.into_iter().flatten().enumerate() {
            let path = format!("spec.rules[{ri}].backendRefs[{bi}]");
            let group = b["group"].as_str().unwrap_or("");
            let kind = b["kind"].as_str().unwrap_or("Service");
            let known =
                (group.is_empty() && kind == "Service") || (group == WEFT && kind == "Backend");
            if !known {
                return Err(Refusal {
                    reason: "InvalidKind",
                    path: format!("{path}.kind"),
                    message: format!(
                        "{kind:?} in group {group:?} is not a backend this mesh sends to (a core Service or a weft.dev Backend)"
                    ),
                });
            }
            let name = b["name"].as_str().unwrap_or_default();
            let ns = b["namespace"].as_str().unwrap_or(route_ns);
            let own_parent = parent_keys.iter().any(|(pn, n)| pn == ns && n == name);
            let to = (group, kind_of_ref(b), ns, name);
            if ns != route_ns && !own_parent && !granted(grants, (route_kind.kind, route_ns), to) {
                return Err(Refusal {
                    reason: "RefNotPermitted",
                    path: format!("{path}.namespace"),
                    message: format!(
                        "no ReferenceGrant in namespace {ns:?} lets {} in {route_ns:?} refer to {} {name:?}",
                        route_kind.kind,
                        kind_of_ref(b)
                    ),
                });
            }
        }
    }
    Ok(true)
}

fn kind_of_ref(b: &Value) -> &str {
    b["kind"].as_str().unwrap_or("Service")
}

/// Whether a ReferenceGrant in the target's namespace lets a `from`
/// (route kind, namespace) refer to `to` (group, kind, namespace, name).
fn granted(
    grants: &[Arc<DynamicObject>],
    from: (&str, &str),
    to: (&str, &str, &str, &str),
) -> bool {
    let (group, kind, ns, name) = to;
    grants
        .iter()
        .filter(|g| g.metadata.namespace.as_deref() == Some(ns))
        .any(|g| {
            let spec = &g.data["spec"];
            let list = |f: &str| spec[f].as_array().cloned().unwrap_or_default();
            let from_ok = list("from")
                .iter()
                .any(|f| f["group"] == GATEWAY && f["kind"] == from.0 && f["namespace"] == from.1);
            let to_ok = list("to").iter().any(|t| {
                t["group"].as_str().unwrap_or("") == group
                    && t["kind"] == kind
                    && t["name"].as_str().is_none_or(|n| n == name)
            });
            from_ok && to_ok
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(spec: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "web", "uid": "u", "resourceVersion": "7",
                "generation": 2, "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": spec,
            "status": {"parents": []}
        }))
        .unwrap()
    }

    #[test]
    fn a_mesh_route_keeps_its_service_parents_and_loses_server_fields() {
        let o = route(json!({
            "parentRefs": [
                {"group": "", "kind": "Service", "name": "reviews", "namespace": "shop", "port": 9080},
                {"group": GATEWAY, "kind": "Gateway", "name": "edge"}],
            "rules": [{"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": [{"name": "x", "value": "y"}]}}]}]
        }));
        let text = document(&KINDS[0], &o, &[]).unwrap().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["metadata"], json!({"name": "r", "namespace": "web"}));
        assert_eq!(v["spec"]["parentRefs"].as_array().unwrap().len(), 1);
        assert!(v.get("status").is_none());
        // No backendRefs: the parent Service itself.
        assert_eq!(
            v["spec"]["rules"][0]["backendRefs"],
            json!([{"name": "reviews", "namespace": "shop", "port": 9080}])
        );
    }

    #[test]
    fn gateway_routes_are_not_ours_and_foreign_backends_are_refused() {
        let gw = route(json!({"parentRefs": [{"name": "edge"}], "rules": []}));
        assert_eq!(document(&KINDS[0], &gw, &[]).unwrap(), None);
        let svc = json!({"group": "", "kind": "Service", "name": "reviews"});
        let foreign = route(json!({"parentRefs": [svc],
            "rules": [{"backendRefs": [{"name": "db", "namespace": "other"}]}]}));
        let r = document(&KINDS[0], &foreign, &[]).unwrap_err();
        assert_eq!(
            (r.reason, r.path.as_str()),
            ("RefNotPermitted", "spec.rules[0].backendRefs[0].namespace")
        );
        let odd = route(json!({"parentRefs": [svc],
            "rules": [{"backendRefs": [{"group": "example.com", "kind": "Bucket", "name": "b"}]}]}));
        assert_eq!(
            document(&KINDS[0], &odd, &[]).unwrap_err().reason,
            "InvalidKind"
        );
    }

    #[test]
    fn a_reference_grant_permits_a_foreign_backend() {
        let svc = json!({"group": "", "kind": "Service", "name": "reviews"});
        let foreign = route(json!({"parentRefs": [svc],
            "rules": [{"backendRefs": [{"group": "", "kind": "Service", "name": "db", "namespace": "data"}]}]}));
        let grant = |ns: &str, to_name: Value| -> Arc<DynamicObject> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                    "metadata": {"name": "g", "namespace": ns},
                    "spec": {"from": [{"group": GATEWAY, "kind": "HTTPRoute", "namespace": "web"}],
                             "to": [{"group": "", "kind": "Service", "name": to_name}]}
                }))
                .unwrap(),
            )
        };
        assert!(document(&KINDS[0], &foreign, &[grant("data", json!("db"))]).is_ok());
        assert!(document(&KINDS[0], &foreign, &[grant("data", Value::Null)]).is_ok());
        assert!(document(&KINDS[0], &foreign, &[grant("data", json!("other"))]).is_err());
        assert!(document(&KINDS[0], &foreign, &[grant("elsewhere", json!("db"))]).is_err());
    }
}
