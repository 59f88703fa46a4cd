//! A workload's certificate and key, the mesh trust anchors, and reading
//! both from PEM files.

use super::Error;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::fmt;
use std::sync::Arc;

/// A workload's own credentials: its certificate chain (leaf first) and key.
///
/// Presented in both directions, since every mesh connection is mutual.
pub struct Identity {
    /// Leaf first, then any intermediates (not the root).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key; never leaves the process.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is deliberately left out so it cannot end up in logs.
        f.debug_struct("Identity")
            .field("cert_chain", &self.cert_chain.len())
            .field(
                "spiffe_id",
                &self
                    .cert_chain
                    .first()
                    .and_then(super::verify::spiffe_id_of),
            )
            .finish_non_exhaustive()
    }
}

/// The mesh trust anchors: the CA roots every peer's chain must end at.
///
/// Several roots may be present at once so the CA can be rotated without a
/// flag day.
#[derive(Clone, Debug, Default)]
pub struct TrustBundle {
    /// DER-encoded root certificates.
    pub roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    pub(super) fn root_store(&self) -> Result<Arc<RootCertStore>, Error> {
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(self.roots.iter().cloned());
        if added == 0 {
            return Err(Error::TrustBundle(format!(
                "no usable root certificate ({ignored} rejected)"
            )));
        }
        Ok(Arc::new(store))
    }
}

/// The certificates of a PEM file (at least one); errors name the file.
pub fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_pem_certs(&pem, &path.display().to_string())
}

/// The certificates of PEM text (at least one); errors name `origin` (a
/// file, a flag).
pub fn parse_pem_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{origin}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{origin}: no certificate found"));
    }
    Ok(certs)
}

/// The private key of a PEM file; errors name the file.
pub fn read_pem_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", path.display()))
}
