//! The control plane's view for a named proxy: `GET /resources?namespace=
//! &service=` on its admin endpoint (plain HTTP, loopback by default), the
//! multi-document YAML of every resource that proxy could see.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// How long the whole fetch may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (the resources of a large mesh fit many times over).
const MAX_BODY: usize = 64 << 20;

/// A name as Kubernetes allows it in a namespace or Service name (so it
/// needs no escaping in a query string).
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The YAML the control plane at `admin` (`http://host:port`) serves for
/// the proxy `namespace`/`service`.
pub(crate) fn resources(admin: &str, namespace: &str, service: &str) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, get(admin, namespace, service))
            .await
            .map_err(|_| format!("{admin}: no answer within {}s", TIMEOUT.as_secs()))?
    })
}

async fn get(admin: &str, namespace: &str, service: &str) -> Result<String, String> {
    let uri: http::Uri = admin
        .parse()
        .map_err(|e| format!("--control-plane-admin {admin:?}: not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--control-plane-admin {admin:?}: the admin endpoint speaks plain http (http://host:port)"
        ));
    }
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("--control-plane-admin {admin:?}: no host"));
    };
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let base = uri.path().trim_end_matches('/');
    let target = format!("{base}/resources?namespace={namespace}&service={service}");
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("{admin}: cannot connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{admin}: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(target.as_str())
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{admin}: {e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("{admin}{target}: {e}"))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("{admin}{target}: reading the answer: {e}"))?
        .to_bytes();
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| format!("{admin}{target}: the answer is not UTF-8"))?;
    if !status.is_success() {
        return Err(format!("{admin}{target}: {status}: {}", text.trim()));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert!(valid_name("shop") && valid_name("reviews-v2.x"));
        assert!(!valid_name("") && !valid_name("a&b=c") && !valid_name("Shop"));
        let e = resources("https://127.0.0.1:1", "a", "b").unwrap_err();
        assert!(e.contains("plain http"), "{e}");
        let e = resources("not a url", "a", "b").unwrap_err();
        assert!(e.contains("not a URL"), "{e}");
    }
}
