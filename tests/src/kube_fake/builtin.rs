//! Defaults and validation of the built-in kinds a Helm chart creates that
//! `kinds.rs` does not model: Deployment, PodDisruptionBudget, ConfigMap,
//! Secret, the RBAC kinds, MutatingWebhookConfiguration (validation; its
//! defaults are in `kinds.rs`, its validation in `webhook_config.rs`) and
//! CustomResourceDefinition (`crds.rs`).
//! Enough that the obvious mistakes are refused with the apiserver's field
//! paths and messages; not the apiserver's whole validation.

use super::admission::selector_matches;
use super::errors::{ApiError, Cause};
use serde_json::{json, Value};

/// Fills in the apiserver's defaults for `kind`.
pub fn default(kind: &str, obj: &mut Value) {
    match kind {
        "CustomResourceDefinition" => super::crds::default(obj),
        "Deployment" => default_deployment(obj),
        "PodDisruptionBudget" if obj["status"].is_null() => {
            obj["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0,
                                   "desiredHealthy": 0, "expectedPods": 0});
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    // A ServiceAccount's "" is left out, as the
                    // apiserver omits the empty string.
                    if s.is_object()
                        && s.get("apiGroup").is_none_or(Value::is_null)
                        && s["kind"] != "ServiceAccount"
                    {
                        s["apiGroup"] = "rbac.authorization.k8s.io".into();
                    }
                }
            }
        }
        _ => {}
    }
}

fn or_insert(v: &mut Value, key: &str, default: Value) {
    if v.is_object() && v.get(key).is_none_or(Value::is_null) {
        v[key] = default;
    }
}

fn default_deployment(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    or_insert(spec, "replicas", 1.into());
    or_insert(spec, "revisionHistoryLimit", 10.into());
    or_insert(spec, "progressDeadlineSeconds", 600.into());
    or_insert(spec, "strategy", json!({}));
    if let Some(strategy) = spec.get_mut("strategy").filter(|s| s.is_object()) {
        or_insert(strategy, "type", "RollingUpdate".into());
        if strategy["type"] == "RollingUpdate" {
            or_insert(strategy, "rollingUpdate", json!({}));
            if let Some(ru) = strategy.get_mut("rollingUpdate") {
                or_insert(ru, "maxUnavailable", "25%".into());
                or_insert(ru, "maxSurge", "25%".into());
            }
        }
    }
    if let Some(pod) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .filter(|s| s.is_object())
    {
        for list in ["containers", "initContainers"] {
            if let Some(cs) = pod.get_mut(list).and_then(Value::as_array_mut) {
                cs.iter_mut()
                    .filter(|c| c.is_object())
                    .for_each(super::kinds::default_container);
            }
        }
        or_insert(pod, "restartPolicy", "Always".into());
        or_insert(pod, "terminationGracePeriodSeconds", 30.into());
        or_insert(pod, "dnsPolicy", "ClusterFirst".into());
        or_insert(pod, "securityContext", json!({}));
        or_insert(pod, "schedulerName", "default-scheduler".into());
        if let Some(sa) = pod["serviceAccountName"].as_str().map(str::to_string) {
            or_insert(pod, "serviceAccount", sa.into());
        }
    }
    or_insert(obj, "status", json!({}));
}

/// What fails to decode (a 400 before any validation).
pub fn decode_check(kind: &str, obj: &Value) -> Result<(), ApiError> {
    if kind != "Secret" {
        return Ok(());
    }
    for (_, v) in obj["data"].as_object().into_iter().flatten() {
        let text = v.as_str().unwrap_or("");
        if super::util::b64_decode(text).is_err() {
            let at = text
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            return Err(ApiError::bad_request(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte {at}"
            )));
        }
    }
    Ok(())
}

/// Adds the reasons the apiserver would refuse `obj`.
pub fn validate(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    match kind {
        "CustomResourceDefinition" => super::crds::validate(obj, causes),
        "Deployment" => validate_deployment(obj, causes),
        "PodDisruptionBudget" => validate_pdb(obj, causes),
        "ConfigMap" | "Secret" => validate_data(kind, obj, causes),
        "Role" | "ClusterRole" => {
            for (i, r) in items(&obj["rules"]).enumerate() {
                validate_rule(r, &format!("rules[{i}]"), kind == "Role", causes);
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => validate_binding(kind, obj, causes),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            super::webhook_config::validate(obj, causes)
        }
        _ => {}
    }
}

pub fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub fn detail(reason: &'static str, field: impl Into<String>, message: String) -> Cause {
    Cause {
        reason,
        message,
        field: field.into(),
    }
}

pub fn required(field: impl Into<String>, why: &str) -> Cause {
    detail(
        "FieldValueRequired",
        field,
        format!("Required value: {why}"),
    )
}

fn is_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && super::kinds::is_subdomain(s) && !s.contains('.')
}

/// A LabelSelector's operators and values.
pub fn validate_selector(sel: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (i, e) in items(&sel["matchExpressions"]).enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        let op = e["operator"].as_str().unwrap_or("");
        let n = e["values"].as_array().map_or(0, Vec::len);
        match op {
            "In" | "NotIn" if n == 0 => causes.push(required(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => causes.push(Cause {
                reason: "FieldValueForbidden",
                message:
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                        .into(),
                field: format!("{at}.values"),
            }),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => causes.push(Cause::not_supported(
                format!("{at}.operator"),
                op,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            )),
        }
    }
}

fn validate_containers(pod: &Value, path: &str, causes: &mut Vec<Cause>) {
    if pod["containers"].as_array().is_none_or(Vec::is_empty) {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in items(&pod[list]).enumerate() {
            let at = format!("{path}.{list}[{i}]");
            let name = c["name"].as_str().unwrap_or("");
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.name")));
            } else if !is_label(name) {
                causes.push(Cause::invalid(
                    format!("{at}.name"),
                    &format!("{name:?}"),
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                ));
            } else if names.contains(&name) {
                causes.push(detail(
                    "FieldValueDuplicate",
                    format!("{at}.name"),
                    format!("Duplicate value: {name:?}"),
                ));
            }
            names.push(name);
            if c["image"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("{at}.image")));
            }
            for (j, p) in items(&c["ports"]).enumerate() {
                let port = p["containerPort"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                if let Some(n) = p["name"].as_str().filter(|n| n.len() > 15) {
                    causes.push(Cause::invalid(
                        format!("{at}.ports[{j}].name"),
                        &format!("{n:?}"),
                        "must be no more than 15 characters",
                    ));
                }
            }
        }
    }
}

fn validate_deployment(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if let Some(n) = spec["replicas"].as_i64().filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            "spec.replicas",
            &n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let sel = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if !sel.is_object() {
        causes.push(Cause::required("spec.selector"));
    } else if sel.as_object().is_some_and(|m| {
        m.values().all(|v| {
            v.as_object().is_none_or(|o| o.is_empty()) && v.as_array().is_none_or(Vec::is_empty)
        })
    }) {
        causes.push(Cause::invalid(
            "spec.selector",
            &sel.to_string(),
            "empty selector is invalid for deployment",
        ));
    } else {
        validate_selector(sel, "spec.selector", causes);
        if !selector_matches(sel, labels) {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                &labels.to_string(),
                "`selector` does not match template `labels`",
            ));
        }
    }
    let pod = &spec["template"]["spec"];
    validate_containers(pod, "spec.template.spec", causes);
    if let Some(rp) = pod["restartPolicy"].as_str().filter(|p| *p != "Always") {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            rp,
            &["Always"],
        ));
    }
    if let Some(t) = spec["strategy"]["type"].as_str() {
        if !matches!(t, "Recreate" | "RollingUpdate") {
            causes.push(Cause::not_supported(
                "spec.strategy.type",
                t,
                &["Recreate", "RollingUpdate"],
            ));
        }
    }
}

/// An IntOrString that must be a count or a percentage.
fn validate_int_or_percent(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.as_i64() {
        if n < 0 {
            causes.push(Cause::invalid(
                path,
                &n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    } else if let Some(s) = v.as_str() {
        let digits = s
            .strip_suffix('%')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
        match digits.map(|d| d.parse::<u64>()) {
            Some(Ok(p)) if p > 100 => causes.push(Cause::invalid(path, &format!("{s:?}"), "must not be greater than 100%")),
            Some(Ok(_)) => {}
            _ => causes.push(Cause::invalid(
                path,
                &format!("{s:?}"),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        }
    } else if !v.is_null() {
        causes.push(Cause::invalid(
            path,
            &v.to_string(),
            "must be an integer or percentage",
        ));
    }
}

fn validate_pdb(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let (min, max) = (&spec["minAvailable"], &spec["maxUnavailable"]);
    if !min.is_null() && !max.is_null() {
        causes.push(Cause::invalid(
            "spec",
            &spec.to_string(),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    validate_int_or_percent(min, "spec.minAvailable", causes);
    validate_int_or_percent(max, "spec.maxUnavailable", causes);
    if spec["selector"].is_object() {
        validate_selector(&spec["selector"], "spec.selector", causes);
    }
    if let Some(p) = spec["unhealthyPodEvictionPolicy"].as_str() {
        if !matches!(p, "IfHealthyBudget" | "AlwaysAllow") {
            causes.push(Cause::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
}

const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// ConfigMap and Secret keys, the 1 MiB limit, the typed Secrets' keys.
fn validate_data(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    let lists: &[&str] = if kind == "Secret" {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    let mut seen = Vec::new();
    for list in lists {
        for (k, v) in obj[*list].as_object().into_iter().flatten() {
            let ok = !k.is_empty()
                && k.len() <= 253
                && k != "."
                && k != ".."
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                causes.push(Cause::invalid(
                    format!("{list}[{k}]"),
                    &format!("{k:?}"),
                    CONFIG_KEY,
                ));
            }
            if seen.contains(&k) {
                causes.push(detail(
                    "FieldValueDuplicate",
                    format!("{list}[{k}]"),
                    format!("Duplicate value: {k:?}: duplicate of key present in data"),
                ));
            }
            seen.push(k);
            total += v.as_str().map_or(0, str::len);
        }
    }
    if total > 1024 * 1024 {
        causes.push(detail(
            "FieldValueTooLong",
            "",
            "Too long: may not be more than 1048576 bytes".into(),
        ));
    }
    if kind == "Secret" {
        let need: &[&str] = match obj["type"].as_str() {
            Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
            Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
            _ => &[],
        };
        for k in need {
            if obj["data"].get(*k).is_none() {
                causes.push(Cause::required(format!("data[{k}]")));
            }
        }
    }
}

fn validate_rule(r: &Value, path: &str, namespaced: bool, causes: &mut Vec<Cause>) {
    let len = |k: &str| r[k].as_array().map_or(0, Vec::len);
    if len("verbs") == 0 {
        causes.push(required(
            format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if len("nonResourceURLs") > 0 {
        if namespaced {
            causes.push(Cause::invalid(
                format!("{path}.nonResourceURLs"),
                &r["nonResourceURLs"].to_string(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if len("apiGroups") + len("resources") + len("resourceNames") > 0 {
            causes.push(Cause::invalid(
                format!("{path}.nonResourceURLs"),
                &r["nonResourceURLs"].to_string(),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if len("apiGroups") == 0 {
        causes.push(required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if len("resources") == 0 {
        causes.push(required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

fn validate_binding(kind: &str, obj: &Value, causes: &mut Vec<Cause>) {
    const RBAC: &str = "rbac.authorization.k8s.io";
    let role = &obj["roleRef"];
    if !role.is_object() {
        causes.push(Cause::required("roleRef"));
    } else {
        let g = role["apiGroup"].as_str().unwrap_or("");
        if g != RBAC {
            causes.push(Cause::not_supported("roleRef.apiGroup", g, &[RBAC]));
        }
        let k = role["kind"].as_str().unwrap_or("");
        let kinds: &[&str] = if kind == "RoleBinding" {
            &["Role", "ClusterRole"]
        } else {
            &["ClusterRole"]
        };
        if !kinds.contains(&k) {
            causes.push(Cause::not_supported("roleRef.kind", k, kinds));
        }
        if role["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required("roleRef.name"));
        }
    }
    for (i, s) in items(&obj["subjects"]).enumerate() {
        let at = format!("subjects[{i}]");
        let name = s["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        let group = s["apiGroup"].as_str().unwrap_or("");
        match s["kind"].as_str().unwrap_or("") {
            "ServiceAccount" => {
                if !group.is_empty() {
                    causes.push(Cause::not_supported(format!("{at}.apiGroup"), group, &[""]));
                }
                if !name.is_empty() && !super::kinds::is_subdomain(name) {
                    causes.push(Cause::invalid(
                        format!("{at}.name"),
                        &format!("{name:?}"),
                        super::kinds::RFC1123_SUBDOMAIN,
                    ));
                }
                if kind == "ClusterRoleBinding" && s["namespace"].as_str().is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{at}.namespace")));
                }
            }
            "User" | "Group" => {
                if group != RBAC {
                    causes.push(Cause::not_supported(
                        format!("{at}.apiGroup"),
                        group,
                        &[RBAC],
                    ));
                }
            }
            other => causes.push(Cause::not_supported(
                format!("{at}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}
