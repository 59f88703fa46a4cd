//! The HTTPS side: a CA of the fake's own, the serving certificate
//! (`127.0.0.1`, `localhost`), client certificates for any user and groups,
//! and the accept loop (rustls with the aws-lc-rs provider, HTTP/1.1 and h2
//! by ALPN, hyper 1). A client certificate is optional at the TLS layer so
//! bearer-token clients connect too; authentication happens per request.

use super::auth::{self, User};
use super::router::{self, Body, Reply, Request};
use super::State;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The fake's certificate authority and serving certificate.
pub struct Pki {
    pub ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

impl Pki {
    pub fn generate() -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "weft kube-fake CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&key).expect("CA certificate");
        let issuer = Issuer::new(params, key);
        let server_key = KeyPair::generate().expect("server key");
        let mut sp = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("server names");
        sp.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let server = sp
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            issuer,
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
        }
    }

    /// A client certificate and key (PEM) for `user` in `groups` (O=).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("fake CA");
        Arc::new(roots)
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots(),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A client config trusting the fake, presenting `cert` when given.
    pub fn client_config(&self, cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(self.roots());
        let mut config = match cert {
            Some((c, k)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.as_bytes()).expect("cert PEM")],
                    PrivateKeyDer::from_pem_slice(k.as_bytes()).expect("key PEM"),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A watch body: each message is one event line, sent as it comes.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A Reply as an HTTP response, with the headers every apiserver answer has.
pub fn into_response(reply: Reply) -> http::Response<ResponseBody> {
    let mut b = http::Response::builder().status(reply.code);
    let has_cache = reply.headers.iter().any(|(k, _)| k == "Cache-Control");
    if !has_cache {
        b = b.header("Cache-Control", "no-cache, private");
    }
    if let Some(ct) = &reply.content_type {
        b = b.header("Content-Type", ct);
    }
    for (k, v) in &reply.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b = b.header(
        "Date",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    let body: ResponseBody = match reply.body {
        Body::Json(v) => {
            let mut s = v.to_string();
            s.push('\n');
            Full::new(Bytes::from(s)).boxed_unsync()
        }
        Body::Text(t) => Full::new(Bytes::from(t)).boxed_unsync(),
        Body::Empty => Empty::new().boxed_unsync(),
        Body::Stream(rx) => ChannelBody(rx).boxed_unsync(),
    };
    b.body(body).expect("response")
}

/// Authenticates and answers one request.
async fn serve(
    state: Arc<State>,
    cert_user: Option<User>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let user = match (cert_user, bearer) {
        (Some(u), _) => u,
        (None, Some(t)) => match auth::from_bearer(&state, t.trim()) {
            Some(u) => u,
            None => {
                return Ok(into_response(
                    super::errors::ApiError::unauthorized().into(),
                ))
            }
        },
        (None, None) => User::anonymous_user(),
    };
    let request = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: router::parse_query(parts.uri.query().unwrap_or("")),
        headers: parts.headers,
        body,
        user,
    };
    // A handler that panics (a body shaped so unexpectedly that a kind's
    // defaulting trips over it) answers 500 instead of dropping the
    // connection.
    let reply = match tokio::spawn(router::handle(state, request)).await {
        Ok(r) => r,
        Err(e) => {
            super::errors::ApiError::internal(format!("the fake API server failed: {e}")).into()
        }
    };
    Ok(into_response(reply))
}

/// Counts one open connection in `live` while it exists.
struct Live(tokio::sync::watch::Sender<usize>);

impl Live {
    fn new(live: &tokio::sync::watch::Sender<usize>) -> Live {
        live.send_modify(|n| *n += 1);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Accepts connections until the task is aborted.
pub async fn run(state: Arc<State>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let mut generation = state.generation.subscribe();
        let accepted_in = *generation.borrow_and_update();
        let live = Live::new(&state.live);
        tokio::spawn(async move {
            let _live = live;
            let serve_one = async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let cert_user = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| auth::from_certificate(c));
                let svc = hyper::service::service_fn(move |req| {
                    serve(state.clone(), cert_user.clone(), req)
                });
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            };
            // Dropping the connection (handshake included) when the fake
            // stops closes the socket, as a dying apiserver would.
            tokio::select! {
                _ = serve_one => {}
                _ = generation.wait_for(|g| *g != accepted_in) => {}
            }
        });
    }
}
