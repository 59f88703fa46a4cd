//! Fields that describe one connection rather than the message (RFC 9110
//! section 7.6.1): HTTP/1's `Connection` and the fields it names. A proxy
//! removes them before forwarding a message, whichever protocol the next
//! hop speaks (HTTP/2 forbids them outright).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the proxy-only ones clients send to an HTTP proxy. `Trailer` is not
/// one: it names the message's trailer fields, which the next hop needs to
/// send them on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    // The settings of an h2c upgrade, which is never passed on.
    HeaderName::from_static("http2-settings"),
];

/// Fields a `Connection` header may not remove: the message's authority and
/// framing are not the connection's to take away.
const PROTECTED: [HeaderName; 3] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// Whether `Connection` names a field it may not remove (a request that does
/// is refused).
pub(crate) fn names_protected(connection: &HeaderValue) -> bool {
    super::tokens::tokens(connection.as_bytes()).any(|t| {
        PROTECTED
            .iter()
            .any(|p| t.eq_ignore_ascii_case(p.as_str().as_bytes()))
    })
}

/// Fields that have no place in trailers (RFC 9110 section 6.5.1): framing,
/// routing and connection fields, and those that describe how to read the
/// content. They are dropped from trailers in both directions.
const NOT_IN_TRAILERS: [HeaderName; 8] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::TRAILER,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::AUTHORIZATION,
];

/// Removes from `trailers` what may not be sent as a trailer.
pub(crate) fn strip_trailer_fields(trailers: &mut HeaderMap) {
    strip_hop_by_hop(trailers);
    for n in &NOT_IN_TRAILERS {
        trailers.remove(n);
    }
    trailers.remove(header::TE);
}

/// One of the fixed hop-by-hop headers (or `TE`, which is kept only as
/// `trailers`).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::TE
}

/// Removes hop-by-hop headers, and those the `Connection` header names.
/// `TE: trailers` survives: gRPC needs it end to end.
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry few or none: one pass over the names (cheap
    // comparisons for standard headers) finds them, so only those present
    // cost a hashed removal.
    let mut present = 0u8;
    let mut te = false;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        } else if k == header::TE {
            te = true;
        }
    }
    if present == 0 && !te {
        return;
    }
    if present & 1 != 0 {
        // HOP_BY_HOP[0] is Connection: the headers it names go too. The usual
        // tokens (`close`, `keep-alive`, `upgrade`) name no other header.
        let named: Vec<HeaderName> = h
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|n| {
                !n.eq_ignore_ascii_case("close")
                    && !n.eq_ignore_ascii_case("keep-alive")
                    && !n.eq_ignore_ascii_case("upgrade")
                    && !PROTECTED.iter().any(|p| n.eq_ignore_ascii_case(p.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if !te {
        return;
    }
    if let Some(te) = h.get(header::TE) {
        if te.as_bytes().eq_ignore_ascii_case(b"trailers") {
            return;
        }
        let keep_trailers = te
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        h.remove(header::TE);
        if keep_trailers {
            h.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::UPGRADE).is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }

    #[test]
    fn connection_naming_a_header_removes_it_even_when_nothing_else_is_there() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("X-Trace, keep-alive"),
        );
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert!(
            h.is_empty() || (h.len() == 1 && h[header::TE] == "trailers"),
            "{h:?}"
        );
    }
}
