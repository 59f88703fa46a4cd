//! Minimal real HTTP clients (hyper) for tests: one connection per call
//! unless a [`Conn`] is kept for keep-alive.

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

/// A response read to its end.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn read(resp: http::Response<hyper::body::Incoming>) -> Result<Resp, BoxError> {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// A kept-alive HTTP/1.1 connection.
pub struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, BoxError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Conn { tx })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, BoxError> {
        self.tx.ready().await?;
        read(self.tx.send_request(req).await?).await
    }

    /// Sends and returns the response with its body still streaming.
    pub async fn send_streaming(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
        self.tx.ready().await?;
        Ok(self.tx.send_request(req).await?)
    }
}

/// One HTTP/1.1 request on a fresh connection to the URL's host.
/// `headers` may set Host to address a service through the proxy.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<Resp, BoxError> {
    let uri: http::Uri = url.parse()?;
    let addr: SocketAddr = uri.authority().ok_or("no authority")?.as_str().parse()?;
    let mut b = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", addr.to_string());
    }
    Conn::open(addr)
        .await?
        .send(b.body(Full::new(Bytes::new()))?)
        .await
}

/// A request in HTTP proxy form (absolute URI), as an app with HTTP_PROXY sends it.
pub async fn get_via_proxy(proxy: SocketAddr, url: &str) -> Result<Resp, BoxError> {
    let uri: http::Uri = url.parse()?;
    let host = uri.authority().ok_or("no authority")?.to_string();
    let req = Request::get(uri)
        .header("host", host)
        .body(Full::new(Bytes::new()))?;
    Conn::open(proxy).await?.send(req).await
}

/// An HTTP/2 (prior knowledge) connection.
pub struct H2Conn {
    tx: http2::SendRequest<Full<Bytes>>,
}

impl H2Conn {
    pub async fn open(addr: SocketAddr) -> Result<H2Conn, BoxError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn { tx })
    }

    /// `uri` must be absolute: its authority is the :authority.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, BoxError> {
        self.tx.ready().await?;
        read(self.tx.send_request(req).await?).await
    }
}
