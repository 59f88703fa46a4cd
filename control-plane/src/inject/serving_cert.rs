//! The webhook's serving certificate: issued by the mesh CA (so the
//! `caBundle` the control plane keeps current is the mesh root, and no
//! other CA is needed) for the control plane's Service names
//! `weft-control-plane.<namespace>.svc` and
//! `weft-control-plane.<namespace>.svc.cluster.local`, as short-lived as a
//! workload certificate and re-issued at half its life.

use super::settings::SERVICE;
use crate::ca::CertificateAuthority;
use crate::state::ControlPlane;
use arc_swap::ArcSwap;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// How far `not_before` is back-dated for clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The DNS names the API server reaches the webhook by.
pub(crate) fn names(namespace: &str) -> [String; 2] {
    [
        format!("{SERVICE}.{namespace}.svc"),
        format!("{SERVICE}.{namespace}.svc.cluster.local"),
    ]
}

/// A TLS acceptor presenting a fresh certificate for [`names`], valid for
/// `ttl`, signed by `ca`.
pub(crate) fn acceptor(
    ca: &CertificateAuthority,
    namespace: &str,
    ttl: Duration,
) -> Result<TlsAcceptor, String> {
    fn err(what: &'static str) -> impl Fn(rcgen::Error) -> String {
        move |e| format!("webhook certificate: {what}: {e}")
    }
    let ca_key = KeyPair::from_pem(ca.key_pem()).map_err(err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(ca.cert_pem(), ca_key).map_err(err("CA"))?;
    let key = KeyPair::generate().map_err(err("key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Weft");
    dn.push(DnType::CommonName, names(namespace)[0].clone());
    params.distinguished_name = dn;
    params.subject_alt_names = names(namespace)
        .into_iter()
        .map(|n| n.try_into().map(SanType::DnsName))
        .collect::<Result<_, _>>()
        .map_err(err("name"))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + ttl).into();
    let cert = params.signed_by(&key, &issuer).map_err(err("sign"))?;
    let chain = vec![cert.der().clone(), ca.cert_der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("webhook TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("webhook TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Re-issues the certificate in `slot` at half of `ttl`, for ever; a
/// failure keeps the current one and is retried a minute later.
pub(crate) async fn renew(
    slot: Arc<ArcSwap<TlsAcceptor>>,
    cp: Arc<ControlPlane>,
    namespace: String,
    ttl: Duration,
) {
    let mut wait = ttl / 2;
    loop {
        tokio::time::sleep(wait).await;
        match acceptor(&cp.ca, &namespace, ttl) {
            Ok(a) => {
                slot.store(Arc::new(a));
                tracing::info!("webhook serving certificate renewed");
                wait = ttl / 2;
            }
            Err(e) => {
                tracing::error!("{e}; keeping the current one");
                wait = Duration::from_secs(60).min(ttl / 4);
            }
        }
    }
}
