//! The request checks (`http/checks.rs`): `valid_authority` on any bytes,
//! and `request` on requests built from fuzz bytes the way hyper and h2
//! would hand them over (any method, target, version and fields `http`
//! accepts). A request that passes has one `Host`, a valid one, naming the
//! target's authority when there is one, and one framing.
//!
//! Input: flags (bits 0-1: HTTP/1.0, 1.1 or 2; bit 2: outbound), then
//! lines: the method, the target, and `name:value` fields.

#![no_main]

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzz_surface::{check_request, valid_authority};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The authority rule alone, on the whole input.
    if valid_authority(rest) {
        assert!(!rest.is_empty());
        assert!(
            !rest
                .iter()
                .any(|b| b" /?#@\\\"<>{}|^`".contains(b) || b.is_ascii_control()),
            "{rest:?}"
        );
        assert!(HeaderValue::from_bytes(rest).is_ok(), "cannot be a Host");
    }
    let mut lines = rest.split(|b| *b == b'\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else {
        return;
    };
    let version = [
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_11,
    ][usize::from(flags & 3)];
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    let need_authority = flags & 4 != 0;
    let had_host = req.headers().contains_key(HOST);
    let Ok(req) = check_request(req, need_authority) else {
        return;
    };
    let h = req.headers();
    assert!(h.get_all(HOST).iter().count() <= 1, "two Hosts passed");
    assert!(h.get_all(CONTENT_LENGTH).iter().count() <= 1);
    assert!(h.get_all(TRANSFER_ENCODING).iter().count() <= 1);
    assert!(!req
        .method()
        .as_str()
        .bytes()
        .any(|b| b.is_ascii_lowercase()));
    if let Some(host) = h.get(HOST) {
        assert!(valid_authority(host.as_bytes()), "an invalid Host passed");
    }
    match req.uri().authority() {
        Some(a) => {
            assert!(valid_authority(a.as_str().as_bytes()));
            assert!(matches!(
                req.uri().scheme_str(),
                Some("http" | "https") | None
            ));
            if version != Version::HTTP_2 || had_host {
                let host = h.get(HOST).expect("a Host beside an absolute target");
                assert!(host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
            }
        }
        None if need_authority => assert!(h.contains_key(HOST), "outbound without authority"),
        None => {}
    }
});
