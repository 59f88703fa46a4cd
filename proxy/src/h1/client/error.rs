//! How an exchange of the lean client fails.

use http::Request;
use std::io;

/// Why an exchange failed.
pub(crate) enum Failure<B> {
    /// A reused connection turned out closed before any of the answer came:
    /// the server dropped an idle connection as the request went out. The
    /// request (which has no body) is handed back to be sent elsewhere;
    /// only idempotent requests come back after they were written.
    Stale(Box<Request<B>>),
    Io(io::Error),
}

/// A response that breaks HTTP/1 syntax or the codec's limits.
pub(super) fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}
