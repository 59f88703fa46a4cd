//! What the control plane holds while it runs: the CA and tokens, the
//! resources in force (published to every watch), the connected proxies
//! and counters for the admin page. Nothing here outlives the process:
//! the truth is the resources' source and the CA directory, and proxies
//! re-send what they hold when they reconnect.

use crate::ca::CertificateAuthority;
use crate::resources::Resources;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_mesh::api;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::token::Tokens;
use weft_mesh::identity::SpiffeId;

/// What the admin endpoint shows of one connected proxy.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProxyStatus {
    pub name: String,
    pub identity: String,
    pub service: Option<String>,
    pub namespace: String,
    pub peer: String,
    pub connected_at: u64,
    /// Names it asked for; the ones that resolve are in its snapshot.
    pub wants: Vec<String>,
    /// The resources version its snapshot was last cut from.
    pub resources: Option<String>,
    /// Its snapshot's version now, the last sent, and the last acknowledged.
    pub current: Option<String>,
    pub sent: Option<String>,
    pub acked: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Nack {
    pub version: String,
    pub reason: String,
    pub at: u64,
}

#[derive(Default)]
pub struct Counters {
    pub pushes: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub certificates: AtomicU64,
    pub certificate_denials: AtomicU64,
    pub rejected_reloads: AtomicU64,
}

pub struct ControlPlane {
    pub ca: CertificateAuthority,
    pub tokens: Tokens,
    pub trust_domain: String,
    pub cert_ttl: Duration,
    pub resources: watch::Sender<Arc<Resources>>,
    /// Why the files were last rejected (the previous resources still serve).
    pub last_error: Mutex<Option<String>>,
    pub proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    pub(crate) next_id: AtomicU64,
    pub counters: Counters,
    pub(crate) acceptor: ArcSwap<tokio_rustls::TlsAcceptor>,
}

impl ControlPlane {
    pub fn new(
        ca: CertificateAuthority,
        trust_domain: String,
        cert_ttl: Duration,
        initial: Resources,
    ) -> Result<Arc<ControlPlane>, String> {
        let tokens = Tokens::from_ca_key(ca.key_pem());
        let acceptor = server_acceptor(&ca, &trust_domain)?;
        Ok(Arc::new(ControlPlane {
            tokens,
            trust_domain,
            cert_ttl,
            resources: watch::channel(Arc::new(initial)).0,
            last_error: Mutex::new(None),
            proxies: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            acceptor: ArcSwap::from_pointee(acceptor),
            ca,
        }))
    }

    /// Re-issues the serving certificate (it is as short-lived as any).
    pub fn refresh_serving_cert(&self) -> Result<(), String> {
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
