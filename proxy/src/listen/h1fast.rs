//! The HTTP/1.1 server side for the common case: requests without a body
//! (GET, HEAD, DELETE, ...) on a keep-alive connection, read with
//! `httparse` and answered with one write of head and body where the body
//! is at hand. Everything else goes to hyper's HTTP/1 server, with the bytes
//! already read: a request with a body, `Expect`, an upgrade, `CONNECT`,
//! HTTP/1.0, a malformed or oversized head (hyper answers 400 or 431). The
//! switch can happen at any request boundary, as HTTP/1 keeps no state
//! between requests, and lasts for the rest of the connection.
//!
//! What this keeps from hyper's server, so the two behave alike:
//! - `--header-read-timeout` runs from the start of the wait for a head to
//!   its end, idle keep-alive time included; a client that takes longer is
//!   cut off. (One timer per connection, re-armed only when it fires.)
//! - A client that goes away while its request is in flight cancels it (the
//!   connection is read for end-of-file while the handler runs), so its
//!   span ends as `cancelled` and the upstream exchange is dropped.
//! - Responses get `date` when they have none, `content-length` when the
//!   body's size is known, chunked framing otherwise; `connection: close`
//!   when the client asked for it or the proxy is shutting down.
//! - Shutdown closes idle connections at once and the others after their
//!   current response.

use super::Direction;
use crate::body::{RequestBody, ResponseBody};
use crate::drain::Watch;
use crate::http::handler::{self, ConnInfo};
use crate::proxy::Proxy;
use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::time::Instant;

/// As many header fields as hyper's server takes.
const MAX_HEADERS: usize = 100;
/// Response bodies up to this size go out in the same write as the head.
const COALESCE: usize = 16 * 1024;

/// How a connection's time with the fast path ended.
pub(super) enum End<S> {
    /// Closed, or cut off: nothing more to do.
    Done,
    /// Hand the connection, with what was read of it, to hyper.
    Handoff(Rewind<S>),
}

/// What the next request head turned out to be. (Boxing the request would
/// cost an allocation per request to save a move.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<RequestBody>, Asks),
    Handoff,
    Closed,
}

/// Serves requests on `io` until the connection ends or a request needs
/// hyper's server.
pub(super) async fn serve<S>(
    proxy: &Arc<Proxy>,
    mut io: S,
    info: &Arc<ConnInfo>,
    direction: Direction,
    watch: &mut Watch,
) -> End<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let max_head = proxy.opts.max_header_bytes;
    let header_timeout = Some(proxy.opts.header_read_timeout).filter(|d| !d.is_zero());
    // One timer for the connection's idle waits, re-armed only when it
    // fires early (not per request).
    let far = Duration::from_secs(86_400);
    let mut idle = pin!(tokio::time::sleep(header_timeout.unwrap_or(far)));
    loop {
        let next = next_request(
            &mut io,
            &mut buf,
            max_head,
            header_timeout,
            watch,
            idle.as_mut(),
        );
        let (req, asks) = match next.await {
            Next::Request(r, asks) => (r, asks),
            Next::Handoff => {
                return End::Handoff(Rewind {
                    pre: buf.freeze(),
                    io,
                })
            }
            Next::Closed => return End::Done,
        };
        let head_only = req.method() == Method::HEAD;
        // Pinned where it is made: the handler's future is large, and
        // moving it into a callee costs a copy of it per request.
        let work = pin!(async {
            match direction {
                Direction::Outbound => handler::outbound(proxy.clone(), info.clone(), req).await,
                Direction::Inbound => handler::inbound(proxy.clone(), info.clone(), req).await,
            }
        });
        let Some(resp) = answer_unless_gone(work, &mut io, &mut buf, max_head).await else {
            return End::Done;
        };
        let close = asks.close || watch.is_signalled();
        match write_response(&mut io, &mut out, resp, head_only, close, asks.trailers).await {
            Ok(true) if !close => {}
            _ => {
                let _ = io.shutdown().await;
                return End::Done;
            }
        }
    }
}

/// Reads until `buf` holds a whole request head; `Request` when it is one
/// this path serves (its head taken off `buf`), `Handoff` for anything else.
async fn next_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
    header_timeout: Option<Duration>,
    watch: &mut Watch,
    mut idle: Pin<&mut tokio::time::Sleep>,
) -> Next {
    // The head must be whole by then, counted (as hyper's server counts it)
    // from the start of the wait, idle keep-alive time included.
    let until = Instant::now() + header_timeout.unwrap_or(Duration::from_secs(86_400));
    loop {
        if !buf.is_empty() {
            match parse(buf) {
                Parsed::Request(r, asks) => return Next::Request(r, asks),
                Parsed::Partial if buf.len() < max_head => {}
                _ => return Next::Handoff,
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let n = if buf.is_empty() {
            // Idle between requests: the next one, shutdown, or the timeout.
            // A plain poll of the three, cheaper than `select!` on this
            // per-request path; the connection's one idle timer is re-armed
            // only when it fires before this wait's deadline.
            let mut read = pin!(io.read_buf(buf));
            let mut stop = pin!(watch.signalled());
            match std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if header_timeout.is_some() && idle.as_mut().poll(cx).is_ready() {
                    if Instant::now() >= until {
                        return Poll::Ready(None);
                    }
                    idle.as_mut().reset(until);
                    if idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                Poll::Pending
            })
            .await
            {
                Some(r) => r,
                None => return Next::Closed,
            }
        } else {
            // Part of a head: the rest must come by the deadline.
            match tokio::time::timeout_at(until, io.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => return Next::Closed,
            }
        };
        if let Ok(0) | Err(_) = n {
            return Next::Closed;
        }
    }
}

/// What a request asks of the connection and the response's framing.
#[derive(Clone, Copy, Debug, Default)]
struct Asks {
    /// `Connection: close`.
    close: bool,
    /// `TE: trailers`: the client takes trailers after a chunked body.
    trailers: bool,
}

#[allow(clippy::large_enum_variant)]
enum Parsed {
    Request(Request<RequestBody>, Asks),
    Partial,
    /// Not for this path (or not valid): hyper takes it.
    Other,
}

/// Parses a request head off the front of `buf` if it is complete and one
/// this path serves: HTTP/1.1, no body, no upgrade, no `Expect`.
fn parse(buf: &mut BytesMut) -> Parsed {
    let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let n = match parsed.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if parsed.version != Some(1) {
        return Parsed::Other;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Parsed::Other;
    };
    if method == Method::CONNECT {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        (start + s.len() <= n).then_some((start, start + s.len()))
    };
    let Some(path) = parsed.path.and_then(|p| span(p.as_bytes())) else {
        return Parsed::Other;
    };
    let count = parsed.headers.len();
    let mut fields = Vec::with_capacity(count);
    let mut asks = Asks::default();
    for h in parsed.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        if name == TRANSFER_ENCODING
            || name == EXPECT
            || name == UPGRADE
            || (name == CONTENT_LENGTH && h.value != b"0")
        {
            return Parsed::Other;
        }
        if name == TE {
            asks.trailers = h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
        }
        if name == CONNECTION {
            for t in h.value.split(|b| *b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    asks.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        let (start, end) = if h.value.is_empty() {
            (0, 0)
        } else {
            match span(h.value) {
                Some(s) => s,
                None => return Parsed::Other,
            }
        };
        fields.push((name, start, end));
    }
    let head = buf.split_to(n).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.1)) else {
        // Put the head back for hyper, which answers 400.
        let mut back = BytesMut::from(&head[..]);
        back.extend_from_slice(buf);
        *buf = back;
        return Parsed::Other;
    };
    let mut map = HeaderMap::with_capacity(count);
    for (name, start, end) in fields {
        match HeaderValue::from_maybe_shared(head.slice(start..end)) {
            Ok(v) => {
                map.append(name, v);
            }
            Err(_) => {
                let mut back = BytesMut::from(&head[..]);
                back.extend_from_slice(buf);
                *buf = back;
                return Parsed::Other;
            }
        }
    }
    let mut req = Request::new(RequestBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Parsed::Request(req, asks)
}

/// Runs `work` to its answer, reading the connection meanwhile: bytes of a
/// pipelined next request are kept in `buf`; end-of-file (the client went
/// away) drops `work` and gives `None`.
async fn answer_unless_gone<S, F>(
    mut work: Pin<&mut F>,
    io: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
) -> Option<Response<ResponseBody>>
where
    S: AsyncRead + Unpin,
    F: Future<Output = Response<ResponseBody>>,
{
    let mut reading = true;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(r) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        while reading {
            if buf.len() >= max_head {
                // Enough of the next request waits; stop reading until this
                // one is answered.
                reading = false;
                break;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            match poll_read_buf(io, buf, cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => break,
            }
        }
        Poll::Pending
    })
    .await
}

fn poll_read_buf<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    pin!(io.read_buf(buf)).poll(cx)
}

/// How the response body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `resp`; `Ok(true)` when the connection can carry another request.
async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: Response<ResponseBody>,
    head_only: bool,
    close: bool,
    trailers_wanted: bool,
) -> io::Result<bool> {
    let (parts, mut body) = resp.into_parts();
    out.clear();
    let framing = encode_head(out, parts.status, &parts.headers, &body, head_only, close);
    if matches!(framing, Framing::None) {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(true);
    }
    let chunked = matches!(framing, Framing::Chunked);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    // The head waits for the body's first bytes only if they are at hand.
    let mut pending_head = true;
    let mut trailers = None;
    loop {
        let frame = if pending_head {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                    pending_head = false;
                    body.frame().await
                }
            }
        } else {
            body.frame().await
        };
        match frame {
            None => break,
            Some(Err(_)) => {
                // The upstream broke the body off: so must the client's copy.
                if pending_head && !out.is_empty() {
                    let _ = io.write_all(out).await;
                }
                return Ok(false);
            }
            Some(Ok(f)) => {
                let mut data = match f.into_data() {
                    Ok(d) => d,
                    Err(f) => {
                        // Sent after a chunked body to a client that takes them.
                        if chunked && trailers_wanted {
                            trailers = f.into_trailers().ok();
                        }
                        continue;
                    }
                };
                if data.is_empty() {
                    continue;
                }
                if !chunked {
                    if (data.len() as u64) > left {
                        data.truncate(left as usize);
                    }
                    left -= data.len() as u64;
                }
                if pending_head || data.len() <= COALESCE {
                    if !pending_head {
                        out.clear();
                    }
                    if chunked {
                        chunk_size(out, data.len());
                    }
                    out.extend_from_slice(&data);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if !pending_head || out.len() > COALESCE {
                        io.write_all(out).await?;
                        out.clear();
                        pending_head = false;
                    }
                } else {
                    out.clear();
                    if chunked {
                        chunk_size(out, data.len());
                        io.write_all(out).await?;
                    }
                    while data.has_remaining() {
                        let n = io.write(&data).await?;
                        if n == 0 {
                            return Err(io::ErrorKind::WriteZero.into());
                        }
                        data.advance(n);
                    }
                    if chunked {
                        io.write_all(b"\r\n").await?;
                    }
                }
                if !chunked && left == 0 {
                    break;
                }
            }
        }
    }
    if chunked {
        if !pending_head {
            out.clear();
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        pending_head = true;
    }
    if pending_head && !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await?;
    // A body shorter than its length leaves the client waiting: close.
    Ok(chunked || left == 0 || left == u64::MAX)
}

fn chunk_size(out: &mut Vec<u8>, n: usize) {
    use std::io::Write as _;
    let _ = write!(out, "{n:x}\r\n");
}

fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &ResponseBody,
    head_only: bool,
    close: bool,
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body || head_only {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    out.extend_from_slice(b"\r\n");
    match framing {
        Framing::Length(0) => Framing::None,
        f => f,
    }
}

fn itoa(n: u64) -> String {
    n.to_string()
}

thread_local! {
    /// The `date` value, remade once a second.
    static DATE_CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// A connection with bytes already read off it, which reads come from
/// first.
pub(super) struct Rewind<S> {
    pre: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(out.remaining());
            out.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Parsed, BytesMut) {
        let mut b = BytesMut::from(s.as_bytes());
        (parse(&mut b), b)
    }

    #[test]
    fn simple_requests_are_taken_and_others_left() {
        let (p, rest) = parse_str("GET /a?b=1 HTTP/1.1\r\nHost: x:80\r\nX-A: 1\r\n\r\nGET /next");
        let Parsed::Request(r, asks) = p else {
            panic!("not taken")
        };
        assert!(!asks.close && !asks.trailers);
        assert_eq!(r.uri(), "/a?b=1");
        assert_eq!(r.headers()["host"], "x:80");
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(&rest[..], b"GET /next");
        let (p, _) = parse_str("GET http://x/y HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(p, Parsed::Request(_, Asks { close: true, .. })));
        for other in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT a:1 HTTP/1.1\r\n\r\n",
            "GET http://[::1 HTTP/1.1\r\n\r\n",
            "G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            let (p, rest) = parse_str(other);
            assert!(matches!(p, Parsed::Other), "{other:?}");
            // Nothing is consumed of what hyper is to read.
            assert_eq!(&rest[..], other.as_bytes(), "{other:?}");
        }
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHo").0,
            Parsed::Partial
        ));
    }

    #[test]
    fn heads_are_framed() {
        let mut out = Vec::new();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert(DATE, HeaderValue::from_static("x"));
        let f = encode_head(
            &mut out,
            StatusCode::OK,
            &h,
            &ResponseBody::empty(),
            false,
            true,
        );
        assert!(matches!(f, Framing::Length(2)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        let f = encode_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &ResponseBody::empty(),
            false,
            false,
        );
        assert!(matches!(f, Framing::None));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\ndate: "), "{s}");
        assert!(s.ends_with(" GMT\r\ncontent-length: 0\r\n\r\n"), "{s}");
    }
}
