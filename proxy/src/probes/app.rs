//! The app's own HTTP probes, as the injector hands them over in
//! `--app-probes` (env `WEFT_APP_PROBES`): a JSON object keyed by the
//! rewritten path the kubelet now calls on the probe listener, each value
//! the probe the app's pod spec declared. Parsed and checked once at
//! startup, so a malformed value stops the proxy with a message naming the
//! key and field instead of failing every probe later.
//!
//! ```json
//! {"/app-health/web/readyz": {"port": 8080, "path": "/healthz", "scheme": "HTTP",
//!   "headers": [{"name": "X-A", "value": "b"}], "timeoutSeconds": 1}}
//! ```

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// The kubelet's default probe timeout, used when `timeoutSeconds` is absent or 0.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Every forwarded probe, by the path the kubelet calls.
#[derive(Debug, Default, Clone)]
pub(crate) struct AppProbes {
    by_path: HashMap<String, AppProbe>,
}

/// One probe of the app: where it is forwarded and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppProbe {
    pub(crate) port: u16,
    /// Path and query sent to the app.
    pub(crate) path: PathAndQuery,
    pub(crate) https: bool,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire {
    port: u32,
    path: Option<String>,
    scheme: Option<String>,
    #[serde(default)]
    headers: Vec<WireHeader>,
    timeout_seconds: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireHeader {
    name: String,
    value: String,
}

impl AppProbes {
    /// Parses the `--app-probes` JSON; the error names the key and field at fault.
    pub(crate) fn parse(json: &str) -> Result<AppProbes, String> {
        let wire: HashMap<String, Wire> = serde_json::from_str(json)
            .map_err(|e| format!("--app-probes is not the expected JSON object: {e}"))?;
        let mut by_path = HashMap::with_capacity(wire.len());
        for (key, w) in wire {
            let probe = compile(&key, w).map_err(|e| format!("--app-probes {key:?}: {e}"))?;
            by_path.insert(key, probe);
        }
        Ok(AppProbes { by_path })
    }

    /// The probe the kubelet asks for at `path`, if the injector listed it.
    pub(crate) fn get(&self, path: &str) -> Option<&AppProbe> {
        self.by_path.get(path)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_path.len()
    }
}

fn compile(key: &str, w: Wire) -> Result<AppProbe, String> {
    if !key.starts_with('/') || key.contains(['?', '#']) {
        return Err(
            "the key must be a plain path starting with / (the rewritten probe path)".into(),
        );
    }
    if key == "/ready" {
        return Err("the key /ready is the proxy's own readiness".into());
    }
    let port = u16::try_from(w.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {} is not a TCP port (1-65535)", w.port))?;
    // The kubelet sends `/` when the probe names no path, and adds a missing
    // leading slash.
    let raw = w.path.unwrap_or_default();
    let raw = if raw.starts_with('/') {
        raw
    } else {
        format!("/{raw}")
    };
    let path = PathAndQuery::try_from(raw.as_str())
        .map_err(|e| format!("path {raw:?} is not a valid request path: {e}"))?;
    let https = match w.scheme.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("HTTP") => false,
        Some("HTTPS") => true,
        Some(_) => {
            let scheme = w.scheme.unwrap_or_default();
            return Err(format!("scheme {scheme:?} is neither HTTP nor HTTPS"));
        }
    };
    let mut headers = Vec::with_capacity(w.headers.len());
    for (i, h) in w.headers.into_iter().enumerate() {
        let name = HeaderName::try_from(h.name.as_str())
            .map_err(|_| format!("headers[{i}].name {:?} is not a header name", h.name))?;
        let value = HeaderValue::try_from(h.value.as_str())
            .map_err(|_| format!("headers[{i}].value of {name} is not a header value"))?;
        headers.push((name, value));
    }
    let timeout = match w.timeout_seconds {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(s) => Duration::from_secs(u64::from(s)),
    };
    Ok(AppProbe {
        port,
        path,
        https,
        headers,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injectors_json_parses() {
        let probes = AppProbes::parse(
            r#"{"/app-health/web/readyz": {"port": 8080, "path": "/healthz?full=1", "scheme": "HTTP",
                "headers": [{"name": "X-A", "value": "b"}], "timeoutSeconds": 3},
               "/app-health/web/livez": {"port": 8443, "scheme": "HTTPS"},
               "/app-health/db/startupz": {"port": 9000, "path": "ready", "timeoutSeconds": 0}}"#,
        )
        .expect("valid");
        assert_eq!(probes.len(), 3);
        let ready = probes.get("/app-health/web/readyz").expect("listed");
        assert_eq!(ready.port, 8080);
        assert_eq!(ready.path.as_str(), "/healthz?full=1");
        assert!(!ready.https);
        assert_eq!(ready.headers.len(), 1);
        assert_eq!(ready.headers[0].0.as_str(), "x-a");
        assert_eq!(ready.timeout, Duration::from_secs(3));
        let live = probes.get("/app-health/web/livez").expect("listed");
        assert!(live.https);
        assert_eq!(live.path.as_str(), "/");
        assert_eq!(live.timeout, DEFAULT_TIMEOUT);
        let startup = probes.get("/app-health/db/startupz").expect("listed");
        assert_eq!(startup.path.as_str(), "/ready");
        assert_eq!(startup.timeout, DEFAULT_TIMEOUT);
        assert!(probes.get("/app-health/web").is_none());
        assert_eq!(AppProbes::parse("{}").expect("empty").len(), 0);
    }

    #[test]
    fn bad_values_name_the_key_and_field() {
        let bad = |json: &str, needles: &[&str]| {
            let err = AppProbes::parse(json).expect_err(json);
            for n in needles {
                assert!(err.contains(n), "{json}: {err:?} lacks {n:?}");
            }
        };
        bad("not json", &["--app-probes", "JSON"]);
        bad("[]", &["JSON object"]);
        bad(r#"{"/a": {"path": "/x"}}"#, &["port"]);
        bad(r#"{"/a": {"port": 0}}"#, &["\"/a\"", "port 0"]);
        bad(r#"{"/a": {"port": 70000}}"#, &["port 70000"]);
        bad(
            r#"{"/a": {"port": 80, "scheme": "TCP"}}"#,
            &["scheme \"TCP\""],
        );
        bad(r#"{"/a": {"port": 80, "path": "/a b"}}"#, &["path"]);
        bad(r#"{"/a": {"port": 80, "host": "x"}}"#, &["host"]);
        bad(
            r#"{"/a": {"port": 80, "headers": [{"name": "a b", "value": "x"}]}}"#,
            &["headers[0].name"],
        );
        bad(
            r#"{"/a": {"port": 80, "headers": [{"name": "a", "value": "x\ny"}]}}"#,
            &["headers[0].value"],
        );
        bad(r#"{"a": {"port": 80}}"#, &["\"a\"", "key"]);
        bad(r#"{"/a?b": {"port": 80}}"#, &["key"]);
        bad(r#"{"/ready": {"port": 80}}"#, &["/ready"]);
    }
}
