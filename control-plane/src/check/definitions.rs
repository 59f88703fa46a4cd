//! CustomResourceDefinitions: Weft's four (`weft.dev/v1alpha1`, whose
//! schema must be the one this binary prints with `weft-control-plane
//! crds`: Helm never upgrades CRDs, so an old schema is the usual drift)
//! and the Gateway API ones the mesh reads (HTTPRoute and GRPCRoute `v1`,
//! ReferenceGrant `v1beta1`). Each must exist, be Established and serve
//! that version.

use super::cluster::{Cluster, Failure};
use super::report::Line;
use crate::crds;
use serde_json::Value;

const CHECK: &str = "crds";

/// The Gateway API CRDs, the version the mesh reads, and their kinds.
const GATEWAY: [(&str, &str, &str); 3] = [
    ("httproutes.gateway.networking.k8s.io", "v1", "HTTPRoute"),
    ("grpcroutes.gateway.networking.k8s.io", "v1", "GRPCRoute"),
    (
        "referencegrants.gateway.networking.k8s.io",
        "v1beta1",
        "ReferenceGrant",
    ),
];

/// How to install the Gateway API CRDs the chart ships.
const GATEWAY_FIX: &str = "install the Gateway API standard CRDs: helm upgrade weft charts/weft -n weft-system --set gatewayAPI.installCRDs=true, or kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml";
/// How to install (or upgrade) Weft's own CRDs.
const WEFT_FIX: &str =
    "weft-control-plane crds | kubectl apply --server-side -f - (helm upgrade does not update CRDs)";

/// One expected definition.
struct Expected {
    name: String,
    version: &'static str,
    /// Weft's own: the `openAPIV3Schema` it must serve.
    schema: Option<Value>,
}

fn expected() -> Vec<Expected> {
    let mut out: Vec<Expected> = crds::KINDS
        .iter()
        .map(|k| {
            let def = crds::definition(k);
            Expected {
                name: format!("{}.{}", k.plural, crds::GROUP),
                version: crds::VERSION,
                schema: Some(def["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()),
            }
        })
        .collect();
    out.extend(GATEWAY.iter().map(|(name, version, _)| Expected {
        name: name.to_string(),
        version,
        schema: None,
    }));
    out
}

/// One ✓ line when all are in place, else a ✗ line per definition.
pub(crate) async fn check(cluster: &Cluster) -> Vec<Line> {
    let mut failed = Vec::new();
    for e in expected() {
        let path = format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}",
            e.name
        );
        let fix = if e.schema.is_some() {
            WEFT_FIX
        } else {
            GATEWAY_FIX
        };
        let what = format!("CRD {}", e.name);
        match cluster.get(&path).await {
            Ok(crd) => {
                if let Some(why) = judge(&crd, &e) {
                    failed.push(Line::fail(CHECK, what, why, fix));
                }
            }
            Err(Failure::NotFound) => failed.push(Line::fail(CHECK, what, "not installed", fix)),
            Err(Failure::Forbidden(m)) => failed.push(Line::fail(
                CHECK,
                what,
                format!("cannot read it: {m}"),
                "run check as a user who may get customresourcedefinitions.apiextensions.k8s.io",
            )),
            Err(e) => failed.push(Line::fail(
                CHECK,
                what,
                format!("cannot read it: {e}"),
                "retry; check the API server",
            )),
        }
    }
    if failed.is_empty() {
        vec![Line::ok(
            CHECK,
            format!(
                "CRDs installed and established: {} {} (schema as this binary's), HTTPRoute and GRPCRoute v1, ReferenceGrant v1beta1",
                crds::KINDS.len(),
                crds::GROUP
            ),
        )]
    } else {
        failed
    }
}

/// Why `crd` is not what the mesh needs, if it is not.
fn judge(crd: &Value, e: &Expected) -> Option<String> {
    let established = crd["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Established");
    match established {
        Some(c) if c["status"] == "True" => {}
        Some(c) => {
            return Some(format!(
                "not Established ({}: {})",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ))
        }
        None => return Some("not Established (no condition yet)".into()),
    }
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let served: Vec<&str> = versions
        .iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| v["name"].as_str())
        .collect();
    let Some(version) = versions
        .iter()
        .find(|v| v["name"] == e.version && v["served"] == true)
    else {
        return Some(format!(
            "does not serve {} (serves: {})",
            e.version,
            if served.is_empty() {
                "none".to_string()
            } else {
                served.join(", ")
            }
        ));
    };
    let want = e.schema.as_ref()?;
    let have = &version["schema"]["openAPIV3Schema"];
    first_difference(want, have, "openAPIV3Schema").map(|at| {
        format!(
            "its {} schema differs from this weft-control-plane's at {at}",
            e.version
        )
    })
}

/// The first path (dotted) where `want` and `have` differ.
fn first_difference(want: &Value, have: &Value, at: &str) -> Option<String> {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, wv) in w {
                let here = format!("{at}.{k}");
                match h.get(k) {
                    Some(hv) => {
                        if let Some(d) = first_difference(wv, hv, &here) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{here} (missing)")),
                }
            }
            h.keys()
                .find(|k| !w.contains_key(*k))
                .map(|k| format!("{at}.{k} (not in this binary's)"))
        }
        (Value::Array(w), Value::Array(h)) if w.len() == h.len() => w
            .iter()
            .zip(h)
            .enumerate()
            .find_map(|(i, (wv, hv))| first_difference(wv, hv, &format!("{at}[{i}]"))),
        // The API server's JSON may write 2.0 as 2.
        (Value::Number(w), Value::Number(h)) if w.as_f64() == h.as_f64() => None,
        _ if want == have => None,
        _ => Some(at.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn installed(schema: Value) -> Value {
        json!({"spec": {"versions": [
                {"name": "v1alpha1", "served": true, "schema": {"openAPIV3Schema": schema}}]},
               "status": {"conditions": [{"type": "Established", "status": "True"}]}})
    }

    #[test]
    fn the_rendered_definitions_pass_and_drift_is_located() {
        let all = expected();
        assert_eq!(all.len(), 7);
        let backend = &all[0];
        assert_eq!(backend.name, "backends.weft.dev");
        let schema = backend.schema.clone().unwrap();
        assert_eq!(judge(&installed(schema.clone()), backend), None);

        let mut old = schema.clone();
        old["properties"]["spec"]["properties"]
            .as_object_mut()
            .unwrap()
            .remove("port");
        assert_eq!(
            judge(&installed(old), backend).unwrap(),
            "its v1alpha1 schema differs from this weft-control-plane's at openAPIV3Schema.properties.spec.properties.port (missing)"
        );
        let mut pending = installed(schema.clone());
        pending["status"]["conditions"][0] = json!({"type": "Established", "status": "False", "reason": "Installing", "message": "wait"});
        assert_eq!(
            judge(&pending, backend).unwrap(),
            "not Established (Installing: wait)"
        );
        let mut other = installed(schema);
        other["spec"]["versions"][0]["name"] = "v1beta1".into();
        assert_eq!(
            judge(&other, backend).unwrap(),
            "does not serve v1alpha1 (serves: v1beta1)"
        );
        assert_eq!(
            first_difference(&json!({"m": 2.0}), &json!({"m": 2}), "s"),
            None
        );
        assert_eq!(
            first_difference(&json!({"m": [1]}), &json!({"m": [1, 2]}), "s").unwrap(),
            "s.m"
        );
    }
}
