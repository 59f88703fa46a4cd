//! A webhook named by `clientConfig.url` instead of a Service: the API
//! server calls that URL itself, so `check` POSTs the dry-run review to it
//! directly, over HTTPS verified against the webhook's `caBundle` (the
//! trust the API server uses for it). Run off the cluster, the URL may
//! reach something else than the API server reaches, or nothing; the line
//! says where the review was sent.

use super::certs;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long the whole exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

/// POSTs `body` to `url`, trusting only the certificates of the base64 PEM
/// `ca_bundle`: the JSON answer, or why there is none.
pub(crate) async fn post(url: &str, ca_bundle: &str, body: &Value) -> Result<Value, String> {
    tokio::time::timeout(TIMEOUT, exchange(url, ca_bundle, body))
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))?
}

async fn exchange(url: &str, ca_bundle: &str, body: &Value) -> Result<Value, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("the API server calls webhooks over https only".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let roots = roots(ca_bundle)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("host {host:?}: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port} (verified against the caBundle): {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host.as_str(), |a| a.as_str());
    let request = http::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| format!("request: {e}"))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = answer.status();
    let bytes = Limited::new(answer.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let start: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
        return Err(format!("HTTP {status}: {:?}", start.trim()));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let start: String = String::from_utf8_lossy(&bytes).chars().take(120).collect();
        format!("the answer is not JSON ({e}): {start:?}")
    })
}

/// The trust roots of a base64 PEM caBundle.
fn roots(ca_bundle: &str) -> Result<rustls::RootCertStore, String> {
    if ca_bundle.is_empty() {
        return Err("no caBundle to verify it with".into());
    }
    let pem = certs::b64_decode(ca_bundle).ok_or("the caBundle is not base64")?;
    let bundle = certs::parse_pem(&pem).map_err(|e| format!("caBundle: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in bundle {
        roots
            .add(CertificateDer::from(cert.der.clone()))
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    /// An HTTPS server for `localhost` echoing the review's uid; its
    /// certificate's PEM.
    async fn server() -> (u16, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await?.to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let answer = json!({"path": path, "response": {"uid": review["request"]["uid"]}});
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                                answer.to_string(),
                            ))))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        (port, cert.pem())
    }

    fn b64(pem: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(pem)
    }

    #[tokio::test]
    async fn a_url_is_called_over_https_verified_against_the_ca_bundle_only() {
        let (port, pem) = server().await;
        let url = format!("https://localhost:{port}/inject");
        let review = json!({"request": {"uid": "u1"}});
        let answer = post(&url, &b64(&pem), &review).await.unwrap();
        assert_eq!(
            answer,
            json!({"path": "/inject", "response": {"uid": "u1"}})
        );

        let other = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let err = post(&url, &b64(&other), &review).await.unwrap_err();
        assert!(
            err.starts_with(&format!(
                "TLS with localhost:{port} (verified against the caBundle): "
            )),
            "{err}"
        );
        assert_eq!(
            post(&url, "", &review).await.unwrap_err(),
            "no caBundle to verify it with"
        );
        let plain = format!("http://localhost:{port}/inject");
        assert_eq!(
            post(&plain, &b64(&pem), &review).await.unwrap_err(),
            "the API server calls webhooks over https only"
        );
    }
}
