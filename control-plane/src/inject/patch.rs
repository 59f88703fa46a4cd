//! What injection adds to one Pod, as JSON Patch operations (RFC 6902)
//! against the Pod the AdmissionReview carries: the decision (inject,
//! skip, or deny with a message) and the patch, nothing else, so that the
//! golden tests cover all of it.
//!
//! Added: init container `weft-init` (`weft-proxy iptables`, NET_ADMIN and
//! NET_RAW only) first, the proxy `weft-proxy` second as a native sidecar
//! (`restartPolicy: Always`, a startup probe, so the app starts once the
//! proxy is ready and the proxy stops after it), then the Pod's own init
//! containers; the projected token volume `weft-token` (audience `weft`);
//! an in-memory `weft-run` volume at `/run` of `weft-init` (iptables-legacy
//! takes its lock in `/run/xtables.lock`, and the root filesystem is
//! read-only); the probe rewrite ([`super::probes`]); annotation `weft.dev/injected`
//! recording what was added. A parent that does not exist yet
//! (`initContainers`, `volumes`, `annotations`) is created whole, as JSON
//! Patch cannot add into a missing array or object.

use super::probes::{self, PROBE_PORT};
use super::quantity;
use super::settings::Settings;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Annotation recording what was injected (and marking the Pod as done).
pub(crate) const INJECTED: &str = "weft.dev/injected";
/// Pod label that opts a Pod in or (`disabled`) out.
pub(crate) const INJECT_LABEL: &str = "weft.dev/inject";
const SKIP_INBOUND_PORTS: &str = "weft.dev/skip-inbound-ports";
const SKIP_OUTBOUND_PORTS: &str = "weft.dev/skip-outbound-ports";
const SKIP_OUTBOUND_CIDRS: &str = "weft.dev/skip-outbound-cidrs";
const PROXY_CPU: &str = "weft.dev/proxy-cpu";
const PROXY_MEMORY: &str = "weft.dev/proxy-memory";
const INBOUND_MODE: &str = "weft.dev/inbound-mode";

pub(crate) const INIT_CONTAINER: &str = "weft-init";
pub(crate) const PROXY_CONTAINER: &str = "weft-proxy";
pub(crate) const TOKEN_VOLUME: &str = "weft-token";
/// The writable `/run` of `weft-init`, for iptables' lock file.
pub(crate) const RUN_VOLUME: &str = "weft-run";
/// Where the projected token is mounted in the sidecar.
const TOKEN_DIR: &str = "/var/run/secrets/weft";
const TOKEN_AUDIENCE: &str = "weft";
const TOKEN_SECONDS: u64 = 3600;
/// The uid and gid the proxy runs as; interception exempts its traffic.
const PROXY_UID: u32 = 1337;
const OUTBOUND_PORT: u16 = 15001;
const INBOUND_PORT: u16 = 15006;

/// What the webhook answers for one Pod.
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Allowed unchanged, with the reason (logged).
    Skip(String),
    /// Allowed with this patch.
    Inject(Vec<Value>),
    /// Refused, with a message naming what is wrong.
    Deny(String),
}

/// The `weft.dev/injected` record (field order as documented).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    version: &'a str,
    init_containers: [&'a str; 2],
    volumes: [&'a str; 2],
    rewritten_probes: Vec<String>,
}

/// Decides what to do with `pod` and builds its patch.
pub(crate) fn decide(pod: &Value, s: &Settings) -> Decision {
    let meta = &pod["metadata"];
    if meta["labels"][INJECT_LABEL] == "disabled" {
        return Decision::Skip(format!("the Pod is labelled {INJECT_LABEL}=disabled"));
    }
    let spec = &pod["spec"];
    if spec["hostNetwork"] == true {
        return Decision::Skip("host-network Pods are not injected".into());
    }
    if meta["annotations"].get(INJECTED).is_some() {
        return Decision::Skip(format!("already injected ({INJECTED} is set)"));
    }
    let named = |list: &str, name: &str| {
        spec[list]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == name)
    };
    if named("containers", PROXY_CONTAINER) || named("initContainers", PROXY_CONTAINER) {
        return Decision::Skip(format!("already has a {PROXY_CONTAINER} container"));
    }
    let Some(containers) = spec["containers"].as_array() else {
        return Decision::Deny("the Pod has no spec.containers".into());
    };
    if named("containers", INIT_CONTAINER) || named("initContainers", INIT_CONTAINER) {
        return Decision::Deny(format!(
            "the Pod already has a container named {INIT_CONTAINER}, which injection adds"
        ));
    }
    for volume in [TOKEN_VOLUME, RUN_VOLUME] {
        if named("volumes", volume) {
            return Decision::Deny(format!(
                "the Pod already has a volume named {volume}, which injection adds"
            ));
        }
    }
    let annotations = match Annotations::read(&meta["annotations"], s) {
        Ok(a) => a,
        Err(errors) => return Decision::Deny(errors.join("; ")),
    };
    let rewrite = probes::rewrite(containers);
    let record = Record {
        version: &s.version,
        init_containers: [INIT_CONTAINER, PROXY_CONTAINER],
        volumes: [TOKEN_VOLUME, RUN_VOLUME],
        rewritten_probes: rewrite.paths(),
    };
    let mut ops = Vec::new();
    if !meta["annotations"].is_object() {
        ops.push(add("/metadata/annotations", json!({})));
    }
    ops.push(add(
        &format!("/metadata/annotations/{}", escape(INJECTED)),
        json!(serde_json::to_string(&record).unwrap_or_default()),
    ));
    let app_probes = (!rewrite.app_probes.is_empty())
        .then(|| serde_json::to_string(&rewrite.app_probes).unwrap_or_default());
    let init = init_container(s, &annotations);
    let proxy = proxy_container(s, pod, &annotations, app_probes);
    if spec["initContainers"].is_array() {
        ops.push(add("/spec/initContainers/0", init));
        ops.push(add("/spec/initContainers/1", proxy));
    } else {
        ops.push(add("/spec/initContainers", json!([init, proxy])));
    }
    let run_volume = json!({"name": RUN_VOLUME, "emptyDir": {"medium": "Memory"}});
    if spec["volumes"].is_array() {
        ops.push(add("/spec/volumes/-", token_volume()));
        ops.push(add("/spec/volumes/-", run_volume));
    } else {
        ops.push(add("/spec/volumes", json!([token_volume(), run_volume])));
    }
    ops.extend(rewrite.ops);
    Decision::Inject(ops)
}

fn add(path: &str, value: Value) -> Value {
    json!({"op": "add", "path": path, "value": value})
}

/// A key as one JSON Pointer segment (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The Pod's injection annotations, checked.
struct Annotations {
    skip_inbound_ports: Option<String>,
    skip_outbound_ports: Option<String>,
    skip_outbound_cidrs: Option<String>,
    requests: Map<String, Value>,
    limits: Map<String, Value>,
    inbound_mode: Option<String>,
}

impl Annotations {
    /// Reads `annotations` (with `s`'s defaults); every problem, each
    /// naming its annotation.
    fn read(annotations: &Value, s: &Settings) -> Result<Annotations, Vec<String>> {
        let mut errors = Vec::new();
        let mut get = |key: &str| match annotations.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(v)) => Some(v.trim().to_string()),
            Some(other) => {
                errors.push(format!("annotation {key}: {other} is not a string"));
                None
            }
        };
        let raw = [
            get(SKIP_INBOUND_PORTS),
            get(SKIP_OUTBOUND_PORTS),
            get(SKIP_OUTBOUND_CIDRS),
            get(PROXY_CPU),
            get(PROXY_MEMORY),
            get(INBOUND_MODE),
        ];
        let [in_ports, out_ports, cidrs, cpu, memory, mode] = raw;
        let mut check = |key: &str, v: Option<String>, f: fn(&str) -> Result<String, String>| {
            v.and_then(|v| match f(&v) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(format!("annotation {key}: {e}"));
                    None
                }
            })
        };
        let skip_inbound_ports = check(SKIP_INBOUND_PORTS, in_ports, port_list);
        let skip_outbound_ports = check(SKIP_OUTBOUND_PORTS, out_ports, port_list);
        let skip_outbound_cidrs = check(SKIP_OUTBOUND_CIDRS, cidrs, cidr_list);
        let quantity = |v: &str| quantity::parse(v).map(|_| v.to_string());
        let cpu = check(PROXY_CPU, cpu, quantity).unwrap_or_else(|| s.cpu.clone());
        let memory = check(PROXY_MEMORY, memory, quantity).unwrap_or_else(|| s.memory.clone());
        let inbound_mode = check(INBOUND_MODE, mode, |v| {
            match v.to_ascii_lowercase().as_str() {
                m @ ("strict" | "permissive") => Ok(m.to_string()),
                _ => Err(format!("{v:?} is not Strict or Permissive")),
            }
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut requests = Map::new();
        let mut limits = Map::new();
        // A request above the default limit raises the limit to it (the
        // API server refuses a request above its limit).
        for (name, request, limit) in [
            ("cpu", cpu, s.cpu_limit.clone()),
            ("memory", memory, s.memory_limit.clone()),
        ] {
            if let Some(limit) = limit {
                let above = match (quantity::parse(&request), quantity::parse(&limit)) {
                    (Ok(r), Ok(l)) => r > l,
                    _ => false,
                };
                let limit = if above { request.clone() } else { limit };
                limits.insert(name.into(), json!(limit));
            }
            requests.insert(name.into(), json!(request));
        }
        Ok(Annotations {
            skip_inbound_ports,
            skip_outbound_ports,
            skip_outbound_cidrs,
            requests,
            limits,
            inbound_mode,
        })
    }
}

/// `80, 443` as `80,443`, every item a port.
fn port_list(v: &str) -> Result<String, String> {
    list(v, |p| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("{p:?} is not a port (1-65535)")),
    })
}

/// `10.0.0.0/8, fd00::/8` as `10.0.0.0/8,fd00::/8`, every item an
/// address or a CIDR.
fn cidr_list(v: &str) -> Result<String, String> {
    list(v, |c| {
        let (ip, len) = c.split_once('/').unwrap_or((c, ""));
        let max = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return Err(format!("{c:?} is not a CIDR (e.g. 10.0.0.0/8)")),
        };
        match len {
            "" => Ok(()),
            l if l.parse::<u8>().is_ok_and(|n| n <= max) => Ok(()),
            _ => Err(format!("{c:?} has a bad prefix length")),
        }
    })
}

/// A comma list, items trimmed and checked; empty items are ignored.
fn list(v: &str, check: impl Fn(&str) -> Result<(), String>) -> Result<String, String> {
    let items: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    for i in &items {
        check(i)?;
    }
    Ok(items.join(","))
}

fn resources(a: &Annotations) -> Value {
    let mut r = json!({"requests": a.requests});
    if !a.limits.is_empty() {
        r["limits"] = json!(a.limits);
    }
    r
}

fn init_container(s: &Settings, a: &Annotations) -> Value {
    let mut args: Vec<String> = [
        "iptables",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--proxy-gid",
        &PROXY_UID.to_string(),
        "--outbound-port",
        &OUTBOUND_PORT.to_string(),
        "--inbound-port",
        &INBOUND_PORT.to_string(),
    ]
    .map(str::to_string)
    .into();
    for (flag, value) in [
        ("--exclude-inbound-ports", &a.skip_inbound_ports),
        ("--exclude-outbound-ports", &a.skip_outbound_ports),
        ("--exclude-outbound-cidrs", &a.skip_outbound_cidrs),
    ] {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            args.push(flag.into());
            args.push(v.clone());
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": s.proxy_image,
        "command": [PROXY_CONTAINER],
        "args": args,
        "resources": resources(a),
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
        "volumeMounts": [{"name": RUN_VOLUME, "mountPath": "/run"}],
    })
}

fn proxy_container(
    s: &Settings,
    pod: &Value,
    a: &Annotations,
    app_probes: Option<String>,
) -> Value {
    let value = |name: &str, v: &str| json!({"name": name, "value": v});
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}});
    let labels = &pod["metadata"]["labels"];
    let service = labels["app.kubernetes.io/name"]
        .as_str()
        .or_else(|| labels["app"].as_str())
        .filter(|v| !v.is_empty());
    let mut env = vec![
        value("WEFT_CONTROL_PLANE", &s.control_plane),
        value("WEFT_CONTROL_PLANE_CA_PEM", &s.ca_pem),
        value("WEFT_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
        value("WEFT_TRUST_DOMAIN", &s.trust_domain),
        field("WEFT_NAMESPACE", "metadata.namespace"),
        field("WEFT_PROXY_NAME", "metadata.name"),
        field("WEFT_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    if let Some(service) = service {
        env.push(value("WEFT_SERVICE", service));
    }
    if let Some(mode) = &a.inbound_mode {
        env.push(value("WEFT_INBOUND_MODE", mode));
    }
    env.push(value("WEFT_PROBES", &format!("0.0.0.0:{PROBE_PORT}")));
    if let Some(p) = app_probes {
        env.push(value("WEFT_APP_PROBES", &p));
    }
    env.push(value(
        "WEFT_OUTBOUND",
        &format!("127.0.0.1:{OUTBOUND_PORT}"),
    ));
    env.push(value("WEFT_INBOUND", &format!("0.0.0.0:{INBOUND_PORT}")));
    let ready = |period: u32, failures: u32| {
        json!({
            "httpGet": {"path": "/ready", "port": PROBE_PORT, "scheme": "HTTP"},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": 1,
        })
    };
    json!({
        "name": PROXY_CONTAINER,
        "image": s.proxy_image,
        "command": [PROXY_CONTAINER],
        "args": ["run"],
        "restartPolicy": "Always",
        "ports": [{"name": "weft-probes", "containerPort": PROBE_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": resources(a),
        // The app waits for this: up to 10 minutes to get config and a certificate.
        "startupProbe": ready(1, 600),
        "readinessProbe": ready(5, 3),
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
    })
}

fn token_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_SECONDS,
            "path": "token",
        }}]},
    })
}
