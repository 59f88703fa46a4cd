//! The request-stream guard (`h1/server/guard.rs`) on a byte stream split
//! into arbitrary reads: the guard must reach the same verdict, at the same
//! byte, however the stream is split, or what it refuses would depend on
//! how the client's bytes happened to arrive.
//!
//! Flags: the low six bits pick the head limit (small ones reach the
//! oversized-head paths).

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_fuzz::Input;
use weft_proxy::fuzz_surface::{GuardVerdict, RequestGuard};

/// Where the guard stopped the stream, if it did: `(offset, cut)`, the
/// offset being that of the end of what passes.
fn outcome(max_head: usize, pieces: &[&[u8]]) -> Option<(usize, bool)> {
    let mut g = RequestGuard::new(max_head);
    let mut at = 0;
    for piece in pieces {
        match g.scan(piece) {
            GuardVerdict::Pass => at += piece.len(),
            GuardVerdict::Cut(n) => {
                assert!(n <= piece.len(), "cut past the bytes read");
                return Some((at + n, true));
            }
            GuardVerdict::Stop => return Some((at, false)),
        }
    }
    None
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let max_head = 16 + usize::from(input.flags & 0x3f) * 64;
    let whole = outcome(max_head, &[input.bytes]);
    let split = outcome(max_head, &input.pieces());
    assert_eq!(
        split, whole,
        "the verdict depends on how the stream is split"
    );
    if let Some((at, cut)) = whole {
        // A cut ends a head; a stop comes only after one.
        assert!(
            !cut || input.bytes[..at].ends_with(b"\n"),
            "cut inside a line"
        );
    }
});
