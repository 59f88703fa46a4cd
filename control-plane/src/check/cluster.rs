//! The API server as `check` talks to it: raw JSON GETs, LISTs and POSTs
//! through a kube-rs client built from the current `KUBECONFIG` (or
//! in-cluster credentials), each failure sorted into "not there",
//! "refused to you" (with the permission) and anything else.

use http::Request;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// How long one request may take: a check waits for nothing.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request gave no object.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// 404: the object (or its kind) does not exist.
    NotFound,
    /// 403: the user running `check` may not do this (the API server's message).
    Forbidden(String),
    /// Anything else: unreachable, a timeout, a 5xx, a body that is not JSON.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound => f.write_str("not found"),
            Failure::Forbidden(m) => write!(f, "forbidden to the user running check ({m})"),
            Failure::Other(m) => f.write_str(m),
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Failure {
        match e {
            kube::Error::Api(s) if s.code == 404 => Failure::NotFound,
            kube::Error::Api(s) if s.code == 403 => Failure::Forbidden(s.message),
            kube::Error::Api(s) => Failure::Other(if s.message.is_empty() {
                format!("{} {}", s.code, s.reason)
            } else {
                format!("{} {}: {}", s.code, s.reason, s.message.trim())
            }),
            e => Failure::Other(e.to_string()),
        }
    }
}

/// The cluster under check.
pub(crate) struct Cluster {
    client: kube::Client,
    /// The API server's URL, as the kubeconfig names it.
    pub(crate) url: String,
    /// The control plane's namespace (`--namespace`).
    pub(crate) namespace: String,
}

impl Cluster {
    /// A client for the current `KUBECONFIG` context (or in-cluster).
    pub(crate) async fn connect(namespace: String) -> Result<Cluster, String> {
        let mut config = kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes credentials (KUBECONFIG or in-cluster): {e}"))?;
        config.connect_timeout = Some(TIMEOUT);
        config.read_timeout = Some(TIMEOUT);
        config.write_timeout = Some(TIMEOUT);
        // A 503 is a finding here (e.g. a webhook Service without
        // endpoints), not something to retry for minutes.
        config.default_retry = false;
        let url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
        Ok(Cluster {
            client,
            url: url.trim_end_matches('/').to_string(),
            namespace,
        })
    }

    async fn send(&self, request: Request<Vec<u8>>) -> Result<Value, Failure> {
        let text = tokio::time::timeout(TIMEOUT, self.client.request_text(request))
            .await
            .map_err(|_| Failure::Other(format!("no answer within {}s", TIMEOUT.as_secs())))??;
        serde_json::from_str(&text).map_err(|e| {
            let start: String = text.chars().take(120).collect();
            Failure::Other(format!("the answer is not JSON ({e}): {start:?}"))
        })
    }

    /// GET `path` (an API path with its query).
    pub(crate) async fn get(&self, path: &str) -> Result<Value, Failure> {
        let request = Request::get(path)
            .header("accept", "application/json")
            .body(Vec::new())
            .map_err(|e| Failure::Other(format!("{path}: {e}")))?;
        self.send(request).await
    }

    /// POST `body` as JSON to `path`.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let request = Request::post(path)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.to_string().into_bytes())
            .map_err(|e| Failure::Other(format!("{path}: {e}")))?;
        self.send(request).await
    }

    /// Every item of the collection at `path`, page by page.
    pub(crate) async fn list(&self, path: &str) -> Result<Vec<Value>, Failure> {
        let mut items = Vec::new();
        let mut next = String::new();
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut url = format!("{path}{sep}limit=500");
            if !next.is_empty() {
                url.push_str("&continue=");
                url.push_str(&encode(&next));
            }
            let page = self.get(&url).await?;
            if let Some(list) = page["items"].as_array() {
                items.extend(list.iter().cloned());
            }
            match page["metadata"]["continue"].as_str() {
                Some(c) if !c.is_empty() => next = c.to_string(),
                _ => return Ok(items),
            }
        }
    }
}

/// Percent-encoding of one query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `namespace/name` of an object.
pub(crate) fn ns_name(obj: &Value) -> String {
    let m = &obj["metadata"];
    match m["namespace"].as_str() {
        Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap_or("?")),
        None => m["name"].as_str().unwrap_or("?").to_string(),
    }
}
