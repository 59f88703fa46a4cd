//! Handles on the fast path's request-head parser and on the request-stream
//! guard for the fuzz targets in `fuzz/`, which cannot reach the crate's own
//! items. Compiled only with `--cfg fuzzing` (set by `cargo fuzz`); nothing
//! here is part of the proxy.

use super::guard::{Guard, Verdict};
use super::request::{parse, Parsed};
use bytes::BytesMut;
use http::Request;

/// What the fast path made of the front of a buffer (see `request::parse`).
pub enum RequestHead<Q> {
    /// A head the fast path serves, taken off the buffer.
    Request {
        req: Request<Q>,
        /// `Connection: close`.
        close: bool,
        /// `TE: trailers`.
        trailers: bool,
    },
    /// Not complete yet; nothing taken.
    Partial,
    /// For hyper; nothing taken.
    Other,
}

/// `request::parse` on `buf`.
pub fn parse_request_head<Q: Default>(buf: &mut BytesMut) -> RequestHead<Q> {
    match parse(buf) {
        Parsed::Request(req, asks) => RequestHead::Request {
            req,
            close: asks.close,
            trailers: asks.trailers,
        },
        Parsed::Partial => RequestHead::Partial,
        Parsed::Other => RequestHead::Other,
    }
}

/// What `Guard::scan` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardVerdict {
    Pass,
    Cut(usize),
    Stop,
}

/// The guard of one connection's request stream.
pub struct RequestGuard(Guard);

impl RequestGuard {
    pub fn new(max_head: usize) -> RequestGuard {
        RequestGuard(Guard::new(max_head))
    }

    /// `Guard::scan` of the next bytes read.
    pub fn scan(&mut self, bytes: &[u8]) -> GuardVerdict {
        match self.0.scan(bytes) {
            Verdict::Pass => GuardVerdict::Pass,
            Verdict::Cut(n) => GuardVerdict::Cut(n),
            Verdict::Stop => GuardVerdict::Stop,
        }
    }
}
