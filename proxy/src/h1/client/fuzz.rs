//! Handles on the lean client's reading of an upstream's answer for the fuzz
//! targets in `fuzz/`: the response head, the settling of its framing, the
//! chunk-size line, and a whole exchange over a connection whose far end the
//! target plays. Compiled only with `--cfg fuzzing` (set by `cargo fuzz`);
//! nothing here is part of the proxy.

use super::body::Home;
use super::{parse_head, send, Failure};
use crate::h1::chunked;
use crate::h1::framing::{self, Framing};
use crate::transport::{Pool, RawConn};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Empty};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// A final response head as `parse_head` read it.
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Other hop-by-hop fields were seen (left in `headers`).
    pub other_hop: bool,
}

/// `parse_head` on `buf`: `Ok(None)` while the head is incomplete.
pub fn parse_response_head(buf: &mut BytesMut) -> Result<Option<ResponseHead>, String> {
    match parse_head(buf) {
        Ok(Some((status, version, headers, scan))) => Ok(Some(ResponseHead {
            status,
            version,
            headers,
            close: scan.close,
            keep_alive: scan.keep_alive,
            other_hop: scan.other_hop,
        })),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// How a settled response's body is delimited (`framing::Framing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// `framing::settle_response`.
pub fn settle_response(
    status: u16,
    head_req: bool,
    headers: &mut HeaderMap,
) -> Result<BodyFraming, &'static str> {
    framing::settle_response(status, head_req, headers)
        .map(|f| match f {
            Framing::None => BodyFraming::None,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked,
            Framing::UntilClose => BodyFraming::UntilClose,
        })
        .map_err(|m| m.0)
}

/// `chunked::parse_size`.
pub fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    chunked::parse_size(line)
}

/// `chunked::write_size`.
pub fn write_chunk_size(out: &mut Vec<u8>, n: usize) {
    chunked::write_size(out, n)
}

/// What one exchange of the lean client came to.
pub struct Exchange {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body's data, as far as it was read.
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// Why reading the body failed, if it did.
    pub error: Option<String>,
    /// The connection went back to its pool once the body ended.
    pub pooled: bool,
}

/// Sends a bodiless `method` request for `/` on `io` (a fresh connection)
/// with the lean client and reads the answer, body and all. `Err`: no
/// response came (the head was refused, or the connection failed).
pub async fn exchange(io: TcpStream, method: Method) -> Result<Exchange, String> {
    let now = Instant::now();
    let pool = Arc::new(Pool::default());
    let home = Home {
        pool: pool.clone(),
        max_idle: 1,
        since: now,
    };
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header(http::header::HOST, "upstream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = match send(RawConn::new(io, None, now), req, home).await {
        Ok(r) => r,
        Err(Failure::Io(e)) => return Err(e.to_string()),
        Err(Failure::Stale(_)) => return Err("stale connection".into()),
    };
    let (parts, mut body) = resp.into_parts();
    let mut out = Exchange {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: Vec::new(),
        trailers: None,
        error: None,
        pooled: false,
    };
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(d) => out.body.extend_from_slice(&d),
                Err(f) => out.trailers = f.into_trailers().ok(),
            },
            Err(e) => {
                out.error = Some(e.to_string());
                break;
            }
        }
    }
    drop(body);
    out.pooled = pool.idle() > 0;
    Ok(out)
}
