//! What reading a request head and a response head have in common:
//! `httparse` gives each field's bytes as a slice of the read buffer, and the
//! head's header map is built on the head's own bytes (a reference count
//! per value rather than a copy).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where `part`, a slice `httparse` took from a head of `len` bytes that
/// starts at address `base`, lies in that head. An empty slice (which may
/// point anywhere) is `0..0`; one outside the head is `None`.
#[inline]
pub(super) fn span(base: usize, len: usize, part: &[u8]) -> Option<(usize, usize)> {
    if part.is_empty() {
        return Some((0, 0));
    }
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    let end = start + part.len();
    (end <= len).then_some((start, end))
}

/// The header map of `head` from the fields' names and spans; `None` when a
/// value is one `http` refuses.
#[inline]
pub(super) fn header_map(
    head: &Bytes,
    fields: Vec<(HeaderName, usize, usize)>,
) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, start, end) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_lie_in_the_head() {
        let buf = b"GET / HTTP/1.1\r\nA: xy\r\n\r\nbody";
        let base = buf.as_ptr() as usize;
        let head = buf.len() - 4;
        assert_eq!(span(base, head, &buf[19..21]), Some((19, 21)));
        assert_eq!(span(base, head, &buf[0..0]), Some((0, 0)));
        assert_eq!(span(base, head, &buf[head..]), None, "past the head");
        let before = &buf[..2];
        let after_base = before.as_ptr() as usize + 1;
        assert_eq!(span(after_base, head, before), None, "before it");
    }

    #[test]
    fn maps_share_the_head() {
        let head = Bytes::from_static(b"A: 1\r\nB: \r\nA: 2\r\n");
        let fields = vec![
            (HeaderName::from_static("a"), 3, 4),
            (HeaderName::from_static("b"), 0, 0),
            (HeaderName::from_static("a"), 14, 15),
        ];
        let map = header_map(&head, fields).unwrap();
        let a: Vec<_> = map.get_all("a").iter().collect();
        assert_eq!(a, ["1", "2"]);
        assert_eq!(map["b"], "");
        let bad = Bytes::from_static(b"A: \x7f\r\n");
        assert!(header_map(&bad, vec![(HeaderName::from_static("a"), 3, 4)]).is_none());
    }
}
