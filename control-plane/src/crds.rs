//! `weft-control-plane crds`: Weft's four CustomResourceDefinitions
//! (`weft.dev/v1alpha1`), their OpenAPI schemas derived from the very types
//! the file loader reads, so a field exists in files and in a cluster alike.
//!
//! The output is committed at `charts/weft/crds/weft.dev.yaml`; a test
//! fails when it differs from what this prints.

use serde_json::{json, Value};
use weft_mesh::config::schema::structural;
use weft_mesh::config::{AuthorizationPolicySpec, BackendSpec, MeshConfigSpec, TrafficPolicySpec};

/// The API group and version of every Weft resource.
pub(crate) const GROUP: &str = "weft.dev";
pub(crate) const VERSION: &str = "v1alpha1";

/// One Weft kind: its names and what it is for.
pub(crate) struct Kind {
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) description: &'static str,
    pub(crate) spec: fn() -> Value,
}

/// The four kinds, in the order they are printed.
pub(crate) const KINDS: [Kind; 4] = [
    Kind {
        kind: "Backend",
        plural: "backends",
        description: "Where a service's endpoints come from: a static list or a DNS name. In a cluster a core Service with its EndpointSlices plays the same part.",
        spec: structural::<BackendSpec>,
    },
    Kind {
        kind: "TrafficPolicy",
        plural: "trafficpolicies",
        description: "How the proxy treats one destination (spec.targetRef): load balancing, timeouts, retries, circuit breaking, outlier detection, health checks, TLS and connection reuse.",
        spec: structural::<TrafficPolicySpec>,
    },
    Kind {
        kind: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        description: "Inbound access control by peer identity for one service (spec.targetRef). Deny rules win; once an Allow policy selects a service, requests no rule allows are denied.",
        spec: structural::<AuthorizationPolicySpec>,
    },
    Kind {
        kind: "MeshConfig",
        plural: "meshconfigs",
        description: "Mesh-wide settings read by the control plane: trust domain, certificate lifetime and rotation, default inbound mode, tracing and access logs.",
        spec: structural::<MeshConfigSpec>,
    },
];

/// The CustomResourceDefinition of one kind.
pub(crate) fn definition(k: &Kind) -> Value {
    let singular = k.kind.to_ascii_lowercase();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{GROUP}", k.plural),
            "labels": {"app.kubernetes.io/part-of": "weft"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": k.kind,
                "listKind": format!("{}List", k.kind),
                "plural": k.plural,
                "singular": singular,
                "categories": ["weft"],
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "description": k.description,
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": (k.spec)(),
                        "status": {
                            "description": "Written by the control plane.",
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        },
                    },
                }},
            }],
        },
    })
}

/// The command that prints [`render`]'s text.
pub(crate) const REGENERATE: &str =
    "cargo run -p weft-control-plane -- crds > charts/weft/crds/weft.dev.yaml";

/// The four definitions as one YAML stream, with a header saying where it
/// comes from.
pub(crate) fn render() -> Result<String, String> {
    let mut out = format!(
        "# Weft's CustomResourceDefinitions ({GROUP}/{VERSION}), printed by\n# `weft-control-plane crds` from the resource types. Do not edit; regenerate:\n#   {REGENERATE}\n"
    );
    for k in &KINDS {
        let yaml = serde_saphyr::to_string(&definition(k))
            .map_err(|e| format!("{}: rendering YAML: {e}", k.kind))?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
