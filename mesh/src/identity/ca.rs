//! The mesh certificate authority's signing core.
//!
//! It lives in the proxy library (not the control-plane binary) so the
//! control plane can serve it and the proxy's TLS tests can issue real
//! certificates with exactly the code production uses.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;

use super::{Error, SpiffeId, TrustBundle};

/// Default lifetime of a workload certificate: short, so a leaked key is
/// useful only briefly and revocation lists are unnecessary.
pub(crate) const DEFAULT_LEAF_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Lifetime of a generated root; the root is rotated by adding a second one to
/// the trust bundle well before this runs out.
pub(crate) const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// How far `not_before` is back-dated to tolerate clock skew between nodes.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate issued by the CA: DER for TLS, PEM for shipping to a proxy.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The DER-encoded leaf.
    pub der: CertificateDer<'static>,
    /// The same certificate, PEM-encoded.
    pub pem: String,
}

/// A mesh CA: a root certificate and its key, able to sign workload CSRs.
///
/// The CA never copies names from a CSR: the caller authenticates the
/// workload (e.g. from its service-account token) and passes the authorised
/// [`SpiffeId`], which becomes the leaf's only SAN.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the signing key.
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and non-zero, as RFC 5280 requires.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl CertificateAuthority {
    /// Generates a new self-signed root for `trust_domain` (first start).
    /// Its CN names the mesh CA so it is never confused with a leaf.
    pub fn generate(trust_domain: &str) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Weft");
        dn.push(DnType::CommonName, format!("Weft mesh CA {trust_domain}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_TTL).into();
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing root from its PEM certificate and PEM private key
    /// (restarts, or a root provisioned by an operator).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, Error> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Pem(format!("CA certificate: {e}")))?;
        Ok(Self {
            issuer,
            cert_der,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The root certificate, PEM-encoded (to persist or distribute).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's private key, PEM-encoded (to persist; keep it secret).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The root certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A trust bundle holding just this root, for the proxies to verify peers.
    pub fn trust_bundle(&self) -> TrustBundle {
        TrustBundle {
            roots: vec![self.cert_der.clone()],
        }
    }

    /// Signs `csr_pem` for the authorised `id`, valid for [`DEFAULT_LEAF_TTL`].
    pub fn sign_csr(&self, csr_pem: &str, id: &SpiffeId) -> Result<IssuedCert, Error> {
        let now = SystemTime::now();
        self.sign_csr_with_validity(csr_pem, id, now - BACKDATE, now + DEFAULT_LEAF_TTL)
    }

    /// Signs `csr_pem` for the authorised `id` with an explicit validity
    /// window (custom lifetimes; tests issue already-expired certificates).
    ///
    /// Only the CSR's public key (after its self-signature is checked) is
    /// used; its subject, SANs and extensions are discarded.
    pub fn sign_csr_with_validity(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, Error> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        csr.params = Self::leaf_params(id, not_before, not_after)?;
        let cert = csr.signed_by(&self.issuer)?;
        Ok(IssuedCert {
            der: cert.der().clone(),
            pem: cert.pem(),
        })
    }

    fn leaf_params(
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Weft");
        // Distinct from the CA's CN, so no client mistakes a leaf for a root.
        dn.push(
            DnType::CommonName,
            format!("{}.{}", id.service_account(), id.namespace()),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        Ok(params)
    }
}
