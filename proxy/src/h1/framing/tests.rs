//! The framing rules, one table. (This file is the #[cfg(test)] mod tests
//! of `framing.rs`.)

use super::*;

fn map(fields: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in fields {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn lengths(h: &HeaderMap) -> Vec<String> {
    h.get_all(CONTENT_LENGTH)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_framing_reaches_the_client() {
    type Case<'a> = (u16, bool, &'a [(&'a str, &'a str)], Framing, &'a [&'a str]);
    let ok: &[Case] = &[
        (
            200,
            false,
            &[("content-length", "5")],
            Framing::Length(5),
            &["5"],
        ),
        (
            200,
            false,
            &[("content-length", "5, 5")],
            Framing::Length(5),
            &["5"],
        ),
        (
            200,
            false,
            &[("content-length", "5"), ("content-length", "5")],
            Framing::Length(5),
            &["5"],
        ),
        (
            200,
            false,
            &[("content-length", "005")],
            Framing::Length(5),
            &["005"],
        ),
        (
            200,
            false,
            &[("transfer-encoding", "chunked")],
            Framing::Chunked,
            &[],
        ),
        (
            200,
            false,
            &[("transfer-encoding", " Chunked ")],
            Framing::Chunked,
            &[],
        ),
        // Transfer-Encoding wins; the stale length goes.
        (
            200,
            false,
            &[("content-length", "5"), ("transfer-encoding", "chunked")],
            Framing::Chunked,
            &[],
        ),
        (200, false, &[], Framing::UntilClose, &[]),
        // No body, and for 1xx/204 no framing field either.
        (204, false, &[("content-length", "5")], Framing::None, &[]),
        (
            204,
            false,
            &[("transfer-encoding", "chunked")],
            Framing::None,
            &[],
        ),
        (103, false, &[("content-length", "0")], Framing::None, &[]),
        // 304 and HEAD keep the representation's length.
        (
            304,
            false,
            &[("content-length", "5, 5")],
            Framing::None,
            &["5"],
        ),
        (200, true, &[("content-length", "5")], Framing::None, &["5"]),
        (
            200,
            true,
            &[("transfer-encoding", "chunked"), ("content-length", "9")],
            Framing::None,
            &[],
        ),
    ];
    for (status, head, fields, want, left) in ok {
        let mut h = map(fields);
        let got = settle_response(*status, *head, &mut h);
        assert_eq!(got, Ok(*want), "{status} {fields:?}");
        assert_eq!(lengths(&h), *left, "{status} {fields:?}");
        assert!(!h.contains_key(TRANSFER_ENCODING), "{status} {fields:?}");
    }
}

#[test]
fn anything_ambiguous_is_refused() {
    let bad: &[&[(&str, &str)]] = &[
        &[("content-length", "+5")],
        &[("content-length", "-5")],
        &[("content-length", "5 5")],
        &[("content-length", "0x5")],
        &[("content-length", "")],
        &[("content-length", "5, 6")],
        &[("content-length", "5"), ("content-length", "6")],
        &[("content-length", "99999999999999999999")],
        &[("transfer-encoding", "identity")],
        &[("transfer-encoding", "gzip")],
        &[("transfer-encoding", "gzip, chunked")],
        &[("transfer-encoding", "chunked, chunked")],
        &[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ],
        &[("transfer-encoding", "xchunked")],
        &[("transfer-encoding", "identity"), ("content-length", "5")],
    ];
    for fields in bad {
        for status in [200, 204, 304] {
            assert!(
                settle_response(status, false, &mut map(fields)).is_err(),
                "{status} {fields:?}"
            );
        }
    }
}

#[test]
fn digits_are_digits() {
    assert_eq!(digits(b"0"), Some(0));
    assert_eq!(digits(b"18446744073709551615"), None, "20 digits");
    assert_eq!(
        digits(b"9999999999999999999"),
        Some(9_999_999_999_999_999_999)
    );
    for bad in [&b""[..], b"+1", b"1 ", b" 1", b"1a", b"-0"] {
        assert_eq!(digits(bad), None, "{bad:?}");
    }
}
