//! Writing a response for the fast path: the head, framed as hyper's
//! server would frame it, and the body in as few writes as it allows.

use crate::h1::chunked::write_size;
use bytes::{Buf as _, Bytes};
use http::header::{CONTENT_LENGTH, DATE};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt as _;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// Response bodies up to this size go out in the same write as the head.
const COALESCE: usize = 16 * 1024;

/// How the response body is framed on the wire.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Writes `resp`; `Ok(true)` when the connection can carry another request.
pub(super) async fn write_response<S, R>(
    io: &mut S,
    out: &mut Vec<u8>,
    resp: Response<R>,
    head_only: bool,
    close: bool,
    trailers_wanted: bool,
) -> io::Result<bool>
where
    S: AsyncWrite + Unpin,
    R: http_body::Body<Data = Bytes> + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    out.clear();
    let framing = encode_head(out, parts.status, &parts.headers, &body, head_only, close);
    if matches!(framing, Framing::None) {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(true);
    }
    let chunked = matches!(framing, Framing::Chunked);
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    // The head waits for the body's first bytes only if they are at hand.
    let mut pending_head = true;
    let mut trailers = None;
    loop {
        let frame = if pending_head {
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    io.write_all(out).await?;
                    io.flush().await?;
                    out.clear();
                    pending_head = false;
                    body.frame().await
                }
            }
        } else {
            body.frame().await
        };
        match frame {
            None => break,
            Some(Err(_)) => {
                // The upstream broke the body off: so must the client's copy.
                if pending_head && !out.is_empty() {
                    let _ = io.write_all(out).await;
                }
                return Ok(false);
            }
            Some(Ok(f)) => {
                let mut data = match f.into_data() {
                    Ok(d) => d,
                    Err(f) => {
                        // Sent after a chunked body to a client that takes them.
                        if chunked && trailers_wanted {
                            trailers = f.into_trailers().ok();
                        }
                        continue;
                    }
                };
                if data.is_empty() {
                    continue;
                }
                if !chunked {
                    if (data.len() as u64) > left {
                        data.truncate(left as usize);
                    }
                    left -= data.len() as u64;
                }
                if pending_head || data.len() <= COALESCE {
                    if !pending_head {
                        out.clear();
                    }
                    if chunked {
                        write_size(out, data.len());
                    }
                    out.extend_from_slice(&data);
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if !pending_head || out.len() > COALESCE {
                        io.write_all(out).await?;
                        out.clear();
                        pending_head = false;
                    }
                } else {
                    out.clear();
                    if chunked {
                        write_size(out, data.len());
                        io.write_all(out).await?;
                    }
                    while data.has_remaining() {
                        let n = io.write(&data).await?;
                        if n == 0 {
                            return Err(io::ErrorKind::WriteZero.into());
                        }
                        data.advance(n);
                    }
                    if chunked {
                        io.write_all(b"\r\n").await?;
                    }
                }
                if !chunked && left == 0 {
                    break;
                }
            }
        }
    }
    if chunked {
        if !pending_head {
            out.clear();
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.iter().flatten() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        pending_head = true;
    }
    if pending_head && !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await?;
    // A body shorter than its length leaves the client waiting: close.
    Ok(chunked || left == 0 || left == u64::MAX)
}

fn encode_head<R: http_body::Body>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &R,
    head_only: bool,
    close: bool,
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            length = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body || head_only {
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        use std::io::Write as _;
        let _ = write!(out, "content-length: {n}\r\n");
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    out.extend_from_slice(b"\r\n");
    match framing {
        Framing::Length(0) => Framing::None,
        f => f,
    }
}

thread_local! {
    /// The `date` value, remade once a second.
    static DATE_CACHE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http_body_util::Empty;

    #[test]
    fn heads_are_framed() {
        let mut out = Vec::new();
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
        h.insert(DATE, HeaderValue::from_static("x"));
        let f = encode_head(
            &mut out,
            StatusCode::OK,
            &h,
            &Empty::<Bytes>::new(),
            false,
            true,
        );
        assert!(matches!(f, Framing::Length(2)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: x\r\nconnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        let f = encode_head(
            &mut out,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &Empty::<Bytes>::new(),
            false,
            false,
        );
        assert!(matches!(f, Framing::None));
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\ndate: "), "{s}");
        assert!(s.ends_with(" GMT\r\ncontent-length: 0\r\n\r\n"), "{s}");
    }
}
