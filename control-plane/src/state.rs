//! What the control plane holds while it runs: the CA and tokens, the
//! resources in force (published to every watch), the connected proxies
//! and counters for the admin page. Nothing here outlives the process:
//! the truth is the resources' sources and the CA directory, and proxies
//! re-send what they hold when they reconnect.

use crate::ca::CertificateAuthority;
use crate::resources::{Inputs, Resources};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
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
    /// Services left out of the mesh, `(namespace/name, why)`.
    pub(crate) refused: Mutex<Vec<(String, String)>>,
}

impl KubernetesStatus {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "synced": self.synced.load(Ordering::Relaxed),
            "lists": self.lists.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "last_error": *lock(&self.last_error),
            "refused_services": lock(&self.refused)
                .iter()
                .map(|(service, reason)| serde_json::json!({"service": service, "reason": reason}))
                .collect::<Vec<_>>(),
        })
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) pushes: AtomicU64,
    pub(crate) acks: AtomicU64,
    pub(crate) nacks: AtomicU64,
    pub(crate) certificates: AtomicU64,
    pub(crate) certificate_denials: AtomicU64,
    pub(crate) rejected_reloads: AtomicU64,
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
