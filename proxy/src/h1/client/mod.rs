//! A lean HTTP/1.1 client for the most common exchange: a request without a
//! body (GET, HEAD, DELETE, ...) on a plain pooled connection.
//!
//! The request is written and the response read by the task that serves the
//! client, on a connection it owns for the exchange: no connection task, no
//! channel between tasks, no body channel. The response body is read from
//! the socket as the client takes it (never buffered whole) and the
//! connection goes back to its pool once the body has been read to its end.
//! Requests with bodies and upgrades use hyper's client, which writes a body
//! while it reads the answer.
//!
//! Framing follows RFC 9112 section 6.3, settled by [`super::framing`]: no
//! body for HEAD, 1xx, 204 and 304; chunked (trailers kept); otherwise
//! Content-Length (every value must agree); otherwise until close. A head
//! whose framing is ambiguous is an error, and its connection is dropped.
//!
//! Only the request's head is written, so the client takes a request of
//! any body type `B` (and hands it back whole when the connection proves
//! stale); `B` is also the body type of the pool the connection returns to.

use super::framing::{settle_response, Framing};
use super::head::{header_map, span};
use super::hop::{is_hop_by_hop, strip_hop_by_hop};
use super::limits::{MAX_HEADERS, MAX_RESPONSE_HEAD};
use super::method::idempotent;
use super::tokens::tokens;
use crate::transport::RawConn;
use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use std::io;
use tokio::io::AsyncWriteExt;

mod body;
mod error;
#[cfg(fuzzing)]
pub(crate) mod fuzz;
pub(crate) use body::{Body, Home};
use body::{Chunk, State};
use error::invalid;
pub(crate) use error::Failure;

/// Writes the request head: origin-form target, headers as given (Host
/// included by the caller), `content-length: 0` where a method usually has a
/// body and no length was given.
fn encode_head<B>(req: &Request<B>, out: &mut BytesMut) {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let size = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>();
    out.reserve(req.method().as_str().len() + path.len() + size + 32);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (k, v) in req.headers() {
        if k == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_length = !matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if wants_length && !req.headers().contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// What a response head says about its connection and framing, noted while
/// its fields are read so no header is looked up again.
#[derive(Debug, Default)]
struct Scan {
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (for HTTP/1.0).
    keep_alive: bool,
    /// Other hop-by-hop fields (or headers `Connection` names), left in
    /// the map for [`strip_hop_by_hop`].
    other_hop: bool,
}

impl Scan {
    /// Notes one field; false when it should not go into the map (it is
    /// about this connection only and fully handled here). The framing
    /// fields go into the map, to be settled there.
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> io::Result<bool> {
        if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING {
            return Ok(true);
        }
        if *name == CONNECTION {
            let mut named = false;
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"upgrade") {
                    named = true;
                }
            }
            self.other_hop |= named;
            return Ok(named);
        }
        if name.as_str() == "keep-alive" {
            return Ok(false);
        }
        if is_hop_by_hop(name) {
            self.other_hop = true;
        }
        Ok(true)
    }
}

/// How the body of a response with settled framing is read.
fn state(framing: Framing) -> State {
    match framing {
        Framing::None => State::Length(0),
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunked(Chunk::Size),
        Framing::UntilClose => State::Close,
    }
}

/// Parses a final response head off the front of `buf` (skipping 1xx
/// interim answers); `None` until the head is complete. Kept out of the
/// async caller so the header array lives on the stack, not in its future.
#[allow(clippy::type_complexity)]
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<(StatusCode, Version, HeaderMap, Scan)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let n = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(invalid("response head too large")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid("too many response headers"))
            }
            Err(_) => return Err(invalid("malformed response head")),
        };
        let code = parsed.code.unwrap_or(0);
        if (100..200).contains(&code) {
            // 100 Continue, 103 Early Hints: the final answer follows.
            if code == 101 {
                return Err(invalid("unexpected 101 Switching Protocols"));
            }
            buf.advance(n);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid status code"))?;
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Values are sliced from the head's own bytes rather than copied: a
        // reference count instead of an allocation per header.
        let base = buf.as_ptr() as usize;
        let mut scan = Scan::default();
        let mut kept = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| invalid("invalid header name"))?;
            if !scan.note(&name, h.value)? {
                continue;
            }
            // httparse's slices point into `buf`; an empty one may not.
            let (start, end) =
                span(base, n, h.value).ok_or_else(|| invalid("invalid header value"))?;
            kept.push((name, start, end));
        }
        let head = buf.split_to(n).freeze();
        let map = header_map(&head, kept).ok_or_else(|| invalid("invalid header value"))?;
        return Ok(Some((status, version, map, scan)));
    }
}

/// Sends a request that has no body on `conn` and reads the response head.
/// The response body streams from the connection.
pub(crate) async fn send<B: http_body::Body>(
    mut conn: RawConn,
    req: Request<B>,
    home: Home<B>,
) -> Result<Response<Body<B>>, Failure<B>> {
    debug_assert!(http_body::Body::is_end_stream(req.body()));
    conn.buf.clear();
    encode_head(&req, &mut conn.buf);
    if let Err(e) = conn.io.write_all(&conn.buf).await {
        // Nothing of a request the server never read can have been processed.
        return Err(match conn.reused {
            true => Failure::Stale(Box::new(req)),
            false => Failure::Io(e),
        });
    }
    conn.buf.clear();
    let method = req.method();
    loop {
        if !conn.buf.is_empty() {
            if let Some((status, version, mut map, scan)) =
                parse_head(&mut conn.buf).map_err(Failure::Io)?
            {
                let keep_alive = match version {
                    Version::HTTP_11 => !scan.close,
                    _ => scan.keep_alive,
                };
                let framing = settle_response(status.as_u16(), method == Method::HEAD, &mut map)
                    .map_err(|m| Failure::Io(invalid(m.0)))?;
                if scan.other_hop {
                    strip_hop_by_hop(&mut map);
                }
                // Bytes after a bodiless answer are no part of any answer:
                // the connection cannot carry another exchange.
                let stray = framing == Framing::None && !conn.buf.is_empty();
                let state = state(framing);
                let keep_alive = keep_alive && !stray && !matches!(state, State::Close);
                let done = matches!(state, State::Length(0));
                let mut body = Body::new(conn, state, keep_alive, home);
                if done {
                    body.finish();
                }
                let mut resp = Response::new(body);
                *resp.status_mut() = status;
                *resp.version_mut() = version;
                *resp.headers_mut() = map;
                return Ok(resp);
            }
        }
        let read = conn.fill().await;
        match read {
            Ok(0) | Err(_) if conn.buf.is_empty() && conn.reused && idempotent(method) => {
                return Err(Failure::Stale(Box::new(req)));
            }
            Ok(0) => {
                return Err(Failure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection before answering",
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> io::Result<(StatusCode, HeaderMap, Scan)> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_head(&mut buf).map(|h| {
            let (status, _, map, scan) = h.expect("complete head");
            (status, map, scan)
        })
    }

    #[test]
    fn framing_rules() {
        let settle = |raw: &str, method: Method| {
            let (s, mut h, _) = head(raw).unwrap();
            let f = settle_response(s.as_u16(), method == Method::HEAD, &mut h);
            (f.map(state), h)
        };
        let r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(settle(r, Method::HEAD).0, Ok(State::Length(0))));
        assert!(matches!(settle(r, Method::GET).0, Ok(State::Length(5))));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert!(settle(bad, Method::GET).0.is_err(), "{bad}");
        }
        let (f, h) = settle(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            Method::GET,
        );
        assert!(matches!(f, Ok(State::Chunked(Chunk::Size))));
        assert!(
            !h.contains_key(CONTENT_LENGTH),
            "length dropped next to chunked"
        );
        assert!(
            !h.contains_key(TRANSFER_ENCODING),
            "the coding is this hop's"
        );
        let (f, _) = settle("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert!(matches!(f, Ok(State::Close)));
    }

    #[test]
    fn connection_fields_are_noted_not_kept() {
        let (_, h, scan) = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX: 1\r\n\r\n",
        )
        .unwrap();
        assert!(scan.keep_alive && !scan.close && !scan.other_hop);
        assert_eq!(h.len(), 1, "{h:?}");
        let (_, h, scan) =
            head("HTTP/1.1 200 OK\r\nConnection: close, x-hop\r\nX-Hop: 1\r\n\r\n").unwrap();
        assert!(scan.close && scan.other_hop);
        assert!(
            h.contains_key(CONNECTION) && h.contains_key("x-hop"),
            "left for stripping"
        );
        let (_, _, scan) = head("HTTP/1.1 200 OK\r\nUpgrade: h2c\r\n\r\n").unwrap();
        assert!(scan.other_hop);
    }

    #[test]
    fn head_parsing_slices_values_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Empty:\r\nServer: t\r\nContent-Length: 2\r\n\r\nok"[..],
        );
        let (status, version, map, _) = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(map["x-empty"], "");
        assert_eq!(map["server"], "t");
        assert_eq!(map[CONTENT_LENGTH], "2");
        assert_eq!(&buf[..], b"ok");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nServer: t\r\n"[..]);
        assert!(parse_head(&mut partial).unwrap().is_none());
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nBad Name: t\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
    }

    #[test]
    fn head_encoding() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/a?b=1")
            .header("host", "svc")
            .body(())
            .unwrap();
        let mut out = BytesMut::new();
        encode_head(&req, &mut out);
        assert_eq!(
            &out[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
