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
//! Framing follows RFC 9112 section 6.3: no body for HEAD, 1xx, 204 and 304;
//! chunked when the last transfer coding is chunked (trailers kept);
//! otherwise Content-Length (every value must agree); otherwise until close.

use crate::body::RequestBody;
use crate::http::pool::Pool;
use crate::resilience::limits::Permit;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) and largest trailer block.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before a read.
const READ_SPACE: usize = 16 * 1024;

/// An upstream connection and its read buffer.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
    /// It has carried an exchange before (so a close may be a stale one).
    reused: bool,
    /// When it last went idle.
    pub(crate) since: Instant,
    /// The backend's connection slot, held for the connection's life.
    _permit: Option<Permit>,
}

impl Conn {
    pub fn new(io: TcpStream, permit: Option<Permit>, now: Instant) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
            since: now,
            _permit: permit,
        }
    }

    /// An idle connection can carry a request: the server has neither closed
    /// it nor sent anything unasked. No system call unless the socket has
    /// signalled readiness since it went idle.
    pub fn usable(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.io.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        loop {
            match self.io.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.io.poll_read_ready(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }
}

/// Where a connection goes when its exchange is over.
pub struct Home {
    pub pool: Arc<Pool>,
    pub max_idle: usize,
    /// The idle age is counted from the start of the request (a little
    /// early, so expiry errs on the safe side) without another clock read.
    pub since: Instant,
}

/// Why an exchange failed.
pub enum Failure {
    /// A reused connection turned out closed before any of the answer came:
    /// the server dropped an idle connection as the request went out. The
    /// request (which has no body) is handed back to be sent elsewhere;
    /// only idempotent requests come back after they were written.
    Stale(Box<Request<RequestBody>>),
    Io(io::Error),
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Writes the request head: origin-form target, headers as given (Host
/// included by the caller), `content-length: 0` where a method usually has a
/// body and no length was given.
fn encode_head(req: &Request<RequestBody>, out: &mut BytesMut) {
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

/// Whether a `Connection` header (all of its values) names `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// How the response body is delimited.
fn framing(method: &Method, status: StatusCode, headers: &mut HeaderMap) -> io::Result<State> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(State::Length(0));
    }
    if let Some(te) = headers.get_all(TRANSFER_ENCODING).iter().next_back() {
        let chunked = te
            .to_str()
            .ok()
            .and_then(|s| s.rsplit(',').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        // A length next to a transfer coding is ignored (and dropped).
        headers.remove(CONTENT_LENGTH);
        return Ok(if chunked {
            State::Chunked(Chunk::Size)
        } else {
            State::Close
        });
    }
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v
            .to_str()
            .map_err(|_| invalid("invalid content-length"))?
            .split(',')
        {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| invalid("invalid content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => State::Length(n),
        None => State::Close,
    })
}

/// Parses a final response head off the front of `buf` (skipping 1xx
/// interim answers); `None` until the head is complete. Kept out of the
/// async caller so the header array lives on the stack, not in its future.
#[allow(clippy::type_complexity)]
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<(StatusCode, Version, HeaderMap)>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let n = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
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
        let mut map = HeaderMap::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| invalid("invalid header name"))?;
            let value =
                HeaderValue::from_bytes(h.value).map_err(|_| invalid("invalid header value"))?;
            map.append(name, value);
        }
        buf.advance(n);
        return Ok(Some((status, version, map)));
    }
}

/// Sends a request that has no body on `conn` and reads the response head.
/// The response body streams from the connection.
pub async fn send(
    mut conn: Conn,
    req: Request<RequestBody>,
    home: Home,
) -> Result<Response<Body>, Failure> {
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
            if let Some((status, version, mut map)) =
                parse_head(&mut conn.buf).map_err(Failure::Io)?
            {
                let keep_alive = match version {
                    Version::HTTP_11 => !connection_has(&map, "close"),
                    _ => connection_has(&map, "keep-alive"),
                };
                let state = framing(method, status, &mut map).map_err(Failure::Io)?;
                let keep_alive = keep_alive && !matches!(state, State::Close);
                let mut body = Body {
                    conn: Some(conn),
                    state,
                    keep_alive,
                    home: Some(home),
                };
                if matches!(body.state, State::Length(0)) {
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

enum State {
    /// Bytes of body still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    Done,
}

enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers(Box<HeaderMap>, usize),
}

/// A response body read from its connection as it is polled.
pub struct Body {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    home: Option<Home>,
}

impl Body {
    /// The body has ended: the connection goes home if it can carry another
    /// exchange (nothing unread, no close asked).
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(mut conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if self.keep_alive && conn.buf.is_empty() {
                conn.reused = true;
                conn.since = home.since;
                home.pool.put_raw(conn, home.max_idle);
            }
        }
    }

    fn fail(&mut self, e: io::Error) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    /// Takes one line (without its CRLF) from the buffer, reading more as
    /// needed; `None` when the line is still incomplete and nothing more can
    /// be read right now.
    fn poll_line(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<io::Result<Bytes>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err(invalid("body read after its end")));
        };
        loop {
            if let Some(i) = conn.buf.iter().position(|&b| b == b'\n') {
                let mut line = conn.buf.split_to(i + 1).freeze();
                line.truncate(i);
                if line.last() == Some(&b'\r') {
                    line.truncate(i - 1);
                }
                return Poll::Ready(Ok(line));
            }
            if conn.buf.len() > limit {
                return Poll::Ready(Err(invalid("chunk line too long")));
            }
            if ready!(conn.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(eof()));
            }
        }
    }

    /// Up to `max` bytes of data at hand, reading if none is.
    fn poll_data(&mut self, cx: &mut Context<'_>, max: u64) -> Poll<io::Result<Bytes>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Err(invalid("body read after its end")));
        };
        if conn.buf.is_empty() && ready!(conn.poll_fill(cx))? == 0 {
            return Poll::Ready(Err(eof()));
        }
        let n = (conn.buf.len() as u64).min(max) as usize;
        Poll::Ready(Ok(conn.buf.split_to(n).freeze()))
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "upstream closed the connection in the middle of the body",
    )
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(invalid("invalid chunk size"));
    }
    let s = std::str::from_utf8(&line[..digits]).map_err(|_| invalid("invalid chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| invalid("invalid chunk size"))
}

/// One trailer line into `map`; lines that are not `name: value` are dropped.
fn add_trailer(map: &mut HeaderMap, line: &[u8]) {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return;
    };
    let value = line[colon + 1..].trim_ascii();
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(&line[..colon]),
        HeaderValue::from_bytes(value),
    ) {
        map.append(n, v);
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    let left = *left;
                    let data = match ready!(this.poll_data(cx, left)) {
                        Ok(d) => d,
                        Err(e) => return this.fail(e),
                    };
                    let left = left - data.len() as u64;
                    this.state = State::Length(left);
                    if left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close => {
                    let conn = this
                        .conn
                        .as_mut()
                        .expect("a body before its end has its connection");
                    if conn.buf.is_empty() {
                        match ready!(conn.poll_fill(cx)) {
                            Ok(0) => {
                                this.finish();
                                return Poll::Ready(None);
                            }
                            Ok(_) => {}
                            Err(e) => return this.fail(e),
                        }
                    }
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::Size) => {
                    let line = match ready!(this.poll_line(cx, MAX_CHUNK_LINE)) {
                        Ok(l) => l,
                        Err(e) => return this.fail(e),
                    };
                    this.state = match parse_chunk_size(&line) {
                        Ok(0) => State::Chunked(Chunk::Trailers(Box::default(), 0)),
                        Ok(n) => State::Chunked(Chunk::Data(n)),
                        Err(e) => return this.fail(e),
                    };
                }
                State::Chunked(Chunk::Data(left)) => {
                    let left = *left;
                    let data = match ready!(this.poll_data(cx, left)) {
                        Ok(d) => d,
                        Err(e) => return this.fail(e),
                    };
                    let left = left - data.len() as u64;
                    this.state = State::Chunked(match left {
                        0 => Chunk::DataEnd,
                        n => Chunk::Data(n),
                    });
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(Chunk::DataEnd) => {
                    match ready!(this.poll_line(cx, 2)) {
                        Ok(l) if l.is_empty() => {}
                        Ok(_) => return this.fail(invalid("chunk data longer than its size")),
                        Err(e) => return this.fail(e),
                    }
                    this.state = State::Chunked(Chunk::Size);
                }
                State::Chunked(Chunk::Trailers(..)) => {
                    let line = match ready!(this.poll_line(cx, MAX_TRAILERS)) {
                        Ok(l) => l,
                        Err(e) => return this.fail(e),
                    };
                    let State::Chunked(Chunk::Trailers(map, size)) = &mut this.state else {
                        unreachable!("state checked above");
                    };
                    if !line.is_empty() {
                        *size += line.len();
                        if *size > MAX_TRAILERS {
                            return this.fail(invalid("trailers too large"));
                        }
                        add_trailer(map, &line);
                        continue;
                    }
                    let map = std::mem::take(&mut **map);
                    this.finish();
                    if map.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::trailers(map))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        assert_eq!(parse_chunk_size(b"10;ext=1").unwrap(), 16);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"1x").is_err());
        assert!(parse_chunk_size(b"11111111111111111").is_err());
    }

    #[test]
    fn framing_rules() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(matches!(
            framing(&Method::HEAD, StatusCode::OK, &mut h.clone()),
            Ok(State::Length(0))
        ));
        assert!(matches!(
            framing(&Method::GET, StatusCode::OK, &mut h.clone()),
            Ok(State::Length(5))
        ));
        h.append(CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(framing(&Method::GET, StatusCode::OK, &mut h.clone()).is_err());
        let mut te = HeaderMap::new();
        te.insert(TRANSFER_ENCODING, HeaderValue::from_static("gzip, chunked"));
        te.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(matches!(
            framing(&Method::GET, StatusCode::OK, &mut te),
            Ok(State::Chunked(Chunk::Size))
        ));
        assert!(
            !te.contains_key(CONTENT_LENGTH),
            "length dropped next to chunked"
        );
        assert!(matches!(
            framing(&Method::GET, StatusCode::OK, &mut HeaderMap::new()),
            Ok(State::Close)
        ));
    }

    #[test]
    fn head_encoding() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/a?b=1")
            .header("host", "svc")
            .body(RequestBody::Empty)
            .unwrap();
        let mut out = BytesMut::new();
        encode_head(&req, &mut out);
        assert_eq!(
            &out[..],
            b"POST /a?b=1 HTTP/1.1\r\nhost: svc\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
