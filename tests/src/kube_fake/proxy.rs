//! The `proxy` subresource of Services and Pods
//! (`/api/v1/namespaces/{ns}/services/[scheme:]name[:port]/proxy/{path}`,
//! `.../pods/[scheme:]name[:port]/proxy/{path}`): the API server forwards
//! the request to the Service's endpoint or the Pod and hands back the
//! answer as it came. There is no cluster network here, so a test routes
//! each (kind, namespace, name, port) to a loopback address
//! (`KubeFake::route_proxy`; a Service not routed by port falls back to
//! the address given to `route_service`). `https:` is TLS without
//! certificate verification, as the API server's proxy does. The object
//! must exist and, for a Service, have the port; RBAC is `get` (GET) or
//! `create` (POST) on `services/proxy` or `pods/proxy`.

use super::errors::ApiError;
use super::router::{Body, Reply, Request};
use super::State;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a proxied request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A proxy URL, parsed.
pub struct ProxyTarget {
    /// `services` or `pods`.
    pub kind: &'static str,
    pub namespace: String,
    /// The URL's `[scheme:]name[:port]` segment as sent (RBAC's name).
    pub segment: String,
    pub name: String,
    pub https: bool,
    /// A port number or name; None: the first port (Service) or 80 (Pod).
    pub port: Option<String>,
    /// The path after `/proxy`, at least `/`.
    pub rest: String,
}

/// Parses `/api/v1/namespaces/{ns}/{services|pods}/{id}/proxy[/...]`.
pub fn parse(path: &str) -> Option<ProxyTarget> {
    let tail = path.strip_prefix("/api/v1/namespaces/")?;
    let (ns, tail) = tail.split_once('/')?;
    let (kind, tail) = tail.split_once('/')?;
    let kind = match kind {
        "services" => "services",
        "pods" => "pods",
        _ => return None,
    };
    let (segment, tail) = tail.split_once('/')?;
    let rest = match tail.strip_prefix("proxy")? {
        "" => "/",
        r if r.starts_with('/') => r,
        _ => return None,
    };
    let parts: Vec<&str> = segment.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => (None, *n, None),
        [n, p] => (None, *n, Some(*p)),
        [s, n, p] => (Some(*s), *n, Some(*p).filter(|p| !p.is_empty())),
        _ => return None,
    };
    if ns.is_empty() || name.is_empty() {
        return None;
    }
    Some(ProxyTarget {
        kind,
        namespace: ns.to_string(),
        segment: segment.to_string(),
        name: name.to_string(),
        https: scheme == Some("https"),
        port: port.map(str::to_string),
        rest: rest.to_string(),
    })
}

fn unavailable(message: String) -> ApiError {
    ApiError::denied(503, "ServiceUnavailable", message)
}

/// Forwards the request and answers with the target's answer.
pub async fn forward(
    state: &Arc<State>,
    req: &Request,
    t: &ProxyTarget,
) -> Result<Reply, ApiError> {
    let resource = state
        .discovery()
        .resource("", "v1", t.kind)
        .ok_or_else(ApiError::page_not_found)?;
    let obj = state
        .store()
        .get(t.kind, &t.namespace, &t.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&resource, &t.name))?;
    let port: u16 = if t.kind == "services" {
        let ports = obj["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let found = match &t.port {
            None => ports.first(),
            Some(p) => ports.iter().find(|sp| {
                sp["name"] == p.as_str()
                    || sp["port"].as_u64().map(|n| n.to_string()) == Some(p.clone())
            }),
        };
        let Some(found) = found else {
            return Err(unavailable(format!(
                "no service port {:?} found for service {:?}",
                t.port.clone().unwrap_or_default(),
                t.name
            )));
        };
        found["port"].as_u64().unwrap_or(0) as u16
    } else {
        match &t.port {
            None => 80,
            Some(p) => p.parse().map_err(|_| {
                unavailable(format!(
                    "pod {:?}: only numeric ports are proxied here",
                    t.name
                ))
            })?,
        }
    };
    let routed = state
        .proxy_routes()
        .get(&(t.kind, t.namespace.clone(), t.name.clone(), port))
        .copied();
    let routed = routed.or_else(|| {
        (t.kind == "services")
            .then(|| {
                state
                    .service_routes()
                    .get(&(t.namespace.clone(), t.name.clone()))
                    .copied()
            })
            .flatten()
    });
    let Some(addr) = routed else {
        return Err(unavailable(format!(
            "no endpoints available for {} {:?}",
            if t.kind == "services" {
                "service"
            } else {
                "pod"
            },
            t.name
        )));
    };
    let mut path = t.rest.clone();
    if !req.query.is_empty() {
        let q: Vec<String> = req.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        path = format!("{path}?{}", q.join("&"));
    }
    let host = if t.kind == "services" {
        format!("{}.{}.svc:{port}", t.name, t.namespace)
    } else {
        format!("{addr}")
    };
    let sent = tokio::time::timeout(TIMEOUT, send(addr, t.https, &host, req, &path)).await;
    let (code, ctype, body) = match sent {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(unavailable(format!("error trying to reach service: {e}"))),
        Err(_) => {
            return Err(unavailable(
                "error trying to reach service: context deadline exceeded".into(),
            ))
        }
    };
    Ok(Reply {
        code,
        content_type: ctype,
        headers: Vec::new(),
        body: Body::Text(String::from_utf8_lossy(&body).into_owned()),
    })
}

/// One HTTP/1.1 request to `addr` (TLS without verification when `https`).
async fn send(
    addr: SocketAddr,
    https: bool,
    host: &str,
    req: &Request,
    path: &str,
) -> Result<(u16, Option<String>, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let mut request = http::Request::builder()
        .method(req.method.clone())
        .uri(path)
        .header("host", host);
    for k in ["content-type", "accept"] {
        if let Some(v) = req.headers.get(k) {
            request = request.header(k, v);
        }
    }
    let request = request
        .body(Full::new(req.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("proxied.invalid")
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(tls, request).await?
    } else {
        exchange(tcp, request).await?
    };
    let code = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, ctype, body))
}

async fn exchange<S>(
    io: S,
    request: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Accepts any server certificate (signatures still checked), as the API
/// server's proxy does not verify the endpoints it proxies to.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_as_the_api_server_reads_them() {
        let t = parse(
            "/api/v1/namespaces/weft-system/services/https:weft-control-plane:15017/proxy/inject",
        )
        .unwrap();
        assert_eq!(
            (
                t.kind,
                t.name.as_str(),
                t.https,
                t.port.as_deref(),
                t.rest.as_str()
            ),
            (
                "services",
                "weft-control-plane",
                true,
                Some("15017"),
                "/inject"
            )
        );
        let t = parse("/api/v1/namespaces/weft-system/pods/cp-0:15014/proxy").unwrap();
        assert_eq!((t.kind, t.https, t.rest.as_str()), ("pods", false, "/"));
        assert!(parse("/api/v1/namespaces/a/services/b/proxyx").is_none());
        assert!(parse("/api/v1/namespaces/a/configmaps/b/proxy/x").is_none());
        assert!(parse("/api/v1/namespaces/a/services/b").is_none());
    }
}
