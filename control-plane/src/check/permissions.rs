//! The control plane's ServiceAccount holds every permission of its one
//! RBAC definition (`charts/weft/files/rbac.yaml`, read at build time):
//! a SubjectAccessReview per rule × API group × resource × verb (× name),
//! cluster-wide for the `cluster` rules and in the control plane's
//! namespace for the `namespace` ones. Each refusal is named.

use super::cluster::{Cluster, Failure};
use super::report::Line;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

const CHECK: &str = "rbac";
/// The one definition of the control plane's permissions.
const RBAC: &str = include_str!("../../../charts/weft/files/rbac.yaml");
/// Reviews in flight at once.
const PARALLEL: usize = 8;

/// One permission to ask about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    pub(crate) verb: String,
    pub(crate) group: String,
    /// `plural` or `plural/subresource`.
    pub(crate) resource: String,
    pub(crate) name: Option<String>,
    /// None: cluster-wide.
    pub(crate) namespace: Option<String>,
}

impl Permission {
    /// As people read it: `patch mutatingwebhookconfigurations.admissionregistration.k8s.io/weft-sidecar-injector`,
    /// `get secrets in weft-system`.
    pub(crate) fn text(&self) -> String {
        let (plural, sub) = match self.resource.split_once('/') {
            Some((p, s)) => (p, Some(s)),
            None => (self.resource.as_str(), None),
        };
        let mut out = format!("{} {plural}", self.verb);
        if !self.group.is_empty() {
            out.push('.');
            out.push_str(&self.group);
        }
        if let Some(n) = &self.name {
            out.push('/');
            out.push_str(n);
        }
        if let Some(s) = sub {
            out.push('/');
            out.push_str(s);
        }
        if let Some(ns) = &self.namespace {
            out.push_str(" in ");
            out.push_str(ns);
        }
        out
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Every permission of the definition, for the control plane in `namespace`.
pub(crate) fn permissions(namespace: &str) -> Result<Vec<Permission>, String> {
    let rules: Value =
        serde_saphyr::from_str(RBAC).map_err(|e| format!("charts/weft/files/rbac.yaml: {e}"))?;
    let mut out = Vec::new();
    for (scope, ns) in [
        ("cluster", None),
        ("namespace", Some(namespace.to_string())),
    ] {
        for rule in rules[scope].as_array().into_iter().flatten() {
            let names = strings(&rule["resourceNames"]);
            let names: Vec<Option<String>> = if names.is_empty() {
                vec![None]
            } else {
                names.into_iter().map(Some).collect()
            };
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        for name in &names {
                            out.push(Permission {
                                verb: verb.clone(),
                                group: group.clone(),
                                resource: resource.clone(),
                                name: name.clone(),
                                namespace: ns.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The SubjectAccessReview for `p` by the ServiceAccount `ns/sa`.
fn review(p: &Permission, ns: &str, sa: &str) -> Value {
    let (resource, sub) = match p.resource.split_once('/') {
        Some((r, s)) => (r, s),
        None => (p.resource.as_str(), ""),
    };
    let mut attrs = json!({"verb": p.verb, "group": p.group, "resource": resource});
    if !sub.is_empty() {
        attrs["subresource"] = sub.into();
    }
    if let Some(n) = &p.name {
        attrs["name"] = n.as_str().into();
    }
    if let Some(n) = &p.namespace {
        attrs["namespace"] = n.as_str().into();
    }
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": format!("system:serviceaccount:{ns}:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
            "resourceAttributes": attrs,
        },
    })
}

pub(crate) async fn check(cluster: &Cluster) -> Line {
    let ns = cluster.namespace.as_str();
    let sa = super::deployment::NAME;
    let what = format!("ServiceAccount {ns}/{sa} permissions");
    let all = match permissions(ns) {
        Ok(p) => p,
        Err(e) => {
            return Line::fail(
                CHECK,
                what,
                e,
                "report this: the binary carries a broken RBAC definition",
            )
        }
    };
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let answers: Vec<(Permission, Result<Value, Failure>)> = stream::iter(all.iter().cloned())
        .map(|p| async move {
            let r = cluster.post(path, &review(&p, ns, sa)).await;
            (p, r)
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    let mut missing = Vec::new();
    for (p, answer) in answers {
        match answer {
            Ok(a) if a["status"]["allowed"] == true => {}
            Ok(_) => missing.push(p.text()),
            Err(Failure::Forbidden(m)) => {
                return Line::fail(
                    CHECK,
                    what,
                    format!("cannot ask the API server: {m}"),
                    "run check as a user who may create subjectaccessreviews.authorization.k8s.io (e.g. a cluster admin)",
                )
            }
            Err(e) => return Line::fail(CHECK, what, format!("SubjectAccessReview failed: {e}"), "retry; check the API server"),
        }
    }
    if missing.is_empty() {
        Line::ok(
            CHECK,
            format!(
                "{what}: all {} of its RBAC rules' permissions granted",
                all.len()
            ),
        )
    } else {
        Line::fail(
            CHECK,
            what,
            format!(
                "{} of {} missing: {}",
                missing.len(),
                all.len(),
                missing.join(", ")
            ),
            format!(
                "restore the chart's ClusterRole and Role: helm upgrade weft charts/weft -n {ns}"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_expands_to_named_permissions() {
        let all = permissions("weft-system").unwrap();
        let text: Vec<String> = all.iter().map(Permission::text).collect();
        for want in [
            "list services",
            "create tokenreviews.authentication.k8s.io",
            "patch httproutes.gateway.networking.k8s.io/status",
            "patch mutatingwebhookconfigurations.admissionregistration.k8s.io/weft-sidecar-injector",
            "get secrets in weft-system",
            "update leases.coordination.k8s.io in weft-system",
        ] {
            assert!(text.iter().any(|t| t == want), "{want} in {text:?}");
        }
        let status = all
            .iter()
            .find(|p| p.resource == "httproutes/status")
            .unwrap();
        let r = review(status, "weft-system", "weft-control-plane");
        assert_eq!(r["spec"]["resourceAttributes"]["resource"], "httproutes");
        assert_eq!(r["spec"]["resourceAttributes"]["subresource"], "status");
        assert_eq!(
            r["spec"]["user"],
            "system:serviceaccount:weft-system:weft-control-plane"
        );
    }
}
