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

/// Longest method taken for HTTP/1 (`UPDATEREDIRECTREF` has 17 letters);
/// with its space it fits the bytes `detect` peeks at.
const MAX_METHOD: usize = 20;

/// Classifies a byte prefix; `None` means "need more bytes". A verdict once
/// given holds whatever bytes follow, so it does not depend on how the
/// client's first bytes were split into segments.
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
    // An HTTP/1 request line starts with an upper-case method token and a space.
    let token = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match buf.get(token) {
        Some(b' ') if (3..=MAX_METHOD).contains(&token) => Some(Detected::Http1),
        None if token <= MAX_METHOD => None,
        _ => Some(Detected::Opaque),
    }
}

/// Peeks at the first bytes, waiting up to `timeout` for enough of them.
pub(crate) async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let work = async {
        let mut buf = [0u8; 24];
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
        assert_eq!(classify(b"SSH-2.0"), Some(Detected::Opaque));
        assert_eq!(classify(b"HELO x\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU"), Some(Detected::Opaque));
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/detect.rs`): a verdict on the
    /// first bytes must hold once more arrive. `PROPFIND` alone was opaque
    /// (eight letters and no space yet) but HTTP/1 with its space, and
    /// `PRI ` was HTTP/2 although `PRI x` is HTTP/1; so what a connection
    /// was served as depended on how its first segment was split.
    #[test]
    fn a_verdict_holds_whatever_follows() {
        for stream in [
            &b"PROPFIND / HTTP/1.1\r\n"[..],
            b"UPDATEREDIRECTREF / HTTP/1.1\r\n",
            b"PRI x HTTP/1.1\r\n",
            PREFACE,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ ",
        ] {
            let last = classify(stream);
            assert!(last.is_some(), "{stream:?}");
            for n in 0..stream.len() {
                if let Some(early) = classify(&stream[..n]) {
                    assert_eq!(Some(early), last, "{:?}", &stream[..n]);
                }
            }
        }
        assert_eq!(classify(b"PROPFIND / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"PRI x HTTP/1.1\r\n"), Some(Detected::Http1));
    }
}
