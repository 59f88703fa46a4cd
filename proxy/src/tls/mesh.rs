//! The proxy's own mesh credentials, loaded once at startup (file mode:
//! `--identity-dir` with `cert.pem`, `key.pem`, `ca.pem`), and the TLS
//! configs the data path uses with them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
use tokio_rustls::TlsAcceptor;

use weft_mesh::identity::{
    client_config, read_pem_certs, read_pem_key, server_config, verify, Error, Identity, SpiffeId,
    TrustBundle,
};

/// Request header carrying the verified SPIFFE ID of the calling workload to
/// the app (inbound). Whatever a client sends under this name is dropped.
pub(crate) const PEER_IDENTITY_HEADER: &str = "x-weft-peer-identity";

/// The ALPN protocol of opaque TCP between sidecars: the outbound side
/// offers only this for intercepted non-HTTP traffic, and the inbound side,
/// seeing it negotiated, forwards the decrypted bytes to the app instead of
/// serving HTTP. A sidecar that does not know it fails the handshake
/// (`no_application_protocol`) rather than misreading the bytes as HTTP.
pub(crate) const TCP_ALPN: &[u8] = b"weft-tcp";

/// What a client config offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Alpn {
    /// `h2`, `http/1.1`.
    Http,
    /// `http/1.1` only (upgrades).
    Http1,
    /// [`TCP_ALPN`] only (opaque TCP).
    Tcp,
}

/// Outbound configs by (expected peer, ALPN offered).
type ClientConfigs = HashMap<(Arc<str>, Alpn), Arc<ClientConfig>>;

/// This workload's identity, the trust bundle, and the configs built from them.
pub(crate) struct MeshTls {
    /// Our own SPIFFE ID (from the leaf's URI SAN).
    pub(crate) id: SpiffeId,
    identity: Identity,
    trust: TrustBundle,
    /// Terminates inbound mTLS (client certificate required).
    pub(crate) acceptor: TlsAcceptor,
    /// Outbound configs by (expected peer, ALPN offered).
    clients: Mutex<ClientConfigs>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").field("id", &self.id).finish()
    }
}

impl MeshTls {
    /// Builds the configs, checking that the leaf carries a SPIFFE ID.
    pub(crate) fn new(identity: Identity, trust: TrustBundle) -> Result<MeshTls, Error> {
        let id = identity
            .cert_chain
            .first()
            .and_then(verify::spiffe_id_of)
            .ok_or_else(|| Error::Pem("the certificate has no SPIFFE ID URI SAN".into()))?;
        let mut server = server_config(&identity, &trust)?;
        Arc::make_mut(&mut server)
            .alpn_protocols
            .push(TCP_ALPN.to_vec());
        // Fails early on a key that does not fit the certificate.
        client_config(&identity, &trust, id.clone())?;
        Ok(MeshTls {
            id,
            identity,
            trust,
            acceptor: TlsAcceptor::from(server),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Loads `dir/cert.pem` (leaf first), `dir/key.pem` and `dir/ca.pem`.
    pub(crate) fn load(dir: &Path) -> Result<MeshTls, String> {
        let cert_chain = read_pem_certs(&dir.join("cert.pem"))?;
        let roots = read_pem_certs(&dir.join("ca.pem"))?;
        let key = read_pem_key(&dir.join("key.pem"))?;
        MeshTls::new(Identity { cert_chain, key }, TrustBundle { roots })
            .map_err(|e| format!("identity in {}: {e}", dir.display()))
    }

    /// The credentials presented (also to the control plane, for renewal).
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The outbound config for a peer that must be exactly `peer`; with
    /// `h1_only` it offers only ALPN `http/1.1` (upgrades).
    pub(crate) fn client(
        &self,
        peer: &Arc<str>,
        h1_only: bool,
    ) -> Result<Arc<ClientConfig>, Error> {
        self.client_for(peer, if h1_only { Alpn::Http1 } else { Alpn::Http })
    }

    /// The outbound config for a peer that must be exactly `peer`, offering
    /// `alpn`.
    pub(crate) fn client_for(
        &self,
        peer: &Arc<str>,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, Error> {
        let key = (peer.clone(), alpn);
        if let Some(c) = self.clients.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let mut config = client_config(&self.identity, &self.trust, SpiffeId::parse(peer)?)?;
        match alpn {
            Alpn::Http => {}
            Alpn::Http1 => Arc::make_mut(&mut config).alpn_protocols = vec![b"http/1.1".to_vec()],
            Alpn::Tcp => Arc::make_mut(&mut config).alpn_protocols = vec![TCP_ALPN.to_vec()],
        }
        if let Ok(mut m) = self.clients.lock() {
            // Bounded by the distinct identities in the config; clear if it grows wild.
            if m.len() >= 1024 {
                m.clear();
            }
            m.insert(key, config.clone());
        }
        Ok(config)
    }
}
