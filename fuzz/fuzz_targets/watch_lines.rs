//! The control-plane watch stream decoder (`mesh/src/api.rs` `LineReader`),
//! which the control plane runs on what proxies send (`WatchUp`) and the
//! proxy on what the control plane sends (`WatchDown`): newline-delimited
//! JSON, read in whatever pieces the body arrives. The pieces must not
//! matter, and every message decoded must encode back to itself.
//!
//! Flags: bit 0, decode `WatchDown` (else `WatchUp`); bit 1, a small line
//! limit (the over-long-line path).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use weft_fuzz::Input;
use weft_mesh::api::{line, LineReader, WatchDown, WatchUp};

/// The messages decoded from `pieces` in order, and whether it failed.
fn decode<T: DeserializeOwned>(max: usize, pieces: &[&[u8]]) -> (Vec<T>, bool) {
    let mut r = LineReader::new(max);
    let mut out = Vec::new();
    for piece in pieces {
        match r.push::<T>(piece) {
            Ok(msgs) => out.extend(msgs),
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

fn check<T: DeserializeOwned + Serialize + PartialEq + Debug>(input: &Input<'_>) {
    if input.flags & 2 != 0 {
        // A small limit: no panic, whatever comes.
        let _ = decode::<T>(16, &input.pieces());
        return;
    }
    // A limit no input reaches: the pieces alone may differ.
    let max = 1 << 24;
    let (whole, whole_failed) = decode::<T>(max, &[input.bytes]);
    let (split, split_failed) = decode::<T>(max, &input.pieces());
    assert_eq!(whole_failed, split_failed, "failure depends on the pieces");
    if !whole_failed {
        assert_eq!(whole, split, "messages depend on the pieces");
    }
    for msg in &split {
        let wire = line(msg);
        let (again, failed) = decode::<T>(max, &[&wire]);
        assert!(!failed, "{msg:?} does not read back");
        assert_eq!(again.as_slice(), std::slice::from_ref(msg));
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    if input.flags & 1 == 0 {
        check::<WatchUp>(&input);
    } else {
        check::<WatchDown>(&input);
    }
});
