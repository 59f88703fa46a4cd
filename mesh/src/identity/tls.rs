//! The rustls configs of mesh connections, both directions: TLS 1.3 only,
//! post-quantum hybrid key exchange preferred, peers verified by SPIFFE ID
//! (see [`super::verify`]).

use super::{verify, Error, Identity, SpiffeId, TrustBundle};
use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::{ClientConfig, CommonState, ServerConfig};
use std::sync::Arc;

/// ALPN protocols offered and accepted on mesh connections, preferred first,
/// so both HTTP/2 and HTTP/1.1 traffic can ride the same mTLS listener.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Key exchange groups offered and accepted on mesh connections, preferred
/// first: the hybrid post-quantum `X25519MLKEM768` (ML-KEM-768 combined with
/// X25519, so a connection stays as strong as X25519 even if ML-KEM falls),
/// then plain `X25519` for peers that lack it. A client also sends the X25519
/// half of its hybrid share as an X25519 share of its own, so a
/// classical-only server answers without a `HelloRetryRequest`. The provider's
/// other defaults (P-256, P-384) are left out: every mesh peer is a Weft
/// sidecar or control plane, and all Weft builds speak X25519.
pub static MESH_KX_GROUPS: &[&dyn SupportedKxGroup] = &[
    aws_lc_rs::kx_group::X25519MLKEM768,
    aws_lc_rs::kx_group::X25519,
];

/// The crypto provider for every TLS connection Weft makes: rustls's
/// aws-lc-rs provider (the only one in the workspace; `ring` has no ML-KEM),
/// chosen explicitly instead of relying on a process-wide default that
/// another crate could install. Connections outside the mesh (the OTLP
/// collector) use it as is: its key exchange groups are `X25519MLKEM768`,
/// `X25519`, P-256 and P-384, in that order. Mesh connections narrow it to
/// [`MESH_KX_GROUPS`].
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// [`crypto_provider`] with only [`MESH_KX_GROUPS`].
fn mesh_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: MESH_KX_GROUPS.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

/// Builds the outbound (client) config for connecting to one peer whose
/// SPIFFE ID must be exactly `expected_peer` (the Backend endpoint's
/// `identity`). TLS 1.3 only, key exchange [`MESH_KX_GROUPS`], ALPN `h2`
/// then `http/1.1`, presents `identity`.
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

/// TLS 1.3 only, [`MESH_KX_GROUPS`], verifying the server as exactly
/// `expected_peer`.
fn spiffe_client(
    trust: &TrustBundle,
    expected_peer: SpiffeId,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, Error> {
    let provider = mesh_provider();
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

/// Builds the inbound (server) config: TLS 1.3 only, key exchange
/// [`MESH_KX_GROUPS`] (the client's preference order is followed, so the
/// hybrid group when the client offers it), ALPN `h2` then `http/1.1`, presents `identity` and requires a client certificate chaining
/// to `trust` with a valid SPIFFE ID (read it back with [`peer_identity`]).
pub fn server_config(identity: &Identity, trust: &TrustBundle) -> Result<Arc<ServerConfig>, Error> {
    spiffe_server(identity, trust, true)
}

fn spiffe_server(
    identity: &Identity,
    trust: &TrustBundle,
    client_cert_required: bool,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = mesh_provider();
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
    verify::spiffe_id_of(leaf).map(|id| id.as_str().to_owned())
}
