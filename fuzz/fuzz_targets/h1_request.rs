//! The fast path's request-head parser (`h1/server/request.rs`): whatever
//! the bytes, it takes a whole head or nothing, serves only what it may
//! (HTTP/1.1, no body, no upgrade, no `Expect`, no `CONNECT`), and reads
//! nothing past the head. Each request taken then goes through the request
//! checks (`http/checks.rs`), as it does in the proxy.

#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzz_surface::{check_request, parse_request_head, RequestHead};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let (req, close) = match parse_request_head::<()>(&mut buf) {
        RequestHead::Partial | RequestHead::Other => {
            assert_eq!(&buf[..], data, "a head left for hyper is left whole");
            return;
        }
        RequestHead::Request { req, close, .. } => (req, close),
    };
    let used = data.len() - buf.len();
    assert_eq!(&data[used..], &buf[..], "only the head is taken");
    assert!(data[..used].ends_with(b"\n"), "the head ends its last line");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_ne!(req.method(), Method::CONNECT);
    for name in [TRANSFER_ENCODING, EXPECT, UPGRADE] {
        assert!(!req.headers().contains_key(&name), "{name} taken");
    }
    for v in req.headers().get_all(CONTENT_LENGTH) {
        assert_eq!(v, "0", "a request with a body taken");
    }
    // The head alone reads the same: nothing after it was looked at.
    let mut alone = BytesMut::from(&data[..used]);
    let RequestHead::Request {
        req: again,
        close: close_again,
        ..
    } = parse_request_head::<()>(&mut alone)
    else {
        panic!("the head alone is not taken");
    };
    assert!(alone.is_empty());
    assert_eq!(again.method(), req.method());
    assert_eq!(again.uri(), req.uri());
    assert_eq!(again.headers(), req.headers());
    assert_eq!(close_again, close);
    // As the proxy does next: inbound (no authority needed) and outbound.
    for need_authority in [false, true] {
        let mut copy = http::Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        if let Ok(checked) = check_request(copy, need_authority) {
            let hosts = checked.headers().get_all(http::header::HOST).iter().count();
            assert!(hosts <= 1, "more than one Host passed");
            if let Some(a) = checked.uri().authority() {
                let host = checked.headers().get(http::header::HOST).expect("a Host");
                assert!(host.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
            }
        }
    }
});
