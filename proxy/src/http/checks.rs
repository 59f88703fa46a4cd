//! What a request must be for the proxy to pass it on: one authority and
//! one framing that every hop after it reads the same way.
//!
//! Refused with 400 (RFC 9112 sections 3.2 and 6, RFC 9113 section 8.3.1):
//! - more than one `Host`, or a `Host` that is no `host[:port]` (userinfo,
//!   a path, spaces, an empty value);
//! - an absolute-form target (or HTTP/2 `:authority`) with userinfo, or
//!   with another scheme than http or https;
//! - a `Host` that names another authority than the HTTP/1 absolute-form
//!   target or the HTTP/2 `:authority`;
//! - a `Connection` header naming `Host`, `Content-Length` or
//!   `Transfer-Encoding` (it may not take them away);
//! - a `Transfer-Encoding` other than exactly `chunked` (one field, one
//!   coding), or more than one `Content-Length` field;
//! - an authority-form target (`GET a`) on any method but CONNECT;
//! - a method with lower-case letters (methods are upper-case tokens; a
//!   look-alike is a way past method rules).
//!
//! An absolute-form request without `Host` is given its target's authority
//! as `Host`, so that routing, policy, the log, the span and the upstream
//! all see one authority. The checks make one pass over the header fields.

use crate::body::RequestBody;
use crate::h1::names_protected;
use crate::http::errors::ProxyError;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Request, Version};

/// Checks `req` (see the module header) and settles its `Host`.
/// `need_authority`: the request is routed by its authority (outbound), so
/// it must have one.
pub(crate) fn request(
    req: &mut Request<RequestBody>,
    need_authority: bool,
) -> Result<(), ProxyError> {
    if req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase())
    {
        return Err(bad("a method must be an upper-case token"));
    }
    let mut host: Option<&HeaderValue> = None;
    let mut lengths = 0;
    let mut codings = 0;
    for (name, value) in req.headers() {
        if name == HOST {
            if host.is_some() {
                return Err(bad("more than one Host"));
            }
            if !valid_authority(value.as_bytes()) {
                return Err(bad("an invalid Host"));
            }
            host = Some(value);
        } else if name == CONTENT_LENGTH {
            lengths += 1;
        } else if name == TRANSFER_ENCODING {
            codings += 1;
            if !value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
            {
                return Err(bad("a transfer coding other than chunked"));
            }
        } else if name == CONNECTION && names_protected(value) {
            return Err(bad("Connection may not name Host or framing fields"));
        }
    }
    if lengths > 1 {
        return Err(bad("more than one Content-Length"));
    }
    if codings > 1 {
        return Err(bad("more than one Transfer-Encoding"));
    }
    if req.uri().scheme().is_none()
        && req.uri().authority().is_some()
        && req.method() != http::Method::CONNECT
    {
        // `GET a HTTP/1.1`: only CONNECT takes an authority-form target.
        return Err(bad("a target that is neither a path nor an absolute URI"));
    }
    let Some(target) = req.uri().authority() else {
        return match host {
            Some(_) => Ok(()),
            // HTTP/1.1 demands a Host; and outbound, nothing else names the
            // destination.
            None if need_authority || req.version() == Version::HTTP_11 => {
                Err(bad("no Host header or authority"))
            }
            None => Ok(()),
        };
    };
    if !matches!(req.uri().scheme_str(), None | Some("http") | Some("https")) {
        return Err(bad("a target scheme other than http or https"));
    }
    if !valid_authority(target.as_str().as_bytes()) {
        return Err(bad("an invalid authority in the target"));
    }
    if req.version() == Version::HTTP_2 {
        if host.is_some_and(|h| {
            !h.as_bytes()
                .eq_ignore_ascii_case(target.as_str().as_bytes())
        }) {
            return Err(bad("Host differs from :authority"));
        }
        return Ok(());
    }
    // HTTP/1 absolute form: a Host that names another authority is
    // refused (as HAProxy does) rather than overridden; without one, the
    // target's authority becomes the Host.
    match host {
        Some(h)
            if h.as_bytes()
                .eq_ignore_ascii_case(target.as_str().as_bytes()) =>
        {
            Ok(())
        }
        Some(_) => Err(bad("Host differs from the target's authority")),
        None => {
            let value = HeaderValue::from_str(target.as_str())
                .map_err(|_| bad("an invalid authority in the target"))?;
            req.headers_mut().insert(HOST, value);
            Ok(())
        }
    }
}

fn bad(why: &'static str) -> ProxyError {
    ProxyError::BadRequest(why)
}

/// `host[:port]` (RFC 3986 section 3.2.2): a registered name, an IPv4
/// address or a bracketed IP literal, and an optional numeric port. No
/// userinfo, path, space or control character.
pub(crate) fn valid_authority(b: &[u8]) -> bool {
    let host_end = if let Some(rest) = b.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|c| *c == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
        {
            return false;
        }
        end + 2
    } else {
        // One pass: a registered name or IPv4 address stops at the port's
        // colon (not a name byte) or at anything else not allowed.
        let n = b.iter().take_while(|c| reg_name_byte(**c)).count();
        if n == 0 {
            return false;
        }
        n
    };
    match &b[host_end..] {
        [] => true,
        [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// A byte of a registered name: unreserved, sub-delims or `%` (RFC 3986).
fn reg_name_byte(c: u8) -> bool {
    REG_NAME[c as usize]
}

/// Which bytes may appear in a registered name, looked up (this runs for
/// every byte of every request's authority).
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests;
