//! Keeps the webhook configuration trusting the webhook: at start and
//! every `--ca-bundle-interval`, GET MutatingWebhookConfiguration
//! `weft-sidecar-injector` and JSON-patch every webhook whose
//! `clientConfig.caBundle` is not the mesh CA root (a `helm upgrade`
//! resets it). Each replaced value is guarded by a `test` of that
//! webhook's name, so a configuration edited meanwhile fails the patch
//! instead of being written at the wrong index; the next round retries.
//!
//! RBAC allows `get` and `patch` on that one name only. A missing
//! configuration or permission is logged by name and shown on `/config`
//! (`kubernetes.webhook`, `missing_permissions`), and retried with
//! backoff; it never stops the control plane.

use crate::state::KubernetesStatus;
use base64::Engine;
use kube::Client;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::process::lock;

/// The webhook configuration the chart installs (CONTRACT: Kubernetes).
pub(crate) const CONFIGURATION: &str = "weft-sidecar-injector";
const PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/weft-sidecar-injector";
/// First wait after a failure; doubles up to the check interval.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// Why one round did not leave the configuration current.
struct Failure {
    /// The refused permission, by name.
    permission: Option<String>,
    message: String,
}

fn permission(verb: &str) -> String {
    format!("{verb} mutatingwebhookconfigurations.admissionregistration.k8s.io {CONFIGURATION}")
}

/// Keeps the caBundle of every webhook of [`CONFIGURATION`] equal to
/// `root_pem`, checking every `interval`, for ever.
pub(crate) async fn keep(
    client: Client,
    root_pem: String,
    interval: Duration,
    status: Arc<KubernetesStatus>,
) {
    let want = base64::engine::general_purpose::STANDARD.encode(root_pem.as_bytes());
    let mut backoff = RETRY_BASE;
    let mut last: Option<String> = None;
    loop {
        let wait = match once(&client, &want).await {
            Ok(state) => {
                status.granted(&permission("get"));
                if state.patched > 0 {
                    status.granted(&permission("patch"));
                    tracing::info!(
                        configuration = CONFIGURATION,
                        webhooks = state.patched,
                        "caBundle set to the mesh CA root"
                    );
                }
                let note = format!(
                    "MutatingWebhookConfiguration {CONFIGURATION}: caBundle current on {} webhook(s)",
                    state.webhooks
                );
                *lock(&status.webhook) = Some(note);
                last = None;
                backoff = RETRY_BASE;
                interval
            }
            Err(f) => {
                if last.as_ref() != Some(&f.message) {
                    tracing::warn!(configuration = CONFIGURATION, "{}; retrying", f.message);
                }
                if let Some(p) = &f.permission {
                    status.missing(p, &f.message);
                }
                *lock(&status.webhook) = Some(f.message.clone());
                last = Some(f.message);
                let wait = backoff.min(interval);
                backoff = (backoff * 2).min(interval);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// How a successful round left the configuration.
struct Synced {
    webhooks: usize,
    patched: usize,
}

async fn once(client: &Client, want: &str) -> Result<Synced, Failure> {
    let get = http::Request::get(PATH)
        .body(Vec::new())
        .map_err(|e| failure(None, e.to_string()))?;
    let config: Value = client.request(get).await.map_err(|e| refused(e, "get"))?;
    let ops = patch_ops(&config, want);
    let webhooks = config["webhooks"].as_array().map_or(0, Vec::len);
    if ops.is_empty() {
        return Ok(Synced {
            webhooks,
            patched: 0,
        });
    }
    let patched = ops.len() / 2;
    let body = serde_json::to_vec(&ops).map_err(|e| failure(None, e.to_string()))?;
    let patch = http::Request::patch(PATH)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(body)
        .map_err(|e| failure(None, e.to_string()))?;
    client
        .request::<Value>(patch)
        .await
        .map_err(|e| refused(e, "patch"))?;
    Ok(Synced { webhooks, patched })
}

/// A `test` of the name and an `add` of the caBundle for every webhook
/// of `config` whose caBundle is not `want`.
fn patch_ops(config: &Value, want: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    for (i, hook) in config["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !hook["clientConfig"].is_object() || hook["clientConfig"]["caBundle"] == want {
            continue;
        }
        ops.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": hook["name"]}),
        );
        ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": want}));
    }
    ops
}

fn failure(permission: Option<String>, message: String) -> Failure {
    Failure {
        permission,
        message,
    }
}

/// A failed call of `verb`, named.
fn refused(e: kube::Error, verb: &str) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            let p = permission(verb);
            let message = format!(
                "forbidden to {p}: grant the control plane's ServiceAccount {verb} on it (charts/weft/files/rbac.yaml) ({})",
                s.message
            );
            failure(Some(p), message)
        }
        kube::Error::Api(s) if s.code == 404 => failure(
            None,
            format!(
                "MutatingWebhookConfiguration {CONFIGURATION} not found: no Pod is injected until it is installed (helm install/upgrade)"
            ),
        ),
        e => failure(None, format!("{verb} MutatingWebhookConfiguration {CONFIGURATION}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_webhooks_with_another_bundle_are_patched_each_guarded_by_its_name() {
        let config = json!({"webhooks": [
            {"name": "namespace.inject.weft.dev", "clientConfig": {"caBundle": "QQ=="}},
            {"name": "pod.inject.weft.dev", "clientConfig": {"service": {"name": "x"}}},
            {"name": "odd.weft.dev"},
        ]});
        assert_eq!(
            patch_ops(&config, "QQ=="),
            vec![
                json!({"op": "test", "path": "/webhooks/1/name", "value": "pod.inject.weft.dev"}),
                json!({"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "QQ=="}),
            ]
        );
        assert!(patch_ops(&json!({"webhooks": [config["webhooks"][0]]}), "QQ==").is_empty());
        assert!(patch_ops(&json!({}), "QQ==").is_empty());
    }
}
