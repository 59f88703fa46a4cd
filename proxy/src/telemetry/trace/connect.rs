//! Connections to the collector: plain TCP for `http://` endpoints, TLS
//! (rustls, aws-lc-rs) for `https://` ones, verified against
//! `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE` or else the system's roots, and
//! presenting `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE`/`_CLIENT_KEY`
//! when both are set.

use super::settings::{Env, Protocol};
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Makes connections for the exporter's HTTP client.
#[derive(Clone)]
pub(super) struct Connector {
    tcp: HttpConnector,
    /// Set for an https endpoint.
    tls: Option<TlsConnector>,
}

impl Connector {
    /// The connector for `uri`; reads the certificates an https endpoint needs.
    pub(super) fn new(uri: &Uri, protocol: Protocol, env: &Env) -> Result<Connector, String> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let tls = match uri.scheme_str() {
            Some("https") => Some(TlsConnector::from(tls_config(protocol, env)?)),
            _ => None,
        };
        Ok(Connector { tcp, tls })
    }
}

/// The client TLS config for the collector.
fn tls_config(protocol: Protocol, env: &Env) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match &env.certificate {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("OTLP certificate {path}: {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "https OTLP endpoint: no system root certificates found ({}); set OTEL_EXPORTER_OTLP_CERTIFICATE",
                    found
                        .errors
                        .first()
                        .map_or("none installed".to_owned(), |e| e.to_string())
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(weft_mesh::identity::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&env.client_certificate, &env.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key = weft_mesh::identity::read_pem_key(Path::new(key))
                .map_err(|e| format!("OTLP client key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("OTLP client certificate {cert}: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together"
                    .to_owned(),
            )
        }
    };
    config.alpn_protocols = match protocol {
        Protocol::Grpc => vec![b"h2".to_vec()],
        Protocol::HttpProtobuf => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The certificates of the PEM file an `OTEL_*` variable names.
fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    weft_mesh::identity::read_pem_certs(Path::new(path))
        .map_err(|e| format!("OTLP certificate: {e}"))
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let stream = tcp.call(uri).await?.into_inner();
            match tls {
                None => Ok(TokioIo::new(Stream::Plain(stream))),
                Some(tls) => {
                    let name = ServerName::try_from(host)?;
                    let stream = tls.connect(name, stream).await?;
                    Ok(TokioIo::new(Stream::Tls(Box::new(stream))))
                }
            }
        })
    }
}

/// A connection to the collector.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                match session.alpn_protocol() {
                    Some(b"h2") => tcp.connected().negotiated_h2(),
                    _ => tcp.connected(),
                }
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
