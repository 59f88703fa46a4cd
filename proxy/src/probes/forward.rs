//! Asking the app one of its own probes, as the kubelet would have: a fresh
//! HTTP/1.1 connection to `127.0.0.1:<port>`, TLS for an HTTPS probe with
//! no certificate verification (the kubelet verifies none either, and the
//! app's certificate is not the mesh's), the probe's headers, and the whole
//! exchange within the probe's timeout. The answer is the app's status and
//! the start of its body, none of its headers (a 3xx without `Location` is
//! a success to the kubelet rather than a redirect it would follow to a
//! path this listener does not serve); what went wrong otherwise is a 503
//! saying why.

use super::app::AppProbe;
use crate::body::ResponseBody;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The kubelet reads at most this much of a probe's body; so does the forward.
const MAX_BODY: usize = 10 * 1024;

/// Incoming headers passed on to the app unless the probe lists its own.
const PASSED_ON: [header::HeaderName; 2] = [header::USER_AGENT, header::ACCEPT];

/// Forwards `probe` to the app and answers with the app's status.
pub(crate) async fn forward(probe: &AppProbe, incoming: &HeaderMap) -> Response<ResponseBody> {
    match tokio::time::timeout(probe.timeout, ask(probe, incoming)).await {
        Ok(Ok((status, body))) => {
            let mut r = Response::new(ResponseBody::full(body));
            *r.status_mut() = status;
            r
        }
        Ok(Err(e)) => unavailable(format!("probe of the app failed: {e}\n")),
        Err(_) => unavailable(format!(
            "probe of the app timed out after {:?}\n",
            probe.timeout
        )),
    }
}

fn unavailable(why: String) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(why));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn ask(probe: &AppProbe, incoming: &HeaderMap) -> Result<(StatusCode, Bytes), BoxError> {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, probe.port)).await?;
    let _ = tcp.set_nodelay(true);
    let req = request(probe, incoming)?;
    if probe.https {
        let connector = tokio_rustls::TlsConnector::from(insecure_client()?);
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let tls = connector.connect(name, tcp).await?;
        exchange(tls, req).await
    } else {
        exchange(tcp, req).await
    }
}

fn request(probe: &AppProbe, incoming: &HeaderMap) -> Result<Request<Empty<Bytes>>, BoxError> {
    let mut req = Request::get(probe.path.as_str()).body(Empty::new())?;
    let headers = req.headers_mut();
    headers.insert(
        header::HOST,
        HeaderValue::try_from(format!("127.0.0.1:{}", probe.port))?,
    );
    for name in PASSED_ON {
        if let Some(v) = incoming.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    // The probe's own headers replace the defaults above, as the kubelet's do.
    for (name, _) in &probe.headers {
        headers.remove(name);
    }
    for (name, value) in &probe.headers {
        headers.append(name.clone(), value.clone());
    }
    Ok(req)
}

async fn exchange<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<(StatusCode, Bytes), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let conn = tokio::spawn(conn);
    let resp = send.send_request(req).await;
    let result = match resp {
        Ok(resp) => {
            let status = resp.status();
            let mut body = resp.into_body();
            let mut kept = BytesMut::new();
            while kept.len() < MAX_BODY {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = MAX_BODY - kept.len();
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    // A body cut short still carried the status the kubelet judges by.
                    Some(Err(_)) | None => break,
                }
            }
            Ok((status, kept.freeze()))
        }
        Err(e) => Err(e.into()),
    };
    conn.abort();
    result
}

/// The client config of HTTPS probes, built once.
fn insecure_client() -> Result<Arc<ClientConfig>, BoxError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = weft_mesh::identity::crypto_provider();
            let verifier = AnyCertificate(provider.signature_verification_algorithms);
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(Into::into)
}

/// Accepts any server certificate, for the app's HTTPS probe on loopback
/// only: the kubelet does not verify it either, and it names the app's
/// public identity, not 127.0.0.1. The handshake's signature is still
/// checked against the certificate presented, so the session is at least
/// with whoever holds that certificate's key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
