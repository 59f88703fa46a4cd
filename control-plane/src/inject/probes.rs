//! The probe rewrite: with Strict mTLS the kubelet's plaintext probes
//! cannot reach the app through the sidecar's inbound listener, so every
//! app container's `httpGet` liveness, readiness and startup probe is
//! pointed at the proxy's probe listener on the pod IP (port 15020), at
//! `/app-health/<container>/<livez|readyz|startupz>`, and the original
//! (port resolved to a number, path, scheme, headers, timeout) goes to the
//! proxy in `WEFT_APP_PROBES`, keyed by that path. The probe's other
//! fields (periods, thresholds) are kept.
//!
//! Left as they are: `tcpSocket`, `grpc` and `exec` probes (a TCP or gRPC
//! probe reaches the port through the interception's inbound exclusions,
//! an exec probe runs in the container), `httpGet` probes with a `host`
//! (they probe another machine), probes whose named port the container
//! does not declare or whose port is out of range (the kubelet would fail
//! them anyway; the injector does not guess), and the user's own init
//! containers.

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The proxy's probe listener port (on the pod IP).
pub(crate) const PROBE_PORT: u16 = 15020;

/// Probe fields of a container and the path segment each gets.
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// One original probe, as the proxy forwards it (`WEFT_APP_PROBES`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AppProbe {
    pub(crate) port: u16,
    pub(crate) path: String,
    pub(crate) scheme: String,
    pub(crate) headers: Vec<Header>,
    pub(crate) timeout_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Header {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// What the rewrite does to a pod's containers.
#[derive(Debug, Default)]
pub(crate) struct Rewrite {
    /// JSON Patch operations replacing each rewritten `httpGet`.
    pub(crate) ops: Vec<Value>,
    /// The originals, keyed by their new path.
    pub(crate) app_probes: BTreeMap<String, AppProbe>,
}

impl Rewrite {
    /// The rewritten paths, in container and probe order.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.ops
            .iter()
            .filter_map(|op| op["value"]["path"].as_str().map(str::to_string))
            .collect()
    }
}

/// Rewrites the HTTP probes of `containers` (the pod's `spec.containers`).
pub(crate) fn rewrite(containers: &[Value]) -> Rewrite {
    let mut out = Rewrite::default();
    for (i, c) in containers.iter().enumerate() {
        let Some(name) = c["name"].as_str().filter(|n| !n.is_empty()) else {
            continue;
        };
        for (field, suffix) in PROBES {
            let Some(original) = original(c, &c[field]) else {
                continue;
            };
            let path = format!("/app-health/{name}/{suffix}");
            out.ops.push(json!({
                "op": "replace",
                "path": format!("/spec/containers/{i}/{field}/httpGet"),
                "value": {"path": path, "port": PROBE_PORT, "scheme": "HTTP"},
            }));
            out.app_probes.insert(path, original);
        }
    }
    out
}

/// The original of `probe` on `container`, when it is one to rewrite.
fn original(container: &Value, probe: &Value) -> Option<AppProbe> {
    let get = probe.get("httpGet").filter(|g| g.is_object())?;
    if get["host"].as_str().is_some_and(|h| !h.is_empty()) {
        return None;
    }
    let scheme = match get["scheme"].as_str() {
        None => "HTTP".to_string(),
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            s.to_ascii_uppercase()
        }
        Some(_) => return None,
    };
    let path = match get["path"].as_str() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some("") | None => "/".to_string(),
        Some(p) => format!("/{p}"),
    };
    let headers = get["httpHeaders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some(Header {
                name: h["name"].as_str()?.to_string(),
                value: h["value"].as_str().unwrap_or("").to_string(),
            })
        })
        .collect();
    Some(AppProbe {
        port: port(container, &get["port"])?,
        path,
        scheme,
        headers,
        timeout_seconds: probe["timeoutSeconds"]
            .as_u64()
            .filter(|t| *t > 0)
            .unwrap_or(1),
    })
}

/// A probe's port as a number: given as one, or named after one of the
/// container's ports.
fn port(container: &Value, port: &Value) -> Option<u16> {
    let number = match port {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        Value::String(name) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"].as_str() == Some(name))?["containerPort"]
            .as_u64()?,
        _ => return None,
    };
    u16::try_from(number).ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(probe: Value) -> Value {
        json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
               "readinessProbe": probe})
    }

    #[test]
    fn named_and_numeric_ports_resolve_and_odd_probes_stay() {
        let named = container(json!({"httpGet": {"port": "http", "path": "healthz"}}));
        let r = rewrite(&[named]);
        assert_eq!(r.paths(), ["/app-health/web/readyz"]);
        let p = &r.app_probes["/app-health/web/readyz"];
        assert_eq!(
            (p.port, p.path.as_str(), p.scheme.as_str()),
            (8080, "/healthz", "HTTP")
        );
        assert_eq!(p.timeout_seconds, 1);

        for left in [
            json!({"httpGet": {"port": "metrics"}}),
            json!({"httpGet": {"port": 0}}),
            json!({"httpGet": {"port": 70000}}),
            json!({"httpGet": {"port": 8080, "host": "10.0.0.1"}}),
            json!({"httpGet": {"port": 8080, "scheme": "FTP"}}),
            json!({"tcpSocket": {"port": 8080}}),
            json!({"grpc": {"port": 8080}}),
            json!({"exec": {"command": ["true"]}}),
            json!(null),
        ] {
            let r = rewrite(&[container(left.clone())]);
            assert!(r.ops.is_empty(), "{left} was rewritten");
        }
    }
}
