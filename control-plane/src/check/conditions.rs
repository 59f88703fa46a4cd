//! Resources the mesh refused or cannot resolve, from the status the
//! control plane writes: HTTPRoutes and GRPCRoutes whose `status.parents[]`
//! entry of controller `weft.dev/mesh` has Accepted or ResolvedRefs False,
//! and Weft resources with Ready False. Each names namespace/name, the
//! reason and the message.

use super::cluster::{ns_name, Cluster, Failure};
use super::report::Line;
use crate::crds;
use serde_json::Value;

const CHECK: &str = "conditions";
/// The route status `controllerName` (CONTRACT).
pub(crate) const CONTROLLER: &str = "weft.dev/mesh";

/// The condition types of a route's parent status that mean it works.
const ROUTE_CONDITIONS: [&str; 2] = ["Accepted", "ResolvedRefs"];

fn failing<'a>(conditions: &'a Value, types: &[&str]) -> Vec<&'a Value> {
    conditions
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["status"] == "False" && c["type"].as_str().is_some_and(|t| types.contains(&t))
        })
        .collect()
}

/// A fix for a failing route condition, by its reason.
fn route_fix(kind: &str, obj: &Value, reason: &str) -> String {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    let lower = kind.to_ascii_lowercase();
    match reason {
        "BackendNotFound" => format!("create the Service its backendRefs name, or correct them: kubectl -n {ns} edit {lower} {name}"),
        "RefNotPermitted" => format!("add a ReferenceGrant in the backend's namespace allowing {kind}s from {ns}, or move the route"),
        "NoMatchingParent" => format!("point parentRefs at an existing Service (and port): kubectl -n {ns} edit {lower} {name}"),
        _ => format!("correct the route: kubectl -n {ns} describe {lower} {name}"),
    }
}

/// The failing conditions of one route, as lines.
fn route_lines(kind: &str, route: &Value) -> Vec<Line> {
    let mut out = Vec::new();
    for parent in route["status"]["parents"].as_array().into_iter().flatten() {
        if parent["controllerName"] != CONTROLLER {
            continue;
        }
        for c in failing(&parent["conditions"], &ROUTE_CONDITIONS) {
            let reason = c["reason"].as_str().unwrap_or("");
            out.push(Line::fail(
                CHECK,
                format!("{kind} {}", ns_name(route)),
                format!(
                    "{} False ({reason}): {}",
                    c["type"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                ),
                route_fix(kind, route, reason),
            ));
        }
    }
    out
}

/// The failing Ready condition of one Weft resource, as a line.
fn weft_lines(kind: &str, obj: &Value) -> Vec<Line> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    failing(&obj["status"]["conditions"], &["Ready"])
        .into_iter()
        .map(|c| {
            Line::fail(
                CHECK,
                format!("{kind} {}", ns_name(obj)),
                format!(
                    "Ready False ({}): {}",
                    c["reason"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                ),
                format!(
                    "correct it: kubectl -n {ns} edit {} {name}",
                    kind.to_ascii_lowercase()
                ),
            )
        })
        .collect()
}

/// Turns one listed object into its lines.
type Judge = fn(&str, &Value) -> Vec<Line>;

pub(crate) async fn check(cluster: &Cluster) -> Vec<Line> {
    let mut lists: Vec<(&str, String, Judge)> = vec![
        (
            "HTTPRoute",
            "/apis/gateway.networking.k8s.io/v1/httproutes".into(),
            route_lines,
        ),
        (
            "GRPCRoute",
            "/apis/gateway.networking.k8s.io/v1/grpcroutes".into(),
            route_lines,
        ),
    ];
    for k in &crds::KINDS {
        lists.push((
            k.kind,
            format!("/apis/{}/{}/{}", crds::GROUP, crds::VERSION, k.plural),
            weft_lines,
        ));
    }
    let mut lines = Vec::new();
    let mut checked = 0;
    for (kind, path, judge) in lists {
        match cluster.list(&path).await {
            Ok(items) => {
                checked += items.len();
                for item in &items {
                    lines.extend(judge(kind, item));
                }
            }
            // Not installed: the CRD check says so.
            Err(Failure::NotFound) => {}
            Err(e) => lines.push(Line::fail(
                CHECK,
                format!("{kind}s"),
                format!("cannot list them: {e}"),
                format!("run check as a user who may list {kind}s in every namespace"),
            )),
        }
    }
    if lines.is_empty() {
        lines.push(Line::ok(
            CHECK,
            format!("no route or Weft resource with a failing condition ({checked} checked)"),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_mesh_parents_false_conditions_are_reported() {
        let route = json!({"metadata": {"namespace": "shop", "name": "reviews"},
            "status": {"parents": [
                {"controllerName": "example.com/gateway",
                 "conditions": [{"type": "Accepted", "status": "False", "reason": "X", "message": "other"}]},
                {"controllerName": CONTROLLER, "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "accepted"},
                    {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound",
                     "message": "Service shop/nope not found"}]}]}});
        let lines = route_lines("HTTPRoute", &route);
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].text(),
            "✗ HTTPRoute shop/reviews: ResolvedRefs False (BackendNotFound): Service shop/nope not found — fix: create the Service its backendRefs name, or correct them: kubectl -n shop edit httproute reviews"
        );
        let policy = json!({"metadata": {"namespace": "shop", "name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Invalid", "message": "m"}]}});
        assert_eq!(
            weft_lines("TrafficPolicy", &policy)[0].why.as_deref(),
            Some("Ready False (Invalid): m")
        );
    }
}
