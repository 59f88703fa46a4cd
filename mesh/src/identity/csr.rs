//! Workload key generation and certificate signing requests.
//!
//! The proxy creates its private key in memory and only ever sends the CSR to
//! the CA, so the key never leaves the pod and never touches disk.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Error, Identity, SpiffeId};

/// A freshly generated workload key plus the CSR asking for `id`.
///
/// Kept together so the certificate the CA returns can be paired with the
/// key that requested it ([`WorkloadKey::into_identity`]).
pub struct WorkloadKey {
    key: KeyPair,
    id: SpiffeId,
    csr_pem: String,
}

impl WorkloadKey {
    /// Generates an ECDSA P-256 key and a CSR whose only URI SAN is `id`
    /// (subject CN `<sa>.<ns>`). The CA does not trust these fields (it sets the SAN from
    /// the identity it authorised), but they make the request self-describing.
    pub fn generate(id: &SpiffeId) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("{}.{}", id.service_account(), id.namespace()),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        let csr_pem = params.serialize_request(&key)?.pem()?;
        Ok(Self {
            key,
            id: id.clone(),
            csr_pem,
        })
    }

    /// The PEM-encoded CSR to send to the CA.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The identity this key was generated for.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Pairs the CA-issued chain (leaf first) with this key, producing the
    /// [`Identity`] the TLS configs present.
    pub fn into_identity(self, cert_chain: Vec<CertificateDer<'static>>) -> Identity {
        Identity {
            cert_chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der())),
        }
    }
}
