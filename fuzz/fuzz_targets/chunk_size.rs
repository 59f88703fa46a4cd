//! The chunk-size line of chunked coding (`h1/chunked.rs`), which both the
//! guard and the lean client read: a size is 1 to 16 hex digits followed by
//! nothing, an extension (`;`) or whitespace, and every size written reads
//! back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_proxy::fuzz_surface::{parse_chunk_size, write_chunk_size};

/// The same rule, written another way.
fn reference(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if !(1..=16).contains(&digits) {
        return None;
    }
    if let Some(b) = line.get(digits) {
        if !b";  \t".contains(b) {
            return None;
        }
    }
    line[..digits].iter().try_fold(0u64, |n, b| {
        let d = (*b as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    })
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(parse_chunk_size(data), reference(data), "{data:?}");
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
        let mut out = Vec::new();
        write_chunk_size(&mut out, n);
        let line = out.strip_suffix(b"\r\n").expect("a CRLF");
        assert_eq!(parse_chunk_size(line), Some(n as u64));
    }
});
