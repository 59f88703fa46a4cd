//! Defaults and validation of the built-in kinds a Helm chart creates that
//! `kinds.rs` does not model (Deployment, PodDisruptionBudget, ConfigMap,
//! RBAC, CustomResourceDefinition, ...): enough that the obvious mistakes
//! are refused with the apiserver's field paths.

use super::errors::Cause;
use serde_json::Value;

/// Fills in the apiserver's defaults for `kind`.
pub fn default(kind: &str, obj: &mut Value) {
    if kind == "CustomResourceDefinition" {
        super::crds::default(obj)
    }
}

/// Adds the reasons the apiserver would refuse `obj`.
pub fn validate(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    if kind == "CustomResourceDefinition" {
        super::crds::validate(obj, causes)
    }
}
