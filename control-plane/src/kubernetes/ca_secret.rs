//! The mesh CA in Kubernetes mode: Secret `weft-ca` in the control plane's
//! own namespace (keys `ca.pem`, `ca-key.pem`), so every replica signs
//! with the same root and a restart keeps it.
//!
//! On start: GET the Secret; if it is not there, generate a CA and CREATE
//! it; if that CREATE answers 409 AlreadyExists, another replica won the
//! race: GET again and use that one. So replicas starting together create
//! it once and all serve the same CA. A Secret that exists but does not
//! hold a usable CA stops the start with the reason (replacing it would
//! orphan every certificate issued from it). A refused or failed call is
//! logged with the permission it needs, shown on `/config`, and retried.
//!
//! The root certificate alone (no key) is then published as ConfigMap
//! `weft-ca-root` (key `ca.pem`) in the same namespace, for whoever hands
//! sidecars their `--control-plane-ca`; a failure there is reported and
//! retried in the background, never fatal.

use crate::ca::{CertificateAuthority, CERT_FILE, KEY_FILE};
use crate::state::KubernetesStatus;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::process::lock;

/// The Secret holding the CA (CONTRACT.md).
pub(crate) const SECRET: &str = "weft-ca";
/// The ConfigMap holding only the root certificate.
pub(crate) const ROOT_CONFIGMAP: &str = "weft-ca-root";

/// Backoff between tries while the API server refuses or fails.
const RETRY_BASE: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from an existing Secret.
    Loaded,
    /// Generated here and created.
    Created,
    /// Another replica created it between our GET and our CREATE.
    Raced,
}

/// Why one try did not give a CA.
enum Failure {
    /// The Secret is unusable: starting would mean replacing it.
    Fatal(String),
    /// Retry: a refused permission (named) or an API error.
    Retry {
        permission: Option<String>,
        message: String,
    },
}

/// The CA from Secret `weft-ca` in `namespace`, created if absent; retries
/// until the API server lets it be read or created.
pub(crate) async fn load_or_create(
    client: &Client,
    namespace: &str,
    trust_domain: &str,
    status: &KubernetesStatus,
) -> Result<(CertificateAuthority, Origin), String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut wait = RETRY_BASE;
    loop {
        match attempt(&api, namespace, trust_domain).await {
            Ok((ca, origin)) => {
                for verb in ["get", "create"] {
                    status.granted(&secrets_permission(verb, namespace));
                }
                *lock(&status.ca) = Some(format!("Secret {namespace}/{SECRET} ({origin:?})"));
                return Ok((ca, origin));
            }
            Err(Failure::Fatal(message)) => return Err(message),
            Err(Failure::Retry {
                permission,
                message,
            }) => {
                tracing::error!(secret = SECRET, namespace, "{message}; retrying");
                if let Some(p) = permission {
                    status.missing(&p, &message);
                }
                *lock(&status.last_error) = Some(message);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

fn secrets_permission(verb: &str, namespace: &str) -> String {
    format!("{verb} secrets in namespace {namespace}")
}

/// A refusal or error of `verb` on `what` as a [`Failure::Retry`].
fn retry(e: kube::Error, verb: &str, what: &str, namespace: &str) -> Failure {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            let permission = format!("{verb} {what} in namespace {namespace}");
            Failure::Retry {
                message: format!(
                    "forbidden to {permission}: grant the control plane's ServiceAccount a Role with {verb} on {what} there ({})",
                    s.message
                ),
                permission: Some(permission),
            }
        }
        e => Failure::Retry {
            permission: None,
            message: format!("{verb} {what} {namespace}: {e}"),
        },
    }
}

async fn attempt(
    api: &Api<Secret>,
    namespace: &str,
    trust_domain: &str,
) -> Result<(CertificateAuthority, Origin), Failure> {
    let get = |api: &Api<Secret>| {
        let api = api.clone();
        async move {
            api.get_opt(SECRET)
                .await
                .map_err(|e| retry(e, "get", "secrets", namespace))
        }
    };
    if let Some(secret) = get(api).await? {
        return from_secret(&secret, namespace).map(|ca| (ca, Origin::Loaded));
    }
    let ca = CertificateAuthority::generate(trust_domain)
        .map_err(|e| Failure::Fatal(format!("cannot generate a CA: {e}")))?;
    match api.create(&PostParams::default(), &to_secret(&ca)).await {
        Ok(_) => Ok((ca, Origin::Created)),
        Err(kube::Error::Api(s)) if s.code == 409 => match get(api).await? {
            Some(secret) => from_secret(&secret, namespace).map(|ca| (ca, Origin::Raced)),
            None => Err(Failure::Retry {
                permission: None,
                message: format!("Secret {namespace}/{SECRET} was created and deleted meanwhile"),
            }),
        },
        Err(e) => Err(retry(e, "create", "secrets", namespace)),
    }
}

fn to_secret(ca: &CertificateAuthority) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "weft-control-plane".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (
                CERT_FILE.to_string(),
                ByteString(ca.cert_pem().as_bytes().to_vec()),
            ),
            (
                KEY_FILE.to_string(),
                ByteString(ca.key_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

fn from_secret(secret: &Secret, namespace: &str) -> Result<CertificateAuthority, Failure> {
    let fatal = |why: String| {
        Failure::Fatal(format!(
            "Secret {namespace}/{SECRET} does not hold a usable CA ({why}); fix or delete it (deleting it means a new CA: every sidecar needs a new certificate and trust bundle)"
        ))
    };
    let field = |key: &str| -> Result<String, Failure> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| fatal(format!("no key {key}")))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| fatal(format!("{key} is not text")))
    };
    let (cert, key) = (field(CERT_FILE)?, field(KEY_FILE)?);
    CertificateAuthority::from_pem(&cert, &key).map_err(|e| fatal(e.to_string()))
}

/// Publishes the root certificate as ConfigMap `weft-ca-root` in
/// `namespace` (created, or replaced when it holds another root),
/// retrying in the background until it is done.
pub(crate) fn publish_root(
    client: Client,
    namespace: String,
    root_pem: String,
    status: Arc<KubernetesStatus>,
) {
    tokio::spawn(async move {
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        let mut wait = RETRY_BASE;
        loop {
            match publish_once(&api, &namespace, &root_pem).await {
                Ok(what) => {
                    for verb in ["get", "create", "update"] {
                        status.granted(&format!("{verb} configmaps in namespace {namespace}"));
                    }
                    tracing::info!(configmap = ROOT_CONFIGMAP, %namespace, "trust bundle {what}");
                    return;
                }
                Err(Failure::Retry {
                    permission,
                    message,
                }) => {
                    tracing::warn!(configmap = ROOT_CONFIGMAP, %namespace, "{message}; retrying");
                    if let Some(p) = permission {
                        status.missing(&p, &message);
                    }
                }
                Err(Failure::Fatal(message)) => {
                    tracing::error!(configmap = ROOT_CONFIGMAP, %namespace, "{message}");
                    return;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    });
}

async fn publish_once(
    api: &Api<ConfigMap>,
    namespace: &str,
    root_pem: &str,
) -> Result<&'static str, Failure> {
    let data = BTreeMap::from([(CERT_FILE.to_string(), root_pem.to_string())]);
    let current = api
        .get_opt(ROOT_CONFIGMAP)
        .await
        .map_err(|e| retry(e, "get", "configmaps", namespace))?;
    match current {
        Some(cm) if cm.data.as_ref() == Some(&data) => Ok("already published"),
        Some(mut cm) => {
            cm.data = Some(data);
            api.replace(ROOT_CONFIGMAP, &PostParams::default(), &cm)
                .await
                .map_err(|e| retry(e, "update", "configmaps", namespace))?;
            Ok("replaced")
        }
        None => {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(ROOT_CONFIGMAP.to_string()),
                    ..Default::default()
                },
                data: Some(data),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => Ok("published"),
                // Another replica published it (the same root).
                Err(kube::Error::Api(s)) if s.code == 409 => Ok("published by another replica"),
                Err(e) => Err(retry(e, "create", "configmaps", namespace)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal(r: Result<CertificateAuthority, Failure>) -> String {
        match r {
            Err(Failure::Fatal(m)) => m,
            Err(Failure::Retry { message, .. }) => panic!("retry: {message}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_secret_round_trips_and_a_broken_one_is_named_not_replaced() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let secret = to_secret(&ca);
        assert_eq!(secret.metadata.name.as_deref(), Some(SECRET));
        let back = from_secret(&secret, "weft-system").ok().unwrap();
        assert_eq!(back.cert_der(), ca.cert_der());

        let mut no_key = secret.clone();
        no_key.data.as_mut().unwrap().remove(KEY_FILE);
        let m = fatal(from_secret(&no_key, "weft-system"));
        assert!(
            m.contains("Secret weft-system/weft-ca") && m.contains("no key ca-key.pem"),
            "{m}"
        );

        let mut garbage = secret.clone();
        garbage.data.as_mut().unwrap().insert(
            CERT_FILE.to_string(),
            ByteString(b"not a certificate".to_vec()),
        );
        fatal(from_secret(&garbage, "weft-system"));

        let mut binary = secret;
        binary
            .data
            .as_mut()
            .unwrap()
            .insert(KEY_FILE.to_string(), ByteString(vec![0xff, 0xfe]));
        assert!(fatal(from_secret(&binary, "weft-system")).contains("is not text"));
    }
}
