//! The control plane's Deployment (`weft-control-plane`): every replica
//! it asks for is ready (`status.readyReplicas` = `spec.replicas`).

use super::cluster::{Cluster, Failure};
use super::report::Line;
use serde_json::Value;

const CHECK: &str = "deployment";
/// The Deployment (and ServiceAccount, Service) name.
pub(crate) const NAME: &str = "weft-control-plane";

pub(crate) async fn check(cluster: &Cluster) -> Line {
    let ns = &cluster.namespace;
    let what = format!("control plane Deployment {ns}/{NAME}");
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{NAME}");
    match cluster.get(&path).await {
        Ok(d) => judge(&what, ns, &d),
        Err(Failure::NotFound) => Line::fail(
            CHECK,
            what,
            "not found",
            format!("install Weft: helm install weft charts/weft -n {ns} --create-namespace (or pass --namespace where it is installed)"),
        ),
        Err(e) => Line::fail(CHECK, what, format!("cannot read it: {e}"), format!("run check as a user who may get deployments.apps in {ns}")),
    }
}

fn judge(what: &str, ns: &str, d: &Value) -> Line {
    // The API server defaults spec.replicas to 1.
    let want = d["spec"]["replicas"].as_u64().unwrap_or(1);
    let ready = d["status"]["readyReplicas"].as_u64().unwrap_or(0);
    let fix = format!(
        "see why: kubectl -n {ns} describe deployment {NAME}; kubectl -n {ns} logs deployment/{NAME}"
    );
    if want == 0 {
        Line::fail(
            CHECK,
            what,
            "scaled to 0 replicas",
            format!("kubectl -n {ns} scale deployment {NAME} --replicas=2"),
        )
    } else if ready == 0 {
        Line::fail(
            CHECK,
            what,
            format!("0/{want} replicas ready: the mesh has no control plane"),
            fix,
        )
    } else if ready < want {
        Line::fail(
            CHECK,
            what,
            format!("{ready}/{want} replicas ready: serving, without the redundancy asked for"),
            fix,
        )
    } else {
        Line::ok(CHECK, format!("{what} ready: {ready}/{want} replicas"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_replicas_are_compared_with_the_spec() {
        let d = |spec: Value, status: Value| {
            judge("D", "weft-system", &json!({"spec": spec, "status": status}))
        };
        assert_eq!(
            d(json!({"replicas": 2}), json!({"readyReplicas": 2})).text(),
            "✓ D ready: 2/2 replicas"
        );
        assert_eq!(
            d(json!({}), json!({"readyReplicas": 1})).text(),
            "✓ D ready: 1/1 replicas"
        );
        assert!(d(json!({"replicas": 2}), json!({}))
            .why
            .unwrap()
            .starts_with("0/2 replicas ready"));
        assert!(d(json!({"replicas": 2}), json!({"readyReplicas": 1}))
            .why
            .unwrap()
            .starts_with("1/2"));
        assert_eq!(
            d(json!({"replicas": 0}), json!({})).why.unwrap(),
            "scaled to 0 replicas"
        );
    }
}
