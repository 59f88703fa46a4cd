//! The chunk-size line of chunked transfer coding (RFC 9112 section 7.1):
//! written by the server before each chunk of a response body, read by the
//! client before each chunk of an upstream's.

use std::io::Write as _;

/// Writes the size line of a chunk of `n` bytes.
pub(super) fn write_size(out: &mut Vec<u8>, n: usize) {
    let _ = write!(out, "{n:x}\r\n");
}

/// The size on a chunk-size line (its CRLF already removed; extensions
/// after `;` ignored); `None` when it is not one.
pub(super) fn parse_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if digits == 0 || digits > 16 || !rest_ok {
        return None;
    }
    let s = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_size(b"1a"), Some(26));
        assert_eq!(parse_size(b"0"), Some(0));
        assert_eq!(parse_size(b"10;ext=1"), Some(16));
        assert_eq!(parse_size(b""), None);
        assert_eq!(parse_size(b"zz"), None);
        assert_eq!(parse_size(b"1x"), None);
        assert_eq!(parse_size(b"11111111111111111"), None);
    }

    #[test]
    fn written_sizes_read_back() {
        for n in [0, 1, 15, 16, 4096, 1 << 20, usize::MAX] {
            let mut out = Vec::new();
            write_size(&mut out, n);
            let line = out.strip_suffix(b"\r\n").expect("ends in CRLF");
            assert_eq!(parse_size(line), Some(n as u64), "{n}");
        }
        let mut out = b"x".to_vec();
        write_size(&mut out, 255);
        assert_eq!(out, b"xff\r\n", "appended, lower-case hex");
    }
}
