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
//!
//! The server knows nothing of what it serves: it is given its limits and a
//! service, called with each request (whose body type `Q` is empty), whose
//! response (of any body type) it writes.

#[cfg(fuzzing)]
pub(crate) mod fuzz;
mod guard;
mod request;
mod response;
mod rewind;

use crate::drain::Watch;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use request::{parse, Asks, Parsed};
use response::write_response;
pub(crate) use rewind::Rewind;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::Instant;

/// The wait that stands for "no header timeout" (`--header-read-timeout 0`).
const NO_TIMEOUT: Duration = Duration::from_secs(86_400);

/// What the server is given of the listener's settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Longest request head; past it the request goes to hyper (which
    /// answers 431).
    pub(crate) max_head: usize,
    /// `--header-read-timeout` (zero: none).
    pub(crate) header_read_timeout: Duration,
}

/// How a connection's time with the fast path ended.
pub(crate) enum End<S> {
    /// Closed, or cut off: nothing more to do.
    Done,
    /// Hand the connection, with what was read of it, to hyper.
    Handoff(Rewind<S>),
}

/// What the next request head turned out to be. (Boxing the request would
/// cost an allocation per request to save a move.)
#[allow(clippy::large_enum_variant)]
enum Next<Q> {
    Request(Request<Q>, Asks),
    Handoff,
    Closed,
}

/// Serves requests on `io` until the connection ends or a request needs
/// hyper's server. Each request (with an empty `Q` body) goes to `service`,
/// whose response is written back.
pub(crate) async fn serve<S, Q, R, F, Fut>(
    mut io: S,
    limits: Limits,
    watch: &mut Watch,
    mut service: F,
) -> End<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Q: Default,
    R: http_body::Body<Data = Bytes> + Unpin,
    F: FnMut(Request<Q>) -> Fut,
    Fut: Future<Output = Response<R>>,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let max_head = limits.max_head;
    let header_timeout = Some(limits.header_read_timeout).filter(|d| !d.is_zero());
    // One timer for the connection's idle waits, re-armed only when it
    // fires early (not per request).
    let mut idle = pin!(tokio::time::sleep(header_timeout.unwrap_or(NO_TIMEOUT)));
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
            Next::Handoff => return End::Handoff(Rewind::new(buf.freeze(), io, max_head)),
            Next::Closed => return End::Done,
        };
        let head_only = req.method() == Method::HEAD;
        // Pinned where it is made: the handler's future is large, and
        // moving it into a callee costs a copy of it per request.
        let work = pin!(service(req));
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
async fn next_request<S: AsyncRead + Unpin, Q: Default>(
    io: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
    header_timeout: Option<Duration>,
    watch: &mut Watch,
    mut idle: Pin<&mut tokio::time::Sleep>,
) -> Next<Q> {
    // The head must be whole by then, counted (as hyper's server counts it)
    // from the start of the wait, idle keep-alive time included.
    let until = Instant::now() + header_timeout.unwrap_or(NO_TIMEOUT);
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

/// Runs `work` to its answer, reading the connection meanwhile: bytes of a
/// pipelined next request are kept in `buf`; end-of-file (the client went
/// away) drops `work` and gives `None`.
async fn answer_unless_gone<S, F, R>(
    mut work: Pin<&mut F>,
    io: &mut S,
    buf: &mut BytesMut,
    max_head: usize,
) -> Option<Response<R>>
where
    S: AsyncRead + Unpin,
    F: Future<Output = Response<R>>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;
    use http_body_util::Full;

    const LIMITS: Limits = Limits {
        max_head: 8192,
        header_read_timeout: Duration::from_secs(30),
    };

    #[tokio::test]
    async fn serves_bodiless_requests_then_hands_the_rest_to_hyper() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let drain = Drain::new();
        let mut watch = drain.watch();
        let mut seen = Vec::new();
        let service = |req: Request<()>| {
            seen.push(req.uri().to_string());
            async { Response::new(Full::new(Bytes::from_static(b"hi"))) }
        };
        let post = b"POST /b HTTP/1.1\r\nContent-Length: 1\r\n\r\nz";
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        client.write_all(post).await.unwrap();
        let end = serve(server, LIMITS, &mut watch, service).await;
        assert_eq!(seen, ["/a"]);
        let End::Handoff(mut rest) = end else {
            panic!("not handed off")
        };
        let mut answer = vec![0; 1024];
        let n = client.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("content-length: 2\r\n\r\nhi"), "{answer}");
        let mut handed = vec![0; post.len()];
        rest.read_exact(&mut handed).await.unwrap();
        assert_eq!(&handed[..], post, "hyper reads the request from its start");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_ends_the_connection() {
        let (client, server) = tokio::io::duplex(1024);
        drop(client);
        let drain = Drain::new();
        let mut watch = drain.watch();
        let service = |_: Request<()>| async { Response::new(Full::new(Bytes::new())) };
        assert!(matches!(
            serve(server, LIMITS, &mut watch, service).await,
            End::Done
        ));
    }
}
