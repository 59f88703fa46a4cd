//! The crate's parsers of untrusted bytes, reachable from the fuzz targets in
//! `fuzz/` and from nowhere else: thin wrappers over crate-private items.
//! Compiled only with `--cfg fuzzing` (set by `cargo fuzz`); nothing here is
//! part of the proxy's interface.

use crate::body::RequestBody;
use crate::http::errors::ProxyError;
use crate::listen::detect::{self, Detected};
use http::Request;

pub use crate::h1::client::fuzz::{
    exchange, parse_chunk_size, parse_response_head, settle_response, write_chunk_size,
    BodyFraming, Exchange, ResponseHead,
};
pub use crate::h1::server::fuzz::{parse_request_head, GuardVerdict, RequestGuard, RequestHead};

/// What a client speaks, judged from its first bytes (`detect::Detected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tls,
    Opaque,
}

/// How many of a connection's first bytes `detect` looks at; they always
/// get a verdict.
pub const DETECT_PEEK: usize = detect::PEEK;

/// `detect::classify`: `None` when more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    detect::classify(buf).map(|d| match d {
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
        Detected::Tls => Protocol::Tls,
        Detected::Opaque => Protocol::Opaque,
        Detected::Nothing => unreachable!("classify never answers Nothing"),
    })
}

/// `checks::valid_authority`.
pub fn valid_authority(b: &[u8]) -> bool {
    crate::http::checks::valid_authority(b)
}

/// `checks::request` on `req` (given an empty body); the 400's reason when
/// it is refused.
pub fn check_request(req: Request<()>, need_authority: bool) -> Result<Request<()>, &'static str> {
    let mut req = req.map(|()| RequestBody::Empty);
    match crate::http::checks::request(&mut req, need_authority) {
        Ok(()) => Ok(req.map(|_| ())),
        Err(ProxyError::BadRequest(why)) => Err(why),
        Err(_) => Err("refused otherwise"),
    }
}
