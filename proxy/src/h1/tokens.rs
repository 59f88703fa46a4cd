//! Comma-separated token lists, as in `Connection`, `TE` and
//! `Transfer-Encoding`, read straight from a field's bytes.

/// The list's elements, surrounding whitespace trimmed (empty elements
/// included, as `a,,b` has one).
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Whether the list names `token` (case-insensitively).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_split_and_trimmed() {
        let all: Vec<&[u8]> = tokens(b" close ,Upgrade,,\tx-a").collect();
        assert_eq!(all, [&b"close"[..], b"Upgrade", b"", b"x-a"]);
        assert_eq!(tokens(b"").collect::<Vec<_>>(), [&b""[..]]);
        assert!(has_token(b"gzip, Trailers", b"trailers"));
        assert!(has_token(b"close", b"close"));
        assert!(!has_token(b"closed, x-close", b"close"));
        assert!(!has_token(b"", b"close"));
    }
}
