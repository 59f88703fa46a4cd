//! Reading a request head for the fast path: whether it is one the path
//! serves, and the `Request` built on the head's own bytes.

use crate::h1::head::{header_map, span};
use crate::h1::limits::MAX_HEADERS;
use crate::h1::tokens::{has_token, tokens};
use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, Method, Request, Uri, Version};
use std::mem::MaybeUninit;

/// What a request asks of the connection and the response's framing.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Asks {
    /// `Connection: close`.
    pub(crate) close: bool,
    /// `TE: trailers`: the client takes trailers after a chunked body.
    pub(crate) trailers: bool,
}

#[allow(clippy::large_enum_variant)]
pub(super) enum Parsed<Q> {
    Request(Request<Q>, Asks),
    Partial,
    /// Not for this path (or not valid): hyper takes it.
    Other,
}

/// Parses a request head off the front of `buf` if it is complete and one
/// this path serves: HTTP/1.1, no body, no upgrade, no `Expect`. The
/// request's body is an empty `Q`.
pub(super) fn parse<Q: Default>(buf: &mut BytesMut) -> Parsed<Q> {
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
    // A fragment is hyper's (and the guard's) to refuse.
    let Some(path) = parsed
        .path
        .filter(|p| !p.contains('#'))
        .and_then(|p| span(base, n, p.as_bytes()))
    else {
        return Parsed::Other;
    };
    let mut fields = Vec::with_capacity(parsed.headers.len());
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
            asks.trailers = has_token(h.value, b"trailers");
        }
        if name == CONNECTION {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    asks.close = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        let Some((start, end)) = span(base, n, h.value) else {
            return Parsed::Other;
        };
        fields.push((name, start, end));
    }
    let head = buf.split_to(n).freeze();
    // A URI or value `http` refuses: the head goes back for hyper, which
    // answers 400.
    let put_back = |buf: &mut BytesMut| {
        let mut back = BytesMut::from(&head[..]);
        back.extend_from_slice(buf);
        *buf = back;
        Parsed::Other
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.1)) else {
        return put_back(buf);
    };
    let Some(map) = header_map(&head, fields) else {
        return put_back(buf);
    };
    let mut req = Request::new(Q::default());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Parsed::Request(req, asks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Parsed<()>, BytesMut) {
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
            "GET /a#f HTTP/1.1\r\n\r\n",
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
}
