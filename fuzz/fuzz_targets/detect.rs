//! Protocol detection (`listen/detect.rs` `classify`), judged from a
//! connection's first bytes as they arrive: a verdict given on a prefix must
//! be the verdict on all that follows, or the protocol a connection is
//! served with depends on how its first segment was split.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzz_surface::{classify, Protocol, DETECT_PEEK};

/// A byte of an HTTP token (RFC 9110 section 5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fuzz_target!(|data: &[u8]| {
    // `detect` sees no more than this; it must be enough.
    if data.len() >= DETECT_PEEK {
        assert!(classify(&data[..DETECT_PEEK]).is_some(), "undecided");
    }
    let last = classify(data);
    for n in 0..data.len().min(64) {
        if let Some(early) = classify(&data[..n]) {
            assert_eq!(
                Some(early),
                last,
                "{:?} classified {early:?}, then {last:?} with more bytes",
                String::from_utf8_lossy(&data[..n])
            );
            break;
        }
    }
    match last {
        Some(Protocol::Tls) => assert_eq!(data[0], 0x16),
        Some(Protocol::Http1) => {
            let method = data.iter().take_while(|b| tchar(**b)).count();
            assert!(
                (1..=20).contains(&method) && data.get(method) == Some(&b' '),
                "HTTP/1 without a method token and a space"
            );
        }
        None => assert!(
            data.len() < DETECT_PEEK,
            "undecided after {DETECT_PEEK} bytes"
        ),
        _ => {}
    }
});
