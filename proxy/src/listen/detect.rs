//! What a client speaks, judged from its first bytes without consuming them.

use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    Http1,
    /// HTTP/2 with prior knowledge (the connection preface).
    Http2,
    /// A TLS handshake record (first byte 0x16): terminated inbound when the
    /// proxy has a mesh identity, otherwise forwarded as bytes.
    Tls,
    /// Anything else: forwarded as bytes.
    Opaque,
    /// Closed (or timed out) before sending anything.
    Nothing,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method token taken for HTTP/1 (`UPDATEREDIRECTREF` has 17
/// letters); a longer one is opaque whatever follows.
const MAX_METHOD: usize = 20;

/// Bytes `detect` peeks at: enough for the preface, and for the longest
/// method, its space and the four bytes that tell a target (`http`).
pub(crate) const PEEK: usize = 32;
const _: () = assert!(PREFACE.len() <= PEEK && MAX_METHOD + 1 + 4 <= PEEK);

/// Classifies a byte prefix; `None` means "need more bytes". A verdict once
/// given holds whatever bytes follow, so it does not depend on how the
/// client's first bytes were split into segments; `PEEK` bytes always get
/// one.
pub(crate) fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(PREFACE.len());
    if buf[..n] == PREFACE[..n] {
        // `PRI * HTTP/2.0...` to its end: `PRI x` is an HTTP/1 request.
        return (n == PREFACE.len()).then_some(Detected::Http2);
    }
    // An HTTP/1 request line starts with an upper-case method token and a
    // space. A token of other letters is HTTP/1 too when a request target
    // follows (so `get /` gets a 400 rather than reaching the app as bytes);
    // `get key` (memcached) and the like stay opaque.
    let upper = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if (3..=MAX_METHOD).contains(&upper) && buf.get(upper) == Some(&b' ') {
        return Some(Detected::Http1);
    }
    let token = buf.iter().take_while(|b| tchar(**b)).count();
    if token > MAX_METHOD {
        return Some(Detected::Opaque);
    }
    if token == buf.len() {
        return None;
    }
    if buf[token] != b' ' || token == 0 {
        return Some(Detected::Opaque);
    }
    let target = &buf[token + 1..];
    if target.first().is_some_and(|c| matches!(c, b'/' | b'*')) {
        return Some(Detected::Http1);
    }
    // An absolute-form target: `http://` or `https://`, in any case.
    let http = b"http";
    let seen = target.len().min(http.len());
    if !target[..seen].eq_ignore_ascii_case(&http[..seen]) {
        Some(Detected::Opaque)
    } else if seen == http.len() {
        Some(Detected::Http1)
    } else {
        None
    }
}

/// A byte of an HTTP token (RFC 9110 section 5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Peeks at the first bytes, waiting up to `timeout` for enough of them.
pub(crate) async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let work = async {
        let mut buf = [0u8; PEEK];
        let mut last = 0;
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return Detected::Nothing,
                Ok(n) => n,
            };
            if let Some(d) = classify(&buf[..n]) {
                return d;
            }
            if n == last {
                // Peek returns at once while unread bytes remain; give the
                // client a moment to send the rest of its first segment.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last = n;
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Detected::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"CONNECT a:1 HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI "), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Detected::Tls));
        assert_eq!(classify(b"\x16"), Some(Detected::Tls));
        assert_eq!(classify(b"SSH-2.0"), None);
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.6 Ubuntu"),
            Some(Detected::Opaque)
        );
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"Get http://a/ HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"get key\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"get h"), None);
        assert_eq!(classify(b"get hx"), Some(Detected::Opaque));
        assert_eq!(classify(b"PING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"G@T / HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(classify(b"HELO x\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU"), Some(Detected::Opaque));
    }

    /// Every prefix of `stream` that gets a verdict gets the verdict of the
    /// whole; the whole gets one.
    fn same_verdict_in_any_split(stream: &[u8]) -> Detected {
        let last = classify(stream).unwrap_or_else(|| panic!("no verdict on {stream:?}"));
        for n in 0..stream.len() {
            if let Some(early) = classify(&stream[..n]) {
                assert_eq!(early, last, "{:?} then {stream:?}", &stream[..n]);
            }
        }
        last
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/detect.rs`): a verdict on the
    /// first bytes must hold once more arrive. `PROPFIND` alone was opaque
    /// (eight letters and no space yet) but HTTP/1 with its space, and
    /// `PRI ` was HTTP/2 although `PRI x` is HTTP/1; so what a connection
    /// was served as depended on how its first segment was split.
    #[test]
    fn the_verdict_does_not_depend_on_how_the_first_bytes_are_split() {
        use Detected::*;
        for (stream, want) in [
            (&b"PROPFIND / HTTP/1.1\r\n"[..], Http1),
            (b"UPDATEREDIRECTREF / HTTP/1.1\r\n", Http1),
            (b"PRI x", Http1),
            (b"PRI x HTTP/1.1\r\n", Http1),
            (b"PRI * HTTP/1.1\r\n", Http1),
            (PREFACE, Http2),
            (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ ", Opaque),
            (b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n", Opaque),
            (b"propfind / HTTP/1.1\r\n", Http1),
            (b"abcdefghijklmnopqrst http://a/ HTTP/1.1\r\n", Http1),
            (b"abcdefghijklmnopqrstu / HTTP/1.1\r\n", Opaque),
            (b"get hello\r\n", Opaque),
            (b"SSH-2.0-OpenSSH_9.6 Ubuntu\r\n", Opaque),
        ] {
            assert_eq!(same_verdict_in_any_split(stream), want, "{stream:?}");
        }
    }

    /// `detect` sees at most `PEEK` bytes, so those must decide; the slowest
    /// are the longest method and a target that could still be `http`.
    #[test]
    fn the_bytes_peeked_always_decide() {
        for stream in [
            &b"abcdefghijklmnopqrst htt"[..],
            b"ABCDEFGHIJKLMNOPQRST",
            b"abcdefghijklmnopqrst",
            PREFACE,
        ] {
            let mut buf = stream.to_vec();
            buf.resize(PEEK, b'x');
            assert!(classify(&buf).is_some(), "{buf:?}");
        }
    }
}
