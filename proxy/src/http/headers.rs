//! Header hygiene between hops.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the proxy-only ones clients send to an HTTP proxy. `Trailer` is not
/// one: it names the message's trailer fields, which the next hop needs to
/// send them on.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those the `Connection` header names.
/// `TE: trailers` survives: gRPC needs it end to end.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons
    // for standard headers) saves a hashed removal per hop-by-hop name.
    if !h.keys().any(|k| HOP_BY_HOP.contains(k) || k == header::TE) {
        return;
    }
    if let Some(conn) = h.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
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

/// The upgrade protocol a request asks for (`Connection: upgrade` + `Upgrade: x`).
pub fn upgrade_requested(h: &HeaderMap) -> Option<HeaderValue> {
    let conn = h.get(header::CONNECTION)?.to_str().ok()?;
    if !conn
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    h.get(header::UPGRADE).cloned()
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
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-keep").unwrap(), "1");
    }
}
