//! A minimal HTTPS client for talking to the fake over the real wire, as
//! the replay test and raw checks need: one request per connection,
//! HTTP/1.1, a client certificate or a bearer token, and watch bodies read
//! line by line as they arrive.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How a client authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `CN=admin, O=system:masters`.
    Admin,
    /// A client certificate and key, PEM.
    Cert(String, String),
    Bearer(String),
    None,
}

pub struct FakeClient {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    creds: Credentials,
}

/// A complete answer.
#[derive(Debug)]
pub struct FakeResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl FakeResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
    }
}

/// An open response whose body is read as it streams.
pub struct Streaming {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Streaming {
    /// The next newline-terminated line, None at the end of the body or
    /// when `wait` passes first.
    pub async fn next_line(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

impl FakeClient {
    pub fn new(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        creds: Credentials,
    ) -> FakeClient {
        FakeClient {
            addr,
            config,
            creds,
        }
    }

    async fn open(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut b = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", self.addr.to_string());
        if let Credentials::Bearer(t) = &self.creds {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<FakeResponse, String> {
        let resp = self.open(method, path_and_query, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(FakeResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Sends `body` (if any) as JSON and reads the answer: its status and
    /// body as JSON, or as a JSON string when it is not JSON (a plain-text
    /// 404). Panics when the request cannot be sent.
    pub async fn send_json(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let r = self
            .send(
                method,
                path_and_query,
                &[("content-type", "application/json")],
                body,
            )
            .await
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"));
        let v = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&r.body).into()));
        (r.status, v)
    }

    /// Sends one request and returns as soon as the headers arrive.
    pub async fn stream(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Streaming, String> {
        let resp = self
            .open(method, path_and_query, headers, Bytes::new())
            .await?;
        let (parts, body) = resp.into_parts();
        Ok(Streaming {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            buf: Vec::new(),
        })
    }
}
