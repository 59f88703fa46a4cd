//! The request-side cases: what a client sends through the proxy to the
//! Backend `live`, and what must come of it: refused (no byte reaches the
//! upstream) or forwarded as exactly these bytes.
//!
//! Most cases are a change to one request's head and are run on each path
//! a request can take: bodiless on a fresh connection (the fast path), with
//! a body (hyper's server), and after an earlier request with a body on the
//! same connection (hyper's server, past the handoff). Framing cases carry
//! their own bodies and are run on the paths their shape allows.

/// What a case is about; the peers comparison fails only on the first two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Which authority the request is for.
    Authority,
    /// Where the message ends.
    Framing,
    /// Request-line and field syntax.
    Syntax,
    /// Upgrades and tunnels.
    Upgrade,
    /// Hop-by-hop fields.
    Hop,
}

impl Class {
    /// The classes whose acceptance where a peer refuses is a failure.
    pub fn critical(self) -> bool {
        matches!(self, Class::Authority | Class::Framing)
    }
}

/// Which server half a case's request meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The hand-written fast path: a bodiless request first on its
    /// connection.
    Fast,
    /// hyper's server: a request with a body, first on its connection.
    Hyper,
    /// hyper's server after the handoff: the case follows an ordinary
    /// request with a body on the same connection.
    AfterHandoff,
}

/// What must come of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A 4xx, and nothing (of the case's request) at the upstream.
    Refused,
    /// A 4xx for an error in the client's own body; the upstream may have
    /// had the head, never a whole request.
    BodyRefused,
    /// Forwarded as exactly these bytes.
    Forwarded(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub class: Class,
    pub path: Path,
    /// The bytes of the case's request.
    pub request: Vec<u8>,
    pub expect: Expect,
}

/// The ordinary request that goes first on `Path::AfterHandoff`, and the
/// bytes it reaches the upstream as.
pub const WARMUP: &[u8] = b"POST /w HTTP/1.1\r\nHost: live\r\nContent-Length: 1\r\n\r\nw";
pub const WARMUP_UPSTREAM: &[u8] = b"POST /w HTTP/1.1\r\nhost: live\r\ncontent-length: 1\r\n\r\nw";

/// One change to an ordinary request's head.
struct Head {
    name: &'static str,
    class: Class,
    /// The request line, without its method (`{m}` stands for it).
    line: &'static str,
    /// Field lines, each ending in CRLF.
    fields: &'static str,
    /// `None`: refused. Otherwise the upstream's request line and fields.
    forwarded: Option<(&'static str, &'static str)>,
}

const fn refused(
    name: &'static str,
    class: Class,
    line: &'static str,
    fields: &'static str,
) -> Head {
    Head {
        name,
        class,
        line,
        fields,
        forwarded: None,
    }
}

const fn passed(
    name: &'static str,
    class: Class,
    line: &'static str,
    fields: &'static str,
    up_line: &'static str,
    up_fields: &'static str,
) -> Head {
    Head {
        name,
        class,
        line,
        fields,
        forwarded: Some((up_line, up_fields)),
    }
}

use Class::*;

const OK: &str = "{m} /a HTTP/1.1";
const UP: &str = "{m} /a HTTP/1.1";

/// Changes to a head, run on every path.
const HEADS: &[Head] = &[
    passed("ordinary", Syntax, OK, "Host: live\r\n", UP, "host: live\r\n"),
    // Authority (RFC 9112 section 3.2).
    refused("two Host, same", Authority, OK, "Host: live\r\nHost: live\r\n"),
    refused("two Host, different", Authority, OK, "Host: live\r\nHost: evil\r\n"),
    refused("Host with userinfo", Authority, OK, "Host: user@live\r\n"),
    refused("Host with a path", Authority, OK, "Host: live/x\r\n"),
    refused("Host with a space", Authority, OK, "Host: live evil\r\n"),
    refused("Host as a list", Authority, OK, "Host: live, evil\r\n"),
    refused("empty Host", Authority, OK, "Host:\r\n"),
    refused("no Host", Authority, OK, ""),
    refused("Host with a bad port", Authority, OK, "Host: live:8x\r\n"),
    refused("Connection names Host", Authority, OK, "Host: live\r\nConnection: host\r\n"),
    passed("Host upper case", Authority, OK, "Host: LIVE\r\n", UP, "host: LIVE\r\n"),
    passed(
        "absolute form, same Host",
        Authority,
        "{m} http://live/a HTTP/1.1",
        "Host: live\r\n",
        UP,
        "host: live\r\n",
    ),
    refused("absolute form, other Host", Authority, "{m} http://live/a HTTP/1.1", "Host: evil\r\n"),
    // The Host made from the target comes after the fields sent.
    passed(
        "absolute form, no Host",
        Authority,
        "{m} http://live/a HTTP/1.1",
        "",
        UP,
        "{host}",
    ),
    refused("absolute form with userinfo", Authority, "{m} http://u@live/a HTTP/1.1", "Host: live\r\n"),
    refused("absolute form, ftp scheme", Authority, "{m} ftp://live/a HTTP/1.1", "Host: live\r\n"),
    refused("authority form", Authority, "{m} live:80 HTTP/1.1", "Host: live\r\n"),
    // Field syntax.
    refused("space before colon", Syntax, OK, "Host: live\r\nX-A : 1\r\n"),
    refused("space in a name", Syntax, OK, "Host: live\r\nX A: 1\r\n"),
    refused("obs-fold", Syntax, OK, "Host: live\r\nX-A: 1\r\n 2\r\n"),
    refused("NUL in a value", Syntax, OK, "Host: live\r\nX-A: a\0b\r\n"),
    refused("CR in a value", Syntax, OK, "Host: live\r\nX-A: a\rb\r\n"),
    refused("DEL in a value", Syntax, OK, "Host: live\r\nX-A: a\x7fb\r\n"),
    refused("no colon", Syntax, OK, "Host: live\r\nX-A\r\n"),
    // Request line.
    refused("space in the target", Syntax, "{m} /a b HTTP/1.1", "Host: live\r\n"),
    refused("extra word", Syntax, "{m} /a HTTP/1.1 x", "Host: live\r\n"),
    refused("version 1.2", Syntax, "{m} /a HTTP/1.2", "Host: live\r\n"),
    refused("version 2.0", Syntax, "{m} /a HTTP/2.0", "Host: live\r\n"),
    refused("target not a path", Syntax, "{m} a HTTP/1.1", "Host: live\r\n"),
    refused("fragment in the target", Syntax, "{m} /a#f HTTP/1.1", "Host: live\r\n"),
    // Hop-by-hop fields (RFC 9110 section 7.6.1).
    passed(
        "Connection names a field",
        Hop,
        OK,
        "Host: live\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n",
        UP,
        "host: live\r\nx-b: 2\r\n",
    ),
    passed(
        "keep-alive and proxy fields",
        Hop,
        OK,
        "Host: live\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\n",
        UP,
        "host: live\r\n",
    ),
    // Upgrades (RFC 9113 section 3.1 retired h2c).
    passed(
        "h2c offer stripped",
        Upgrade,
        OK,
        "Host: live\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        UP,
        "host: live\r\n",
    ),
    passed(
        "unlisted upgrade stripped",
        Upgrade,
        OK,
        "Host: live\r\nConnection: upgrade\r\nUpgrade: x-tunnel\r\n",
        UP,
        "host: live\r\n",
    ),
];

/// Builds the case of `head` on `path`.
fn head_case(head: &Head, path: Path) -> Case {
    let (method, body_in, body_up) = match path {
        Path::Fast => ("GET", "", ""),
        Path::Hyper | Path::AfterHandoff => (
            "POST",
            "Content-Length: 3\r\n\r\nabc",
            "content-length: 3\r\n\r\nabc",
        ),
    };
    let end_in = if body_in.is_empty() { "\r\n" } else { body_in };
    let end_up = if body_up.is_empty() { "\r\n" } else { body_up };
    let request = format!(
        "{}\r\n{}{end_in}",
        head.line.replace("{m}", method),
        head.fields
    );
    let expect = match head.forwarded {
        None => Expect::Refused,
        Some((line, fields)) => {
            let line = line.replace("{m}", method);
            let up = match fields.strip_prefix("{host}") {
                Some(_) if body_up.is_empty() => format!("{line}\r\nhost: live\r\n\r\n"),
                Some(_) => format!("{line}\r\ncontent-length: 3\r\nhost: live\r\n\r\nabc"),
                None => format!("{line}\r\n{fields}{end_up}"),
            };
            Expect::Forwarded(up.into_bytes())
        }
    };
    Case {
        name: format!("{} ({method})", head.name),
        class: head.class,
        path,
        request: request.into_bytes(),
        expect,
    }
}

/// A framing case: raw bytes in, and what must come of them.
fn framing(name: &str, path: Path, request: &str, expect: Option<&str>) -> Case {
    Case {
        name: name.to_string(),
        class: Framing,
        path,
        request: request.as_bytes().to_vec(),
        expect: match expect {
            None => Expect::Refused,
            Some(up) => Expect::Forwarded(up.as_bytes().to_vec()),
        },
    }
}

/// Framing of bodies (RFC 9112 section 6).
fn framing_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let chunked = "3\r\nabc\r\n0\r\n\r\n";
    let up_chunked =
        format!("POST /a HTTP/1.1\r\nhost: live\r\ntransfer-encoding: chunked\r\n\r\n{chunked}");
    for path in [Path::Hyper, Path::AfterHandoff] {
        let post = |fields: &str, body: &str| {
            format!("POST /a HTTP/1.1\r\nHost: live\r\n{fields}\r\n{body}")
        };
        let mut add = |name: &str, fields: &str, body: &str, up: Option<&str>| {
            v.push(framing(name, path, &post(fields, body), up));
        };
        add(
            "two Content-Length, same",
            "Content-Length: 3\r\nContent-Length: 3\r\n",
            "abc",
            None,
        );
        add(
            "two Content-Length, different",
            "Content-Length: 3\r\nContent-Length: 4\r\n",
            "abcd",
            None,
        );
        add(
            "Content-Length list",
            "Content-Length: 3, 3\r\n",
            "abc",
            None,
        );
        add(
            "Content-Length with plus",
            "Content-Length: +3\r\n",
            "abc",
            None,
        );
        add(
            "Content-Length negative",
            "Content-Length: -3\r\n",
            "abc",
            None,
        );
        add(
            "Content-Length not a number",
            "Content-Length: 3a\r\n",
            "abc",
            None,
        );
        add(
            "Content-Length too large",
            "Content-Length: 99999999999999999999\r\n",
            "abc",
            None,
        );
        add(
            "Content-Length then chunked",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            chunked,
            None,
        );
        add(
            "chunked then Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            chunked,
            None,
        );
        add(
            "identity, chunked",
            "Transfer-Encoding: identity, chunked\r\n",
            chunked,
            None,
        );
        add(
            "chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
            chunked,
            None,
        );
        add(
            "gzip, chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            chunked,
            None,
        );
        add(
            "chunked twice in a list",
            "Transfer-Encoding: chunked, chunked\r\n",
            chunked,
            None,
        );
        add(
            "two Transfer-Encoding",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            chunked,
            None,
        );
        add(
            "identity alone",
            "Transfer-Encoding: identity\r\n",
            "",
            None,
        );
        add("xchunked", "Transfer-Encoding: xchunked\r\n", chunked, None);
        add(
            "chunked, upper case",
            "Transfer-Encoding: Chunked\r\n",
            chunked,
            Some(&up_chunked),
        );
        add(
            "chunked",
            "Transfer-Encoding: chunked\r\n",
            chunked,
            Some(&up_chunked),
        );
        add(
            "chunk extension",
            "Transfer-Encoding: chunked\r\n",
            "3;x=1\r\nabc\r\n0\r\n\r\n",
            Some(&up_chunked),
        );
        v.push(framing(
            "chunked in HTTP/1.0",
            path,
            &format!(
                "POST /a HTTP/1.0\r\nHost: live\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}"
            ),
            None,
        ));
        for (name, body) in [
            ("bad chunk size", "zz\r\nabc\r\n0\r\n\r\n"),
            (
                "chunk size overflow",
                "fffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            ),
            ("chunk without CRLF", "3\r\nabcX0\r\n\r\n"),
        ] {
            v.push(Case {
                name: name.to_string(),
                class: Framing,
                path,
                request: post("Transfer-Encoding: chunked\r\n", body).into_bytes(),
                expect: Expect::BodyRefused,
            });
        }
    }
    // Bodiless heads on the fast path.
    let get = |fields: &str| format!("GET /a HTTP/1.1\r\nHost: live\r\n{fields}\r\n");
    v.push(framing(
        "two Content-Length: 0",
        Path::Fast,
        &get("Content-Length: 0\r\nContent-Length: 0\r\n"),
        None,
    ));
    v.push(framing(
        "Content-Length: 0 and chunked",
        Path::Fast,
        &format!(
            "{}0\r\n\r\n",
            get("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n")
        ),
        None,
    ));
    v.push(framing(
        "Content-Length: 0",
        Path::Fast,
        &get("Content-Length: 0\r\n"),
        Some("GET /a HTTP/1.1\r\nhost: live\r\ncontent-length: 0\r\n\r\n"),
    ));
    v
}

/// Every request-side case.
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    for head in HEADS {
        for path in [Path::Fast, Path::Hyper, Path::AfterHandoff] {
            v.push(head_case(head, path));
        }
    }
    v.extend(framing_cases());
    v.extend(syntax_cases());
    // A WebSocket offer (bodiless, as it must be) goes on as an offer.
    v.push(Case {
        name: "WebSocket offer passed on".into(),
        class: Upgrade,
        path: Path::Fast,
        request: b"GET /a HTTP/1.1\r\nHost: live\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_vec(),
        expect: Expect::Forwarded(
            b"GET /a HTTP/1.1\r\nhost: live\r\nsec-websocket-version: 13\r\n\
sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                .to_vec(),
        ),
    });
    v
}

/// Request lines that are not a case of a head change: first on their
/// connection and after the handoff.
fn syntax_cases() -> Vec<Case> {
    let lines: &[(&str, &str, bool)] = &[
        (
            "lower-case method",
            "get /a HTTP/1.1\r\nHost: live\r\n\r\n",
            false,
        ),
        (
            "method with @",
            "G@T /a HTTP/1.1\r\nHost: live\r\n\r\n",
            false,
        ),
        (
            "NUL in the method",
            "G\0T /a HTTP/1.1\r\nHost: live\r\n\r\n",
            false,
        ),
        ("no version", "GET /a\r\nHost: live\r\n\r\n", false),
        ("bare LF line ends", "GET /a HTTP/1.1\nHost: live\n\n", true),
    ];
    let mut v = Vec::new();
    for (name, request, forwarded) in lines {
        for path in [Path::Fast, Path::AfterHandoff] {
            v.push(Case {
                name: name.to_string(),
                class: Syntax,
                path,
                request: request.as_bytes().to_vec(),
                expect: if *forwarded {
                    Expect::Forwarded(b"GET /a HTTP/1.1\r\nhost: live\r\n\r\n".to_vec())
                } else {
                    Expect::Refused
                },
            });
        }
    }
    v
}
