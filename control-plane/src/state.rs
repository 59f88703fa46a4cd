//! What the control plane holds while it runs: the CA and tokens, the
//! resources in force (published to every watch), the connected proxies
//! and counters for the admin page. Nothing here outlives the process:
//! the truth is the resources' sources and the CA directory, and proxies
//! re-send what they hold when they reconnect.

use crate::ca::CertificateAuthority;
use crate::resources::{Inputs, Resources};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_mesh::api;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::token::Tokens;
use weft_mesh::identity::SpiffeId;
use weft_mesh::process::lock;

/// What the admin endpoint shows of one connected proxy.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct ProxyStatus {
    pub(crate) name: String,
    pub(crate) identity: String,
    pub(crate) service: Option<String>,
    pub(crate) namespace: String,
    pub(crate) peer: String,
    pub(crate) connected_at: u64,
    /// Names it asked for; the ones that resolve are in its snapshot.
    pub(crate) wants: Vec<String>,
    /// The resources version its snapshot was last cut from.
    pub(crate) resources: Option<String>,
    /// Its snapshot's version now, the last sent, and the last acknowledged.
    pub(crate) current: Option<String>,
    pub(crate) sent: Option<String>,
    pub(crate) acked: Option<String>,
    pub(crate) last_nack: Option<Nack>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Nack {
    pub(crate) version: String,
    pub(crate) reason: String,
    pub(crate) at: u64,
}

/// What the admin page shows of the Kubernetes source.
#[derive(Default)]
pub(crate) struct KubernetesStatus {
    /// Every watched resource has been listed once.
    pub(crate) synced: AtomicBool,
    /// Complete lists (initial and relists) across the watched resources.
    pub(crate) lists: AtomicU64,
    /// Watch and list errors (each retried).
    pub(crate) errors: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// Permissions the API server refused, by name, with what it said
    /// (cleared when a later call succeeds).
    pub(crate) missing_permissions: Mutex<BTreeMap<String, String>>,
    /// Where the CA came from (the `weft-ca` Secret, or `--ca-dir`).
    pub(crate) ca: Mutex<Option<String>>,
    /// Watched kinds not served (CRD missing) or not permitted, and why.
    pub(crate) unavailable: Mutex<BTreeMap<String, String>>,
    /// Cluster objects left out, by `Kind namespace/name`, and why.
    pub(crate) rejected: Mutex<BTreeMap<String, String>>,
    /// This replica holds the status Lease and writes status.
    pub(crate) status_writer: AtomicBool,
    pub(crate) status_writes: AtomicU64,
    pub(crate) lease_error: Mutex<Option<String>>,
    /// Which Pods the mesh covers, per namespace (`kubernetes/coverage.rs`).
    pub(crate) coverage: Mutex<serde_json::Value>,
    /// Services left out of the mesh, `(namespace/name, why)`.
    pub(crate) refused: Mutex<Vec<(String, String)>>,
    /// The injection webhook configuration's caBundle: current, or why not
    /// (`inject/ca_bundle.rs`); none without `--webhook`.
    pub(crate) webhook: Mutex<Option<String>>,
}

impl KubernetesStatus {
    /// Notes that the API server refused `permission`.
    pub(crate) fn missing(&self, permission: &str, message: &str) {
        lock(&self.missing_permissions).insert(permission.to_string(), message.to_string());
    }

    /// Notes that `permission` was used successfully.
    pub(crate) fn granted(&self, permission: &str) {
        let mut missing = lock(&self.missing_permissions);
        if !missing.is_empty() {
            missing.remove(permission);
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "synced": self.synced.load(Ordering::Relaxed),
            "lists": self.lists.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "last_error": *lock(&self.last_error),
            "missing_permissions": *lock(&self.missing_permissions),
            "ca": *lock(&self.ca),
            "unavailable": *lock(&self.unavailable),
            "rejected": *lock(&self.rejected),
            "status_writer": self.status_writer.load(Ordering::Relaxed),
            "status_writes": self.status_writes.load(Ordering::Relaxed),
            "lease_error": *lock(&self.lease_error),
            "coverage": *lock(&self.coverage),
            "webhook": *lock(&self.webhook),
            "refused_services": lock(&self.refused)
                .iter()
                .map(|(service, reason)| serde_json::json!({"service": service, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }
}

/// Checks a bearer token that is not a bootstrap token: with
/// `--kubernetes`, a ServiceAccount token by TokenReview
/// (`kubernetes::tokens`).
pub(crate) trait TokenReviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TokenSubject, TokenRefusal>> + Send + 'a>>;
}

/// Who a reviewed token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenSubject {
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) pod: String,
}

/// Why a token proves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// The token is not good for a certificate (403 to the caller).
    Refused(String),
    /// The review could not be made (503: the caller retries).
    Unavailable(String),
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) pushes: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) nacks: AtomicU64,
    pub(crate) certificates: AtomicU64,
    pub(crate) certificate_denials: AtomicU64,
    pub(crate) rejected_reloads: AtomicU64,
    /// Injection webhook answers (`inject/webhook.rs`).
    pub(crate) injections: AtomicU64,
    pub(crate) injection_skips: AtomicU64,
    pub(crate) injection_denials: AtomicU64,
    pub(crate) injection_bad_reviews: AtomicU64,
}

pub(crate) struct ControlPlane {
    pub(crate) ca: CertificateAuthority,
    pub(crate) tokens: Tokens,
    pub(crate) trust_domain: String,
    pub(crate) cert_ttl: Duration,
    pub(crate) resources: watch::Sender<Arc<Resources>>,
    /// The last accepted input of each source, combined into `resources`.
    pub(crate) inputs: Mutex<Inputs>,
    /// The Kubernetes source's state, with `--kubernetes`.
    pub(crate) kubernetes: Option<Arc<KubernetesStatus>>,
    /// Checks ServiceAccount tokens, with `--kubernetes`.
    pub(crate) reviewer: Option<Box<dyn TokenReviewer>>,
    /// Why the files were last rejected (the previous resources still serve).
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    pub(crate) next_id: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) acceptor: ArcSwap<tokio_rustls::TlsAcceptor>,
}

impl ControlPlane {
    pub(crate) fn new(
        ca: CertificateAuthority,
        trust_domain: String,
        cert_ttl: Duration,
        inputs: Inputs,
        kubernetes: Option<Arc<KubernetesStatus>>,
        reviewer: Option<Box<dyn TokenReviewer>>,
    ) -> Result<Arc<ControlPlane>, String> {
        let initial = inputs.resources()?;
        let tokens = Tokens::from_ca_key(ca.key_pem());
        let acceptor = server_acceptor(&ca, &trust_domain)?;
        Ok(Arc::new(ControlPlane {
            tokens,
            trust_domain,
            cert_ttl,
            resources: watch::channel(Arc::new(initial)).0,
            inputs: Mutex::new(inputs),
            kubernetes,
            reviewer,
            last_error: Mutex::new(None),
            proxies: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            acceptor: ArcSwap::from_pointee(acceptor),
            ca,
        }))
    }

    /// Re-issues the serving certificate (it is as short-lived as any).
    pub(crate) fn refresh_serving_cert(&self) -> Result<(), String> {
        self.acceptor
            .store(Arc::new(server_acceptor(&self.ca, &self.trust_domain)?));
        Ok(())
    }

    pub(crate) fn identity_for(&self, namespace: &str, sa: &str) -> Result<SpiffeId, String> {
        SpiffeId::new(&self.trust_domain, namespace, sa).map_err(|e| e.to_string())
    }
}

/// Seconds since the epoch, for the admin page.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// TLS 1.3 server config presenting the control plane's own SPIFFE ID, with
/// client certificates optional (bootstrap) but verified when sent.
fn server_acceptor(
    ca: &CertificateAuthority,
    trust_domain: &str,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let id = SpiffeId::new(
        trust_domain,
        api::CONTROL_PLANE_NAMESPACE,
        api::CONTROL_PLANE_SERVICE_ACCOUNT,
    )
    .map_err(|e| e.to_string())?;
    let key = WorkloadKey::generate(&id).map_err(|e| e.to_string())?;
    let issued = ca.sign_csr(key.csr_pem(), &id).map_err(|e| e.to_string())?;
    let identity = key.into_identity(vec![issued.der]);
    let config = weft_mesh::identity::server_config_optional_client(&identity, &ca.trust_bundle())
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(config))
}
