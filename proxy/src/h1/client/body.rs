//! Response bodies read by the lean client straight from the connection:
//! by length, chunked (with trailers) or until close; the connection goes
//! home when a body ends cleanly.

use super::error::invalid;
use crate::h1::chunked::parse_size;
use crate::h1::limits::{MAX_CHUNK_LINE, MAX_TRAILERS};
use crate::transport::{Pool, RawConn};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

/// Where a connection goes when its exchange is over.
pub(crate) struct Home<B> {
    pub(crate) pool: Arc<Pool<B>>,
    pub(crate) max_idle: usize,
    /// The idle age is counted from the start of the request (a little
    /// early, so expiry errs on the safe side) without another clock read.
    pub(crate) since: Instant,
}

pub(super) enum State {
    /// Bytes of body still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the server closes the connection.
    Close,
    Done,
}

pub(super) enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers(Box<HeaderMap>, usize),
}

/// A response body read from its connection as it is polled; `B` is the
/// request body type of the pool the connection goes back to.
pub(crate) struct Body<B> {
    conn: Option<RawConn>,
    state: State,
    keep_alive: bool,
    home: Option<Home<B>>,
}

impl<B> Body<B> {
    pub(super) fn new(conn: RawConn, state: State, keep_alive: bool, home: Home<B>) -> Body<B> {
        Body {
            conn: Some(conn),
            state,
            keep_alive,
            home: Some(home),
        }
    }

    /// The body has ended: the connection goes home if it can carry another
    /// exchange (nothing unread, no close asked).
    pub(super) fn finish(&mut self) {
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

impl<B> http_body::Body for Body<B> {
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
                    let Some(conn) = this.conn.as_mut() else {
                        return this.fail(invalid("body read after its end"));
                    };
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
                    this.state = match parse_size(&line) {
                        Some(0) => State::Chunked(Chunk::Trailers(Box::default(), 0)),
                        Some(n) => State::Chunked(Chunk::Data(n)),
                        None => return this.fail(invalid("invalid chunk size")),
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
