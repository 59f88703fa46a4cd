//! Protocol detection (`listen/detect.rs` `classify`), judged from a
//! connection's first bytes as they arrive: a verdict given on a prefix must
//! be the verdict on all that follows, or the protocol a connection is
//! served with depends on how its first segment was split.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzz_surface::{classify, Protocol};

fuzz_target!(|data: &[u8]| {
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
        Some(Protocol::Http1) => assert!(data[0].is_ascii_uppercase()),
        None => assert!(data.len() < 24, "undecided after 24 bytes"),
        _ => {}
    }
});
