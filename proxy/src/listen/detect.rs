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

/// Classifies a byte prefix; `None` means "need more bytes".
pub(crate) fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(PREFACE.len());
    if buf[..n] == PREFACE[..n] {
        return (n >= 4).then_some(Detected::Http2);
    }
    // An HTTP/1 request line starts with an upper-case method token and a
    // space. A token of other letters is HTTP/1 too when a request target
    // follows (so `get /` gets a 400 rather than reaching the app as bytes);
    // `get key` (memcached) and the like stay opaque.
    let upper = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if upper >= 3 && buf.get(upper) == Some(&b' ') {
        return Some(Detected::Http1);
    }
    let token = buf.iter().take_while(|b| tchar(**b)).count();
    if token == buf.len() {
        return (token >= 16).then_some(Detected::Opaque);
    }
    if buf[token] != b' ' || token == 0 {
        return Some(Detected::Opaque);
    }
    let target = &buf[token + 1..];
    let looks = |t: &[u8]| {
        t.first().is_some_and(|c| matches!(c, b'/' | b'*'))
            || t.len() >= 4 && t[..4].eq_ignore_ascii_case(b"http")
    };
    match target.len() {
        0 => None,
        1..=3 if target[0].eq_ignore_ascii_case(&b'h') => None,
        _ => Some(if looks(target) {
            Detected::Http1
        } else {
            Detected::Opaque
        }),
    }
}

/// A byte of an HTTP token (RFC 9110 section 5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
        assert_eq!(classify(b"PRI "), Some(Detected::Http2));
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
        assert_eq!(classify(b"PING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"G@T / HTTP/1.1"), Some(Detected::Opaque));
    }
}
