//! The response-side cases: what an upstream answers, and what the client
//! must get. Each answer is given to two requests in a row on one client
//! connection, so bytes one answer leaves behind (a body on a 204, more
//! than its Content-Length) would show in the second.
//!
//! Clients: HTTP/1.1 GET (the fast path and the lean upstream client),
//! HTTP/1.1 POST (hyper's server and client), HEAD, and HTTP/2 GET and POST.

/// What the client must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relay {
    /// 502 with `x-weft-error: upstream-protocol`.
    Refused,
    /// This status and body, in one well-formed framing.
    Relayed { status: u16, body: &'static [u8] },
    /// The head was relayed but the body broke: the client must not get a
    /// whole response that looks complete.
    Cut,
}

#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub name: &'static str,
    pub bytes: &'static [u8],
    pub relay: Relay,
    /// Trailers that must reach a client that takes them.
    pub trailers: &'static [(&'static str, &'static str)],
}

use Relay::*;

const HELLO: Relay = Relayed {
    status: 200,
    body: b"hello",
};

const fn answer(name: &'static str, bytes: &'static [u8], relay: Relay) -> Answer {
    Answer {
        name,
        bytes,
        relay,
        trailers: &[],
    }
}

/// Fields that may never arrive as trailers.
pub const NOT_TRAILERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "trailer",
    "te",
    "upgrade",
    "keep-alive",
];

pub const ANSWERS: &[Answer] = &[
    answer("ordinary", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", HELLO),
    answer("chunked", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", HELLO),
    answer(
        "Content-Length beside chunked",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
        HELLO,
    ),
    answer(
        "chunked beside Content-Length",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        HELLO,
    ),
    answer("Content-Length list, same", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello", HELLO),
    answer(
        "two Content-Length, same",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        HELLO,
    ),
    answer(
        "chunked, upper case",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        HELLO,
    ),
    answer(
        "Connection names Content-Length",
        b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nhello",
        HELLO,
    ),
    answer("Content-Length with plus", b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello", Refused),
    answer(
        "two Content-Length, different",
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        Refused,
    ),
    answer("Content-Length list, different", b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!", Refused),
    answer("Content-Length not a number", b"HTTP/1.1 200 OK\r\ncontent-length: 5a\r\n\r\nhello", Refused),
    answer("Content-Length empty", b"HTTP/1.1 200 OK\r\ncontent-length:\r\n\r\nhello", Refused),
    answer("Content-Length negative", b"HTTP/1.1 200 OK\r\ncontent-length: -5\r\n\r\nhello", Refused),
    answer(
        "identity coding",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\ncontent-length: 5\r\n\r\nhello",
        Refused,
    ),
    answer("gzip coding", b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nhello", Refused),
    answer(
        "gzip, chunked",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused,
    ),
    answer(
        "chunked, chunked",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused,
    ),
    answer(
        "two Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused,
    ),
    answer(
        "unasked 101",
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
        Refused,
    ),
    answer("obs-fold", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 5\r\n\r\nhello", Refused),
    answer("NUL in a value", b"HTTP/1.1 200 OK\r\nx-a: a\0b\r\ncontent-length: 5\r\n\r\nhello", Refused),
    answer("space before colon", b"HTTP/1.1 200 OK\r\nx-a : 1\r\ncontent-length: 5\r\n\r\nhello", Refused),
    answer("status of four digits", b"HTTP/1.1 2000 OK\r\ncontent-length: 5\r\n\r\nhello", Refused),
    answer("not HTTP", b"SSH-2.0-OpenSSH\r\n\r\n", Refused),
    answer(
        "204 with Content-Length",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
        Relayed {
            status: 204,
            body: b"",
        },
    ),
    answer(
        "204 with a body after it",
        b"HTTP/1.1 204 No Content\r\n\r\nhello",
        Relayed {
            status: 204,
            body: b"",
        },
    ),
    answer(
        "204 with chunked",
        b"HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        Relayed {
            status: 204,
            body: b"",
        },
    ),
    answer(
        "304 with Content-Length",
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        Relayed {
            status: 304,
            body: b"",
        },
    ),
    answer(
        "100 Continue first",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        HELLO,
    ),
    answer(
        "more than Content-Length",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhello",
        Relayed {
            status: 200,
            body: b"he",
        },
    ),
    answer(
        "ended by the close",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello",
        HELLO,
    ),
    answer(
        "bad chunk size",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        Cut,
    ),
    Answer {
        name: "framing fields as trailers",
        bytes: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\nhost: evil\r\nx-t: 1\r\n\r\n",
        relay: HELLO,
        trailers: &[("x-t", "1")],
    },
];

/// How a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Http1Get,
    Http1Post,
    Http1Head,
    Http2Get,
    Http2Post,
}

pub const CLIENTS: &[Client] = &[
    Client::Http1Get,
    Client::Http1Post,
    Client::Http1Head,
    Client::Http2Get,
    Client::Http2Post,
];

impl Client {
    /// An HTTP/1.1 request to `host` (two in a row are sent).
    pub fn http1_request(self, host: &str) -> String {
        match self {
            Client::Http1Get => format!("GET /a HTTP/1.1\r\nHost: {host}\r\nTE: trailers\r\n\r\n"),
            Client::Http1Head => format!("HEAD /a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            _ => format!(
                "POST /a HTTP/1.1\r\nHost: {host}\r\nTE: trailers\r\nContent-Length: 1\r\n\r\nx"
            ),
        }
    }

    /// Whether the proxy relays trailers to this client.
    pub fn takes_trailers(self) -> bool {
        matches!(
            self,
            Client::Http1Get | Client::Http2Get | Client::Http2Post
        )
    }
}
