//! The request checks, one table. (This file is the #[cfg(test)] mod tests
//! of `checks.rs`.)

use super::*;

fn req(version: Version, method: &str, uri: &str, fields: &[(&str, &str)]) -> Request<RequestBody> {
    let mut b = Request::builder().method(method).uri(uri).version(version);
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    b.body(RequestBody::Empty).unwrap()
}

const H1: Version = Version::HTTP_11;
const H2: Version = Version::HTTP_2;

#[test]
fn one_authority_per_request() {
    // (version, method, target, fields, routed, Ok(Host after) or Err)
    type Case<'a> = (
        Version,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        bool,
        Result<Option<&'a str>, ()>,
    );
    let cases: &[Case] = &[
        (H1, "GET", "/a", &[("host", "live")], true, Ok(Some("live"))),
        (
            H1,
            "GET",
            "/a",
            &[("host", "live:8080")],
            true,
            Ok(Some("live:8080")),
        ),
        (
            H1,
            "GET",
            "/a",
            &[("host", "[::1]:80")],
            true,
            Ok(Some("[::1]:80")),
        ),
        (
            H1,
            "GET",
            "/a",
            &[("host", "LIVE.")],
            true,
            Ok(Some("LIVE.")),
        ),
        (
            H1,
            "GET",
            "/a",
            &[("host", "live"), ("host", "live")],
            true,
            Err(()),
        ),
        (
            H1,
            "GET",
            "/a",
            &[("host", "live"), ("host", "other")],
            true,
            Err(()),
        ),
        (H1, "GET", "/a", &[("host", "user@live")], true, Err(())),
        (H1, "GET", "/a", &[("host", "live/x")], true, Err(())),
        (H1, "GET", "/a", &[("host", "live x")], true, Err(())),
        (H1, "GET", "/a", &[("host", "")], true, Err(())),
        (H1, "GET", "/a", &[("host", "live:http")], true, Err(())),
        (H1, "GET", "/a", &[("host", "[::1")], true, Err(())),
        (H1, "GET", "/a", &[], true, Err(())),
        (H1, "GET", "/a", &[], false, Err(())),
        (Version::HTTP_10, "GET", "/a", &[], false, Ok(None)),
        (Version::HTTP_10, "GET", "/a", &[], true, Err(())),
        // Absolute form: Host may repeat the target's authority, never
        // contradict it; without one, it is made the target's.
        (
            H1,
            "GET",
            "http://live/a",
            &[("host", "other")],
            true,
            Err(()),
        ),
        (
            H1,
            "GET",
            "http://live/a",
            &[("host", "LIVE")],
            true,
            Ok(Some("LIVE")),
        ),
        (
            H1,
            "GET",
            "http://live/a",
            &[("host", "live")],
            true,
            Ok(Some("live")),
        ),
        (H1, "GET", "live:80", &[("host", "live")], true, Err(())),
        (
            H1,
            "GET",
            "http://live:80/a",
            &[],
            true,
            Ok(Some("live:80")),
        ),
        (
            H1,
            "GET",
            "http://user@live/a",
            &[("host", "live")],
            true,
            Err(()),
        ),
        (
            H1,
            "GET",
            "ftp://live/a",
            &[("host", "live")],
            true,
            Err(()),
        ),
        // HTTP/2: Host may repeat :authority, never contradict it.
        (H2, "GET", "http://live/a", &[], true, Ok(None)),
        (
            H2,
            "GET",
            "http://live/a",
            &[("host", "live")],
            true,
            Ok(Some("live")),
        ),
        (
            H2,
            "GET",
            "http://live/a",
            &[("host", "Live")],
            true,
            Ok(Some("Live")),
        ),
        (
            H2,
            "GET",
            "http://live/a",
            &[("host", "other")],
            true,
            Err(()),
        ),
        (
            H2,
            "GET",
            "http://live/a",
            &[("host", "live"), ("host", "live")],
            true,
            Err(()),
        ),
    ];
    for (version, method, uri, fields, routed, want) in cases {
        let mut r = req(*version, method, uri, fields);
        let got = request(&mut r, *routed);
        let ctx = format!("{version:?} {method} {uri} {fields:?} routed={routed}");
        match want {
            Ok(host) => {
                assert!(got.is_ok(), "{ctx}: {got:?}");
                let hosts: Vec<_> = r.headers().get_all(HOST).iter().collect();
                assert!(hosts.len() <= 1, "{ctx}");
                assert_eq!(hosts.first().map(|h| h.to_str().unwrap()), *host, "{ctx}");
            }
            Err(()) => assert!(
                matches!(got, Err(ProxyError::BadRequest(_))),
                "{ctx}: {got:?}"
            ),
        }
    }
}

#[test]
fn one_framing_per_request() {
    let ok: &[&[(&str, &str)]] = &[
        &[("content-length", "3")],
        &[("transfer-encoding", "chunked")],
        &[("transfer-encoding", " Chunked")],
        &[("connection", "close, te"), ("te", "trailers")],
        &[("connection", "x-hop"), ("x-hop", "1")],
    ];
    let bad: &[&[(&str, &str)]] = &[
        &[("content-length", "3"), ("content-length", "3")],
        &[("transfer-encoding", "identity, chunked")],
        &[("transfer-encoding", "gzip, chunked")],
        &[("transfer-encoding", "chunked, chunked")],
        &[("transfer-encoding", "identity")],
        &[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ],
        &[("connection", "host")],
        &[
            ("connection", "close, Content-Length"),
            ("content-length", "3"),
        ],
        &[
            ("connection", "transfer-encoding"),
            ("transfer-encoding", "chunked"),
        ],
    ];
    for fields in ok {
        let mut all = vec![("host", "live")];
        all.extend_from_slice(fields);
        assert!(
            request(&mut req(H1, "POST", "/a", &all), true).is_ok(),
            "{fields:?}"
        );
    }
    for fields in bad {
        let mut all = vec![("host", "live")];
        all.extend_from_slice(fields);
        assert!(
            request(&mut req(H1, "POST", "/a", &all), true).is_err(),
            "{fields:?}"
        );
    }
}

#[test]
fn methods_are_upper_case_tokens() {
    for m in ["GET", "PURGE", "M-SEARCH"] {
        assert!(
            request(&mut req(H1, m, "/", &[("host", "live")]), true).is_ok(),
            "{m}"
        );
    }
    for m in ["get", "Get", "gEt"] {
        assert!(
            request(&mut req(H1, m, "/", &[("host", "live")]), true).is_err(),
            "{m}"
        );
    }
}
