//! rustls verifiers that authenticate mesh peers by SPIFFE ID.
//!
//! Sidecars dial each other by IP, so the DNS name rustls would normally check
//! says nothing about who answered. Both verifiers therefore keep rustls'
//! WebPKI chain, signature and validity-period checks and replace the name
//! check with the SPIFFE rule: the leaf must carry exactly one URI SAN and it
//! must be a well-formed `spiffe://` ID (and, on the client side, exactly the
//! one the endpoint was expected to be).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{Error as TlsError, SignatureScheme};

use super::SpiffeId;

/// Reads the SPIFFE ID of a DER certificate, if it has exactly one URI SAN
/// and that SAN is a well-formed mesh SPIFFE ID.
///
/// Exposed so that the verifiers, [`super::peer_identity`] and the tests all
/// apply the same "exactly one URI SAN" rule from the X.509-SVID spec.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = x509.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let uri = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    SpiffeId::parse(uri).ok()
}

/// Client-side (outbound) verifier: accepts a server only if its chain leads
/// to the mesh trust anchors and its SPIFFE ID is exactly `expected`.
///
/// The `server_name` rustls passes in is ignored on purpose: outbound
/// connections are made to endpoint IPs, and the identity that matters is the
/// one the Backend endpoint advertised.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// Builds a verifier for one expected peer; `algs` comes from the crypto
    /// provider so signature support matches the handshake's provider.
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: SpiffeId,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self {
            roots,
            expected,
            algs,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        match spiffe_id_of(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            other => {
                tracing::debug!(
                    expected = %self.expected,
                    presented = ?other.as_ref().map(SpiffeId::as_str),
                    "peer SPIFFE ID mismatch"
                );
                Err(TlsError::InvalidCertificate(
                    CertificateError::NotValidForName,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Server-side (inbound) verifier: requires a client certificate that chains
/// to the mesh trust anchors and carries a well-formed SPIFFE ID.
///
/// Which identities may call which service is an authorization decision made
/// later from [`super::peer_identity`]; this verifier only guarantees that the
/// identity it exposes is authentic.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    mandatory: bool,
}

impl SpiffeClientVerifier {
    /// Wraps rustls' WebPKI client verifier (mandatory client auth, no CRLs).
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
        Ok(Self {
            inner,
            mandatory: true,
        })
    }

    /// Like [`SpiffeClientVerifier::new`], but a client may also send no
    /// certificate at all (the control plane's bootstrap requests); one that
    /// is sent is verified all the same.
    pub fn optional(
        roots: Arc<RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let mut v = Self::new(roots, provider)?;
        v.mandatory = false;
        Ok(v)
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_id_of(end_entity).is_none() {
            tracing::debug!("client certificate has no single valid SPIFFE URI SAN");
            return Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
