//! What the request path reads from a request's headers: the authority it
//! is addressed to, and an upgrade it asks for. (Hop-by-hop hygiene is the
//! HTTP/1 codec's: `crate::h1`.)

use crate::body::RequestBody;
use crate::h1::tokens::has_token;
use http::header::{self, HeaderMap, HeaderValue};
use http::Request;

/// The upgrade protocol a request asks for (`Connection: upgrade` + `Upgrade: x`).
pub(crate) fn upgrade_requested(h: &HeaderMap) -> Option<HeaderValue> {
    let conn = h.get(header::CONNECTION)?;
    if !has_token(conn.as_bytes(), b"upgrade") {
        return None;
    }
    h.get(header::UPGRADE).cloned()
}

/// The authority a request is addressed to: the absolute URI's (proxy form,
/// HTTP/2) or the Host header's.
pub(crate) fn authority_of(req: &Request<RequestBody>) -> Option<&str> {
    authority_in(req.uri(), req.headers().get(header::HOST))
}

/// The URI's authority, else the Host value's, without any userinfo.
pub(crate) fn authority_in<'a>(
    uri: &'a http::Uri,
    host: Option<&'a HeaderValue>,
) -> Option<&'a str> {
    let a = match uri.authority() {
        Some(a) => a.as_str(),
        None => host?.to_str().ok()?,
    };
    Some(a.rsplit_once('@').map_or(a, |(_, host)| host))
}
