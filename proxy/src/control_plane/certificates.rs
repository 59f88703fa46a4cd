//! Certificates from the control plane's CA: a CSR for a key made here
//! (it never leaves the process), proven by the current certificate while
//! it is valid, and otherwise (the first time, or after it expired) by a
//! [`Credential`]: a bootstrap token, or in Kubernetes a projected
//! ServiceAccount token read afresh from its file on every use (the
//! kubelet rotates it; a copy kept in memory would go stale).

use super::connection::Connector;
use crate::identity::{Issued, Issuer};
use crate::tls::mesh::MeshTls;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_mesh::api::{self, CertificateRequest, CertificateResponse};
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::{SpiffeId, TrustBundle};
use weft_mesh::process::lock;

/// Largest certificate response read.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// What proves this workload's identity when it has no valid certificate.
#[derive(Clone, Debug)]
pub(crate) enum Credential {
    /// `--bootstrap-token` (`weft-control-plane token`), file mode.
    Bootstrap(String),
    /// `--token-file`: a projected ServiceAccount token (audience `weft`),
    /// read on every use.
    TokenFile(PathBuf),
}

impl Credential {
    /// The token to send now.
    fn token(&self) -> Result<String, String> {
        match self {
            Credential::Bootstrap(t) => Ok(t.trim().to_string()),
            Credential::TokenFile(path) => {
                let read = || -> std::io::Result<String> {
                    let mut text = String::new();
                    std::fs::File::open(path)?
                        .take(MAX_TOKEN_FILE)
                        .read_to_string(&mut text)?;
                    Ok(text)
                };
                let text = read().map_err(|e| format!("--token-file {}: {e}", path.display()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(format!("--token-file {}: empty", path.display()));
                }
                Ok(token.to_string())
            }
        }
    }
}

/// Asks the control plane's CA for this workload's certificate.
pub(crate) struct CertificateClient {
    connector: Arc<Connector>,
    /// The identity this proxy is, and must be issued.
    id: SpiffeId,
    /// Proves the identity when there is no valid certificate.
    credential: Option<Credential>,
    /// When the last certificate issued expires.
    valid_until: Mutex<Option<SystemTime>>,
}

impl CertificateClient {
    pub(crate) fn new(
        connector: Arc<Connector>,
        id: SpiffeId,
        credential: Option<Credential>,
    ) -> Self {
        CertificateClient {
            connector,
            id,
            credential,
            valid_until: Mutex::new(None),
        }
    }

    async fn request(&self, current: Option<&MeshTls>) -> Result<Issued, String> {
        // An expired certificate proves nothing: the token does.
        let expired = lock(&self.valid_until).is_some_and(|t| t <= SystemTime::now());
        let current = current.filter(|_| !expired);
        let key = WorkloadKey::generate(&self.id).map_err(|e| e.to_string())?;
        let mut tx = self
            .connector
            .connect(current.map(MeshTls::identity))
            .await?;
        let body = serde_json::to_vec(&CertificateRequest {
            csr: key.csr_pem().to_string(),
        })
        .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.connector.uri(api::CERTIFICATE_PATH))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Either::Left(Full::new(Bytes::from(body))))
            .map_err(|e| e.to_string())?;
        if current.is_none() {
            let token = self
                .credential
                .as_ref()
                .ok_or(
                    "no certificate and no token to get one (--bootstrap-token or --token-file)",
                )?
                .token()?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token has characters a header cannot carry")?;
            v.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "the control plane refused a certificate ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let r: CertificateResponse =
            serde_json::from_slice(&body).map_err(|e| format!("certificate response: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(r.chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
        let roots = CertificateDer::pem_slice_iter(r.roots.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("trust bundle: {e}"))?;
        let mesh = MeshTls::new(key.into_identity(chain), TrustBundle { roots })
            .map_err(|e| e.to_string())?;
        if mesh.id != self.id {
            return Err(format!(
                "the control plane issued {} instead of {}",
                mesh.id, self.id
            ));
        }
        // The life is counted from now, not from a back-dated notBefore
        // (CAs back-date for clock skew), so renewal lands at the window's
        // share of the time actually left.
        let _ = r.not_before;
        let not_after = UNIX_EPOCH + Duration::from_secs(r.not_after);
        *lock(&self.valid_until) = Some(not_after);
        Ok(Issued {
            mesh,
            not_before: SystemTime::now(),
            not_after,
        })
    }
}

impl Issuer for CertificateClient {
    fn issue<'a>(
        &'a self,
        current: Option<&'a MeshTls>,
    ) -> Pin<Box<dyn Future<Output = Result<Issued, String>> + Send + 'a>> {
        Box::pin(self.request(current))
    }
}
