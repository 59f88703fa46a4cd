//! Mesh mode: the proxy's side of `weft-control-plane`.
//!
//! Three calls share one way of connecting ([`connection`]): certificate
//! requests ([`certificates`], which the identity manager asks when it is
//! time), the config watch ([`watch`], which feeds the pipeline), and
//! on-demand names ([`lookups`], which the request path asks through the
//! narrow `NameLookup` interface). The API itself is `weft_mesh::api`.

pub(crate) mod certificates;
mod connection;
pub(crate) mod lookups;
pub(crate) mod watch;

use certificates::CertificateClient;
pub(crate) use certificates::Credential;
use connection::Connector;
use lookups::Lookups;
use std::sync::Arc;
use watch::Introduction;
use weft_mesh::identity::{SpiffeId, TrustBundle};

/// Where the control plane is and who this proxy is.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `https://host:port` (the scheme may be left out).
    pub(crate) url: String,
    /// The mesh trust anchors, to verify the control plane.
    pub(crate) trust: TrustBundle,
    pub(crate) trust_domain: String,
    pub(crate) namespace: String,
    pub(crate) service_account: String,
    pub(crate) service: Option<String>,
    /// Proves the workload's identity when it has no valid certificate.
    pub(crate) credential: Option<Credential>,
    /// Names this instance in the control plane's list.
    pub(crate) name: String,
}

/// The pieces of a control-plane client, for `run` to wire up.
pub(crate) struct ControlPlane {
    pub(crate) connector: Arc<Connector>,
    pub(crate) certificates: Arc<CertificateClient>,
    pub(crate) lookups: Arc<Lookups>,
    pub(crate) introduction: Introduction,
}

impl ControlPlane {
    pub(crate) fn new(settings: Settings) -> Result<ControlPlane, String> {
        let connector = Arc::new(Connector::new(
            &settings.url,
            settings.trust,
            &settings.trust_domain,
        )?);
        let id = SpiffeId::new(
            &settings.trust_domain,
            &settings.namespace,
            &settings.service_account,
        )
        .map_err(|e| e.to_string())?;
        Ok(ControlPlane {
            certificates: Arc::new(CertificateClient::new(
                connector.clone(),
                id,
                settings.credential,
            )),
            connector,
            lookups: Arc::new(Lookups::default()),
            introduction: Introduction {
                name: settings.name,
                service: settings.service,
            },
        })
    }

    /// `host:port` of the control plane.
    pub(crate) fn authority(&self) -> &str {
        self.connector.authority()
    }
}

/// Where the mesh trust anchors come from: a PEM file, or the PEM text
/// itself (the injector's env, as the root ConfigMap lives only in the
/// control plane's namespace).
pub(crate) enum TrustSource<'a> {
    File(&'a std::path::Path),
    Pem(&'a str),
}

/// Reads the PEM trust anchors a proxy verifies the control plane with.
pub(crate) fn read_trust(source: TrustSource<'_>) -> Result<TrustBundle, String> {
    let roots = match source {
        TrustSource::File(path) => weft_mesh::identity::read_pem_certs(path)?,
        TrustSource::Pem(pem) => {
            weft_mesh::identity::parse_pem_certs(pem.as_bytes(), "--control-plane-ca-pem")?
        }
    };
    Ok(TrustBundle { roots })
}
