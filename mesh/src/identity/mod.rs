//! Mesh identities: SPIFFE IDs, workload certificates, the CA that signs
//! them, bootstrap tokens and the mTLS configs both binaries build from them.
//!
//! Every workload holds an X.509-SVID (a leaf whose only URI SAN is its
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` ID) issued by the mesh CA. Peers
//! authenticate each other by that ID rather than by DNS name, because
//! sidecars talk to endpoint IPs.

pub mod ca;
mod credentials;
pub mod csr;
mod spiffe;
mod tls;
pub mod token;
pub mod verify;

pub use credentials::{parse_pem_certs, read_pem_certs, read_pem_key, Identity, TrustBundle};
pub use spiffe::SpiffeId;
pub use tls::{
    client_config, client_config_anonymous, crypto_provider, peer_identity, server_config,
    server_config_optional_client, ALPN, MESH_KX_GROUPS,
};

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
