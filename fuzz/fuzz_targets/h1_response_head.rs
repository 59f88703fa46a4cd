//! The lean client's reading of an upstream's response head
//! (`h1/client/mod.rs` `parse_head`) and the settling of its framing
//! (`h1/framing.rs` `settle_response`): the head read in pieces is the head
//! read whole, and a settled head carries exactly one framing that agrees
//! with how its body will be read.
//!
//! Flags: bit 0, the request was HEAD.

#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use libfuzzer_sys::fuzz_target;
use weft_fuzz::Input;
use weft_proxy::fuzz_surface::{parse_response_head, settle_response, BodyFraming, ResponseHead};

type Read = Result<Option<(ResponseHead, Vec<u8>)>, String>;

/// Feeds `pieces` as reads arrive, parsing after each (as `send` does).
fn read(pieces: &[&[u8]]) -> Read {
    let mut buf = BytesMut::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        if let Some(head) = parse_response_head(&mut buf)? {
            // With what was read after the head.
            return Ok(Some((head, buf.to_vec())));
        }
    }
    Ok(None)
}

fn same(a: &Read, b: &Read) -> bool {
    match (a, b) {
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => true,
        (Ok(Some((x, _))), Ok(Some((y, _)))) => {
            x.status == y.status
                && x.version == y.version
                && x.headers == y.headers
                && x.close == y.close
                && x.keep_alive == y.keep_alive
                && x.other_hop == y.other_hop
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let whole = read(&[input.bytes]);
    let split = read(&input.pieces());
    assert!(same(&whole, &split), "the head depends on how it was read");
    let Ok(Some((mut head, rest))) = whole else {
        return;
    };
    // What follows the head is the end of the input, untouched.
    assert!(input.bytes.ends_with(&rest));
    let status = head.status.as_u16();
    assert!(status >= 200, "an interim answer taken as final");
    let head_req = input.flags & 1 == 1;
    let Ok(framing) = settle_response(status, head_req, &mut head.headers) else {
        return;
    };
    let h = &head.headers;
    assert!(!h.contains_key(TRANSFER_ENCODING), "the hop's coding kept");
    let lengths: Vec<_> = h.get_all(CONTENT_LENGTH).iter().collect();
    assert!(lengths.len() <= 1, "more than one Content-Length kept");
    let length = lengths.first().map(|v| {
        v.to_str()
            .expect("digits")
            .parse::<u64>()
            .expect("a length")
    });
    match framing {
        BodyFraming::None => {
            assert!(head_req || status == 204 || status == 304);
            if status == 204 {
                assert_eq!(length, None, "a length on a 204");
            }
        }
        BodyFraming::Length(n) => assert_eq!(length, Some(n)),
        BodyFraming::Chunked => assert_eq!(length, None, "a length beside chunked"),
        BodyFraming::UntilClose => assert_eq!(length, None),
    }
});
