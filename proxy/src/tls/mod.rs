//! Mesh identities: SPIFFE IDs, workload certificates and mTLS configs.
//!
//! Every workload holds an X.509-SVID (a leaf whose only URI SAN is its
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` ID) issued by the mesh CA. Peers
//! authenticate each other by that ID rather than by DNS name, because
//! sidecars talk to endpoint IPs. This module builds the rustls configs for
//! both directions; [`mesh::MeshTls`] holds what the data path uses.

pub mod ca;
pub mod handshake;
pub mod identity;
pub mod mesh;
pub mod verify;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, CommonState, RootCertStore, ServerConfig};

/// ALPN protocols offered and accepted on mesh connections, preferred first,
/// so both HTTP/2 and HTTP/1.1 traffic can ride the same mTLS listener.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Errors building identities and TLS configs, kept in one type so callers
/// (proxy startup, control-plane CA) can report them uniformly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The string is not a mesh SPIFFE ID of the form `spiffe://td/ns/x/sa/y`.
    #[error("invalid SPIFFE ID {id:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected input.
        id: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The trust bundle holds no usable root certificate.
    #[error("trust bundle: {0}")]
    TrustBundle(String),
    /// rustls rejected the key, certificates or protocol settings.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// rustls could not build the client-certificate verifier.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// Key generation, CSR handling or signing failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A PEM input held no certificate or key where one was expected.
    #[error("pem: {0}")]
    Pem(String),
}

/// A validated mesh SPIFFE ID (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
///
/// A newtype so that an unchecked string can never reach a verifier or the CA:
/// the only way to get one is [`SpiffeId::parse`] (or [`SpiffeId::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl SpiffeId {
    /// Parses and validates a mesh SPIFFE ID; rejects anything that is not
    /// exactly `spiffe://td/ns/x/sa/y` (no port, user info, query, fragment,
    /// upper-case trust domain, empty or extra segments).
    pub fn parse(s: &str) -> Result<SpiffeId, Error> {
        let bad = |reason| Error::InvalidSpiffeId {
            id: s.to_string(),
            reason,
        };
        if s.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing path /ns/<ns>/sa/<sa>"))?;
        if !valid_trust_domain(td) {
            return Err(bad("trust domain must be non-empty [a-z0-9.-_]"));
        }
        let segs: Vec<&str> = path.split('/').collect();
        match segs.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => {
                Ok(SpiffeId(s.to_string()))
            }
            ["ns", _, "sa", _] => Err(bad("namespace and service account must be [A-Za-z0-9.-_]")),
            _ => Err(bad("path must be exactly /ns/<ns>/sa/<sa>")),
        }
    }

    /// Builds the ID for a workload from its parts, validating the result.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The full URI, as written in the certificate's URI SAN.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (&str, &str, &str) {
        let rest = &self.0["spiffe://".len()..];
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut it = path.split('/');
        let ns = it.nth(1).unwrap_or("");
        let sa = it.nth(1).unwrap_or("");
        (td, ns, sa)
    }

    /// The trust domain, which names the CA whose roots must vouch for it.
    pub fn trust_domain(&self) -> &str {
        self.parts().0
    }

    /// The Kubernetes-style namespace of the workload.
    pub fn namespace(&self) -> &str {
        self.parts().1
    }

    /// The service account the workload runs as.
    pub fn service_account(&self) -> &str {
        self.parts().2
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

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
                &self.cert_chain.first().and_then(verify::spiffe_id_of),
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
    fn root_store(&self) -> Result<Arc<RootCertStore>, Error> {
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
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file; errors name the file.
pub fn read_pem_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The crypto provider for mesh TLS, chosen explicitly (ring) instead of
/// relying on a process-wide default that another crate could install.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the outbound (client) config for connecting to one peer whose
/// SPIFFE ID must be exactly `expected_peer` (the Backend endpoint's
/// `identity`). TLS 1.3 only, ALPN `h2` then `http/1.1`, presents `identity`.
///
/// The server name given to the connector is ignored by the verifier, so an
/// IP-address `ServerName` is fine.
pub fn client_config(
    identity: &Identity,
    trust: &TrustBundle,
    expected_peer: SpiffeId,
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = spiffe_client(trust, expected_peer)?
        .with_client_auth_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config that presents no certificate (a proxy's first request to
/// the control plane, before it has one) but verifies the server exactly.
pub fn client_config_anonymous(
    trust: &TrustBundle,
    expected_peer: SpiffeId,
) -> Result<Arc<ClientConfig>, Error> {
    let mut config = spiffe_client(trust, expected_peer)?.with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TLS 1.3 only, verifying the server as exactly `expected_peer`.
fn spiffe_client(
    trust: &TrustBundle,
    expected_peer: SpiffeId,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, Error> {
    let provider = provider();
    let verifier = verify::SpiffeServerVerifier::new(
        trust.root_store()?,
        expected_peer,
        provider.signature_verification_algorithms,
    );
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier)))
}

/// The control plane's server config: like [`server_config`], but a client
/// certificate is optional (bootstrap requests come without one).
pub fn server_config_optional_client(
    identity: &Identity,
    trust: &TrustBundle,
) -> Result<Arc<ServerConfig>, Error> {
    spiffe_server(identity, trust, false)
}

/// Builds the inbound (server) config: TLS 1.3 only, ALPN `h2` then
/// `http/1.1`, presents `identity` and requires a client certificate chaining
/// to `trust` with a valid SPIFFE ID (read it back with [`peer_identity`]).
pub fn server_config(identity: &Identity, trust: &TrustBundle) -> Result<Arc<ServerConfig>, Error> {
    spiffe_server(identity, trust, true)
}

fn spiffe_server(
    identity: &Identity,
    trust: &TrustBundle,
    client_cert_required: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let roots = trust.root_store()?;
    let verifier = match client_cert_required {
        true => verify::SpiffeClientVerifier::new(roots, provider.clone())?,
        false => verify::SpiffeClientVerifier::optional(roots, provider.clone())?,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The authenticated SPIFFE ID of the peer on an established connection
/// (`&ServerConnection` derefs to `&CommonState`), for authorization and
/// telemetry. `None` before the handshake completes or if the peer sent no
/// certificate.
pub fn peer_identity(conn: &CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    verify::spiffe_id_of(leaf).map(|id| id.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://weft.local/ns/default/sa/reviews").unwrap();
        assert_eq!(id.trust_domain(), "weft.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(id.to_string(), "spiffe://weft.local/ns/default/sa/reviews");
        assert_eq!(
            SpiffeId::new("weft.local", "default", "reviews").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "https://weft.local/ns/default/sa/reviews",
            "spiffe://",
            "spiffe://weft.local",
            "spiffe://weft.local/",
            "spiffe:///ns/default/sa/reviews",
            "spiffe://Weft.local/ns/default/sa/reviews",
            "spiffe://weft.local:443/ns/default/sa/reviews",
            "spiffe://user@weft.local/ns/default/sa/reviews",
            "spiffe://weft.local/ns/default/sa/reviews/",
            "spiffe://weft.local/ns/default/sa/reviews/extra",
            "spiffe://weft.local/ns//sa/reviews",
            "spiffe://weft.local/ns/default/sa/",
            "spiffe://weft.local/ns/default/sa/..",
            "spiffe://weft.local/ns/default/sa/reviews?x=1",
            "spiffe://weft.local/ns/default/sa/reviews#f",
            "spiffe://weft.local/sa/reviews/ns/default",
            "SPIFFE://weft.local/ns/default/sa/reviews",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
