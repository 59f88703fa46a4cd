//! Settling a response's framing (RFC 9112 section 6.3) before it is
//! relayed, so that the client gets exactly one framing, and the one that
//! matches the bytes it will be sent.
//!
//! The proxy re-frames every response for its client: it reads the
//! upstream's body by the upstream's framing and writes it with its own. A
//! stale or doubtful framing field left in the head would tell the client a
//! different story from the bytes that follow, so the rules are strict:
//! - `Transfer-Encoding` may only be `chunked` (one field, one coding). It
//!   wins over `Content-Length`, which is dropped; the coding itself is this
//!   hop's and is dropped too.
//! - `Content-Length` must be digits; repeated or list-valued copies must
//!   all agree and collapse into one. Anything else (`+5`, `5, 6`, two
//!   fields that differ) is refused.
//! - 1xx and 204 carry no body and no framing field; 304 and answers to HEAD
//!   carry no body, but keep a (valid) length, which describes the
//!   representation.
//!
//! A refused response is answered 502 `upstream-protocol`, and the
//! connection it came on is not used again.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

/// How the body of a settled response is delimited on the upstream's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (1xx, 204, 304, an answer to HEAD).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// Why a response cannot be relayed: what is wrong with its framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Checks the framing fields of a response with `status` (to a HEAD
/// request when `head_req`) and leaves in `headers` only the one the client
/// may see; says how the upstream's body is delimited. One pass over the
/// fields; the head is changed only when it must be.
pub(crate) fn settle_response(
    status: u16,
    head_req: bool,
    headers: &mut HeaderMap,
) -> Result<Framing, Malformed> {
    let (mut codings, mut chunked) = (0, false);
    let (mut lengths, mut length, mut plain) = (0, None, true);
    for (name, value) in headers.iter() {
        if name == TRANSFER_ENCODING {
            codings += 1;
            chunked = value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        } else if name == CONTENT_LENGTH {
            lengths += 1;
            // The common case, plain digits, without the list walk.
            if let Some(n) = digits(value.as_bytes()) {
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed("conflicting content-length values"));
                }
                length = Some(n);
                continue;
            }
            plain = false;
            for part in value.as_bytes().split(|b| *b == b',') {
                let n = digits(part.trim_ascii()).ok_or(Malformed("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed("conflicting content-length values"));
                }
                length = Some(n);
            }
        }
    }
    match codings {
        0 => {}
        1 if chunked => {
            headers.remove(TRANSFER_ENCODING);
        }
        1 => return Err(Malformed("transfer-encoding other than chunked")),
        _ => return Err(Malformed("more than one transfer-encoding field")),
    }
    let bodiless = status < 200 || status == 204;
    if bodiless || chunked {
        // No body; or Transfer-Encoding wins, and a length beside it says
        // nothing true.
        if lengths > 0 {
            headers.remove(CONTENT_LENGTH);
        }
        if bodiless {
            return Ok(Framing::None);
        }
    } else if let Some(n) = length.filter(|_| lengths > 1 || !plain) {
        // One `Content-Length: n` in place of copies or a list.
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if status == 304 || head_req {
        return Ok(Framing::None);
    }
    Ok(match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    })
}

/// `1*DIGIT` as a number (no sign, no space, no overflow).
pub(crate) fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests;
