//! The control plane's certificate API as a test drives it by hand: one
//! HTTP/1.1 request over TLS (the server's chain kept), a CSR posted with a
//! bearer token as a sidecar without a certificate would, and checks on
//! what comes back (URI SANs, the chain to a root).

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_mesh::api::CertificateRequest;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::{SpiffeId, TrustBundle};

/// One HTTP/1.1 request over TLS with `config`; the status, the whole
/// answer and the server's certificate chain.
pub async fn tls_http1(
    addr: SocketAddr,
    config: &ClientConfig,
    head: &str,
    body: &[u8],
) -> (u16, String, Vec<CertificateDer<'static>>) {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("weft.test").unwrap(), tcp)
        .await
        .unwrap();
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).to_string();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, answer, chain)
}

/// POSTs a CSR for `csr_for` to the certificate API of the control plane
/// at `addr` with
/// `token`, as a sidecar without a certificate would.
pub async fn ask_certificate(
    addr: SocketAddr,
    trust: &TrustBundle,
    token: &str,
    csr_for: &str,
) -> (u16, String) {
    let id = SpiffeId::parse(csr_for).unwrap();
    let key = WorkloadKey::generate(&id).unwrap();
    let body = serde_json::to_vec(&CertificateRequest {
        csr: key.csr_pem().to_string(),
    })
    .unwrap();
    let expected =
        SpiffeId::parse("spiffe://weft.local/ns/weft-system/sa/weft-control-plane").unwrap();
    let config = weft_mesh::identity::client_config_anonymous(trust, expected).unwrap();
    let head = format!(
        "POST /v1/certificate HTTP/1.1\r\nHost: weft-control-plane\r\nContent-Type: application/json\r\nAuthorization: Bearer {token}"
    );
    let (status, answer, _) = tls_http1(addr, &config, &head, &body).await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = n {
                out.push(u.to_string());
            }
        }
    }
    out
}

/// Whether `chain_pem` (leaf first) chains to `ca`'s root.
pub fn chains_to(chain_pem: &str, ca: &CertificateAuthority) -> bool {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .is_ok()
}
