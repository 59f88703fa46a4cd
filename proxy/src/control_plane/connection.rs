//! One HTTP/2 connection to the control plane over TLS 1.3, verified as
//! the control plane's own SPIFFE ID; every call (a certificate request,
//! the config watch) opens its own.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::time::Duration;
use weft_mesh::api::{self, LineStream};
use weft_mesh::identity::{self, Identity, SpiffeId, TrustBundle};

/// Longest wait for a connection (TCP, TLS and HTTP/2 handshakes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request body: a whole message, or lines fed through a channel.
pub(crate) type CallBody = Either<Full<Bytes>, LineStream>;

/// Where the control plane is and who it must be.
pub(crate) struct Connector {
    /// `host:port`.
    authority: String,
    /// The control plane's own SPIFFE ID, verified exactly.
    expected: SpiffeId,
    trust: TrustBundle,
}

impl Connector {
    /// `url`: `https://host:port` (the scheme may be left out).
    pub(crate) fn new(url: &str, trust: TrustBundle, trust_domain: &str) -> Result<Self, String> {
        let authority = url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "--control-plane {url:?}: expected https://host:port"
            ));
        }
        let expected = SpiffeId::new(
            trust_domain,
            api::CONTROL_PLANE_NAMESPACE,
            api::CONTROL_PLANE_SERVICE_ACCOUNT,
        )
        .map_err(|e| e.to_string())?;
        Ok(Connector {
            authority,
            expected,
            trust,
        })
    }

    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The URI of an API path.
    pub(crate) fn uri(&self, path: &str) -> String {
        format!("https://{}{path}", self.authority)
    }

    /// A new connection, presenting `identity` if given (none before the
    /// first certificate).
    pub(crate) async fn connect(
        &self,
        identity: Option<&Identity>,
    ) -> Result<http2::SendRequest<CallBody>, String> {
        let config = match identity {
            Some(id) => identity::client_config(id, &self.trust, self.expected.clone()),
            None => identity::client_config_anonymous(&self.trust, self.expected.clone()),
        }
        .map_err(|e| e.to_string())?;
        let work = async {
            let tcp = tokio::net::TcpStream::connect(self.authority.as_str())
                .await
                .map_err(|e| format!("connect {}: {e}", self.authority))?;
            let _ = tcp.set_nodelay(true);
            // The verifier checks the SPIFFE ID, not the name.
            let name = rustls::pki_types::ServerName::try_from("control-plane.weft")
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with the control plane: {e}"))?;
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 with the control plane: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(tx)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| format!("connect {}: timed out", self.authority))?
    }
}
