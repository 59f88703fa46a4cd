//! What differs by kind: the defaults the apiserver fills in on a write,
//! the validation whose failures a controller can meet, and small traits
//! (does the kind have `metadata.generation`, what does DELETE return, may
//! an update omit `resourceVersion`, what an empty BOOKMARK object carries).
//!
//! Only the kinds the recordings and the control plane touch are modelled
//! here (Namespace, Service, Endpoints, EndpointSlice, Pod, Lease); the
//! other built-in kinds a chart creates are in `builtin.rs`, custom
//! resources are checked against their CRD's schema (`schema.rs`).

use super::errors::{ApiError, Cause};
use super::util::is_micro_time;
use serde_json::{json, Value};
use std::net::IpAddr;

/// Kinds without `metadata.generation` (most core kinds without a spec).
const NO_GENERATION: &[&str] = &[
    "Service",
    "Namespace",
    "ServiceAccount",
    "Lease",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Event",
];

pub fn has_generation(kind: &str) -> bool {
    !NO_GENERATION.contains(&kind)
}

/// DELETE answers with the object for these kinds, with a `Status` otherwise.
pub fn delete_returns_object(kind: &str) -> bool {
    matches!(kind, "Service" | "Pod" | "Namespace")
}

/// Whether a PUT may leave out `metadata.resourceVersion` (custom resources
/// and Leases may not).
pub fn unconditional_update(kind: &str, custom: bool) -> bool {
    !custom && kind != "Lease"
}

/// A BOOKMARK's object besides kind, apiVersion and resourceVersion: built-in
/// kinds serialise their empty required fields.
pub fn bookmark_fields(kind: &str) -> Value {
    match kind {
        "EndpointSlice" => json!({"addressType": "", "endpoints": null, "ports": null}),
        "Service" => json!({"spec": {}, "status": {"loadBalancer": {}}}),
        "Pod" => json!({"spec": {"containers": null}, "status": {}}),
        "Namespace" | "Node" => json!({"spec": {}, "status": {}}),
        "Lease" => json!({"spec": {}}),
        "Endpoints" | "ConfigMap" | "Secret" | "ServiceAccount" => json!({}),
        _ => json!({}),
    }
}

/// Fills in what the apiserver defaults on create (and, for kinds whose
/// defaults depend on the spec, on update).
pub fn default(kind: &str, obj: &mut Value, cluster_ip: &mut dyn FnMut() -> Option<String>) {
    match kind {
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if obj["status"]["phase"].is_null() {
                obj["status"] = json!({"phase": "Active"});
            }
        }
        "Service" => default_service(obj, cluster_ip),
        "Secret" => {
            // stringData is write-only: it lands in data, base64-encoded.
            if let Some(Value::Object(plain)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                for (k, v) in plain {
                    let text = v.as_str().unwrap_or("").as_bytes().to_vec();
                    obj["data"][k.as_str()] = super::util::b64_std(&text).into();
                }
            }
            or_insert(obj, "type", "Opaque".into());
        }
        "Pod" => default_pod(obj),
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            each_at(obj, "webhooks", |w| {
                or_insert(w, "failurePolicy", "Fail".into());
                or_insert(w, "matchPolicy", "Equivalent".into());
                or_insert(w, "namespaceSelector", json!({}));
                or_insert(w, "objectSelector", json!({}));
                or_insert(w, "timeoutSeconds", 10.into());
                if kind == "MutatingWebhookConfiguration" {
                    or_insert(w, "reinvocationPolicy", "Never".into());
                }
                each_at(w, "rules", |r| or_insert(r, "scope", "*".into()));
            });
        }
        kind => super::builtin::default(kind, obj),
    }
}

fn or_insert(v: &mut Value, key: &str, default: Value) {
    if v.get(key).is_none_or(Value::is_null) {
        v[key] = default;
    }
}

fn each(v: &mut Value, f: impl FnMut(&mut Value)) {
    if let Some(a) = v.as_array_mut() {
        a.iter_mut().for_each(f);
    }
}

/// `each` on `v[key]`, without creating the key when it is absent (indexing
/// a JSON object mutably would insert a null).
fn each_at(v: &mut Value, key: &str, f: impl FnMut(&mut Value)) {
    if let Some(x) = v.get_mut(key) {
        each(x, f);
    }
}

fn default_service(obj: &mut Value, cluster_ip: &mut dyn FnMut() -> Option<String>) {
    let spec = &mut obj["spec"];
    or_insert(spec, "type", "ClusterIP".into());
    or_insert(spec, "sessionAffinity", "None".into());
    each_at(spec, "ports", |p| {
        or_insert(p, "protocol", "TCP".into());
        let port = p["port"].clone();
        or_insert(p, "targetPort", port);
    });
    if spec["type"] != "ExternalName" {
        if spec["clusterIP"].is_null() || spec["clusterIP"] == "" {
            if let Some(ip) = cluster_ip() {
                spec["clusterIP"] = ip.into();
            }
        }
        let ip = spec["clusterIP"].clone();
        or_insert(spec, "clusterIPs", json!([ip]));
        or_insert(spec, "ipFamilies", json!(["IPv4"]));
        or_insert(spec, "ipFamilyPolicy", "SingleStack".into());
        or_insert(spec, "internalTrafficPolicy", "Cluster".into());
    }
    obj["status"] = json!({"loadBalancer": {}});
}

pub fn default_container(c: &mut Value) {
    each_at(c, "ports", |p| or_insert(p, "protocol", "TCP".into()));
    or_insert(c, "resources", json!({}));
    each_at(c, "env", |e| {
        if e["valueFrom"]["fieldRef"].is_object() {
            or_insert(&mut e["valueFrom"]["fieldRef"], "apiVersion", "v1".into());
        }
    });
    or_insert(c, "terminationMessagePath", "/dev/termination-log".into());
    or_insert(c, "terminationMessagePolicy", "File".into());
    let image = c["image"].as_str().unwrap_or("");
    let tag = image.rsplit('/').next().unwrap_or("");
    let pull = if !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest")) {
        "Always"
    } else {
        "IfNotPresent"
    };
    or_insert(c, "imagePullPolicy", pull.into());
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let p = &mut c[probe];
        if p.is_object() {
            or_insert(p, "timeoutSeconds", 1.into());
            or_insert(p, "periodSeconds", 10.into());
            or_insert(p, "successThreshold", 1.into());
            or_insert(p, "failureThreshold", 3.into());
            if p["httpGet"].is_object() {
                or_insert(&mut p["httpGet"], "scheme", "HTTP".into());
            }
        } else if let Some(m) = c.as_object_mut() {
            if m.get(probe).is_some_and(Value::is_null) {
                m.remove(probe);
            }
        }
    }
}

fn default_pod(obj: &mut Value) {
    let spec = &mut obj["spec"];
    each_at(spec, "containers", default_container);
    each_at(spec, "initContainers", default_container);
    or_insert(spec, "restartPolicy", "Always".into());
    or_insert(spec, "terminationGracePeriodSeconds", 30.into());
    or_insert(spec, "dnsPolicy", "ClusterFirst".into());
    if let Some(sa) = spec["serviceAccountName"].as_str().map(str::to_string) {
        or_insert(spec, "serviceAccount", sa.into());
    }
    or_insert(spec, "securityContext", json!({}));
    or_insert(spec, "schedulerName", "default-scheduler".into());
    let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerations.iter().any(|t| t["key"] == key) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
    or_insert(spec, "priority", 0.into());
    or_insert(spec, "enableServiceLinks", true.into());
    or_insert(spec, "preemptionPolicy", "PreemptLowerPriority".into());
    each_at(spec, "volumes", |v| {
        for source in ["projected", "secret", "configMap"] {
            if v[source].is_object() {
                or_insert(&mut v[source], "defaultMode", 420.into());
            }
        }
        let Some(projected) = v.get_mut("projected") else {
            return;
        };
        each_at(projected, "sources", |s| {
            if s["serviceAccountToken"].is_object() {
                or_insert(
                    &mut s["serviceAccountToken"],
                    "expirationSeconds",
                    3600.into(),
                );
            }
        });
    });
    let requests = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["resources"].as_object().is_some_and(|r| !r.is_empty()));
    if obj["status"]["phase"].is_null() {
        obj["status"] = json!({
            "phase": "Pending",
            "qosClass": if requests { "Burstable" } else { "BestEffort" },
        });
    }
}

const RFC1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const RFC1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Why an endpoint address is refused, in the apiserver's words.
fn special_address(ip: IpAddr) -> Option<&'static str> {
    let v4 = match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(v) => v.to_ipv4_mapped(),
    };
    if ip.is_loopback() || v4.is_some_and(|v| v.is_loopback()) {
        return Some("may not be in the loopback range (127.0.0.0/8, ::1/128)");
    }
    if ip.is_unspecified() {
        return Some("may not be unspecified (0.0.0.0)");
    }
    let link_local = match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        return Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)");
    }
    let ll_multicast = match ip {
        IpAddr::V4(v) => v.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v) => v.segments()[0] == 0xff02,
    };
    if ll_multicast {
        return Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)");
    }
    None
}

fn check_ip(field: String, s: &str, causes: &mut Vec<Cause>) {
    match s.parse::<IpAddr>() {
        Ok(ip) => {
            if let Some(why) = special_address(ip) {
                causes.push(Cause::invalid(field, &format!("{s:?}"), why));
            }
        }
        Err(_) => causes.push(Cause::invalid(
            field,
            &format!("{s:?}"),
            "must be a valid IP address",
        )),
    }
}

/// The service CIDR the fake allocates ClusterIPs from (`10.0.0.0/24`, as
/// on the recording server).
/// Validation after defaulting; an `Err` is the 422 to send.
/// `in_service_range` tells whether an address is in the ClusterIP range.
pub fn validate(
    kind: &str,
    group: &str,
    custom: bool,
    obj: &Value,
    in_service_range: &dyn Fn(&str) -> bool,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut causes = Vec::new();
    let name_ok = match kind {
        "Service" | "Namespace" => is_label(name),
        _ => is_subdomain(name),
    };
    if !name_ok {
        let why = if matches!(kind, "Service" | "Namespace") {
            RFC1123_LABEL
        } else {
            RFC1123_SUBDOMAIN
        };
        causes.push(Cause::invalid("metadata.name", &format!("{name:?}"), why));
    }
    match kind {
        "Service" => {
            for (i, p) in obj["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let port = p["port"].as_i64().unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        &port.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
            for (i, ip) in obj["spec"]["externalIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                check_ip(
                    format!("spec.externalIPs[{i}]"),
                    ip.as_str().unwrap_or(""),
                    &mut causes,
                );
            }
            if let Some(ip) = obj["spec"]["clusterIP"].as_str() {
                if ip != "None" && !ip.is_empty() && !in_service_range(ip) && causes.is_empty() {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        &format!("[{ip:?}]"),
                        &format!("failed to allocate IP {ip}: the provided network does not match the current range"),
                    ));
                }
            }
        }
        "EndpointSlice" => {
            let at = obj["addressType"].as_str().unwrap_or("");
            if !matches!(at, "IPv4" | "IPv6" | "FQDN") {
                causes.push(Cause::not_supported(
                    "addressType",
                    at,
                    &["IPv4", "IPv6", "FQDN"],
                ));
            }
            for (i, e) in obj["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                for (j, a) in e["addresses"].as_array().into_iter().flatten().enumerate() {
                    let a = a.as_str().unwrap_or("");
                    let field = format!("endpoints[{i}].addresses[{j}]");
                    if at == "FQDN" {
                        if !a.contains('.') || !is_subdomain(a) {
                            causes.push(Cause::invalid(
                                field,
                                &format!("{a:?}"),
                                "should be a domain with at least two segments separated by dots",
                            ));
                        }
                    } else {
                        check_ip(field, a, &mut causes);
                    }
                }
            }
        }
        "Endpoints" => {
            for (i, s) in obj["subsets"].as_array().into_iter().flatten().enumerate() {
                for list in ["addresses", "notReadyAddresses"] {
                    for (j, a) in s[list].as_array().into_iter().flatten().enumerate() {
                        let ip = a["ip"].as_str().unwrap_or("");
                        check_ip(format!("subsets[{i}].{list}[{j}].ip"), ip, &mut causes);
                    }
                }
            }
        }
        "Pod" => validate_pod(obj, &mut causes),
        kind => super::builtin::validate(kind, obj, &mut causes),
    }
    if causes.is_empty() {
        return Ok(());
    }
    if custom {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            field: "<nil>".into(),
        });
    }
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    Err(ApiError::invalid(&qualified, group, kind, name, causes))
}

fn validate_pod(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    if spec["containers"].as_array().is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.containers"));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let name = c["name"].as_str().unwrap_or("");
            if !is_label(name) {
                causes.push(Cause::invalid(
                    format!("spec.{list}[{i}].name"),
                    &format!("{name:?}"),
                    RFC1123_LABEL,
                ));
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("spec.{list}[{i}].image")));
            }
            if let Some(rp) = c["restartPolicy"].as_str() {
                if !matches!(rp, "Always" | "Never" | "OnFailure") {
                    causes.push(Cause::not_supported(
                        format!("spec.{list}[{i}].restartPolicy"),
                        rp,
                        &["Always", "Never", "OnFailure"],
                    ));
                }
            }
        }
    }
}

/// Lease times are MicroTime; anything else fails to decode (400).
pub fn decode_check(kind: &str, obj: &Value) -> Result<(), ApiError> {
    super::builtin::decode_check(kind, obj)?;
    if kind != "Lease" {
        return Ok(());
    }
    for field in ["acquireTime", "renewTime"] {
        if let Some(t) = obj["spec"][field].as_str() {
            if !is_micro_time(t) {
                return Err(ApiError::bad_request(format!(
                    "Lease in version \"v1\" cannot be handled as a Lease: parsing time {t:?} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse {:?} as \".000000\"",
                    t.get(19..).unwrap_or("")
                )));
            }
        }
    }
    Ok(())
}
