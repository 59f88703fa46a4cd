//! Both ends of a hop on raw sockets: an upstream that records the exact
//! bytes of every request it is sent and answers with scripted bytes, and a
//! client that writes arbitrary bytes and reads what comes back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest any exchange may take.
const LIMIT: Duration = Duration::from_secs(5);

/// An upstream on a raw socket: every request's bytes, as received.
pub struct Recorder {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    partials: Arc<Mutex<Vec<Vec<u8>>>>,
    answer: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    /// Answers every request with `answer`.
    pub async fn start(answer: &[u8]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let partials: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let answer = Arc::new(Mutex::new(answer.to_vec()));
        let (reqs, parts, ans) = (requests.clone(), partials.clone(), answer.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (reqs, parts, ans) = (reqs.clone(), parts.clone(), ans.clone());
                tokio::spawn(serve(s, reqs, parts, ans));
            }
        });
        Recorder {
            addr,
            requests,
            partials,
            answer,
        }
    }

    /// The bytes of every whole request received so far.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().expect("lock").clone()
    }

    /// What connections that closed had sent after their last whole
    /// request.
    pub fn partials(&self) -> Vec<Vec<u8>> {
        self.partials.lock().expect("lock").clone()
    }

    /// From now on, answer with `answer`.
    pub fn set_answer(&self, answer: &[u8]) {
        *self.answer.lock().expect("lock") = answer.to_vec();
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.requests.lock().expect("lock").clear();
        self.partials.lock().expect("lock").clear();
    }
}

type Log = Arc<Mutex<Vec<Vec<u8>>>>;

async fn serve(mut s: TcpStream, reqs: Log, parts: Log, ans: Arc<Mutex<Vec<u8>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(n) = read_request(&mut s, &mut buf).await else {
            if !buf.is_empty() {
                parts.lock().expect("lock").push(std::mem::take(&mut buf));
            }
            return;
        };
        let req: Vec<u8> = buf.drain(..n).collect();
        reqs.lock().expect("lock").push(req);
        let answer = ans.lock().expect("lock").clone();
        if s.write_all(&answer).await.is_err() {
            return;
        }
        // An answer that asks to close, closes.
        if find(&answer, b"connection: close").is_some() {
            return;
        }
    }
}

/// Reads until `buf` holds a whole request (head and body, framed by its
/// Content-Length or chunked encoding); its length. `None` when the peer
/// closed first.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(n) = request_len(buf) {
            return Some(n);
        }
        // No time limit: a pooled connection may idle between requests.
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The length of the first whole request in `b`, if it is all there.
fn request_len(b: &[u8]) -> Option<usize> {
    let head = find(b, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&b[..head]).to_ascii_lowercase();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    if field("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        return chunked_len(&b[head..]).map(|n| head + n);
    }
    let len: usize = field("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (b.len() >= head + len).then_some(head + len)
}

/// The length of a whole chunked body (trailers included) at the start of `b`.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&b[at..], b"\r\n")?;
        let line = std::str::from_utf8(&b[at..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers up to an empty line.
            let end = find(&b[at..], b"\r\n\r\n")
                .map(|i| i + 4)
                .filter(|_| !b[at..].starts_with(b"\r\n"))
                .or_else(|| b[at..].starts_with(b"\r\n").then_some(2))?;
            return Some(at + end);
        }
        at += size + 2;
        if b.len() < at {
            return None;
        }
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a client got back.
#[derive(Debug, Clone)]
pub struct Got {
    /// Every byte received.
    pub bytes: Vec<u8>,
    /// The complete responses, in order (interim 1xx ones left out).
    pub responses: Vec<Response>,
    /// The server closed the connection.
    pub closed: bool,
}

/// One response as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// (lower-cased name, value) in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Trailers of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.values(name).first().copied()
    }
}

impl Got {
    /// The status of the first response, if one came.
    pub fn status(&self) -> Option<u16> {
        self.responses.first().map(|r| r.status)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Writes `bytes` to `addr` and reads `expect` responses (to requests whose
/// methods are `heads`: true for HEAD), or until the server closes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], heads: &[bool]) -> Got {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            return Got {
                bytes: Vec::new(),
                responses: Vec::new(),
                closed: true,
            }
        }
    };
    let _ = s.write_all(bytes).await;
    read_responses(&mut s, heads).await
}

/// Reads responses to requests whose methods are `heads` (true for HEAD),
/// until all have come, the server closes, or the time limit.
pub async fn read_responses(s: &mut TcpStream, heads: &[bool]) -> Got {
    let mut got = Got {
        bytes: Vec::new(),
        responses: Vec::new(),
        closed: false,
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut at = 0;
    loop {
        // Take every complete response now in the buffer.
        while got.responses.len() < heads.len() {
            let head_req = heads[got.responses.len()];
            match parse_response(&got.bytes[at..], head_req, false) {
                Some((n, r)) => {
                    at += n;
                    if r.status >= 200 || r.status == 101 {
                        got.responses.push(r);
                    }
                }
                None => break,
            }
        }
        if got.responses.len() == heads.len() && !heads.is_empty() {
            return got;
        }
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                got.closed = true;
                // A body delimited by the close is complete now.
                if got.responses.len() < heads.len() {
                    let head_req = heads[got.responses.len()];
                    if let Some((_, r)) = parse_response(&got.bytes[at..], head_req, true) {
                        got.responses.push(r);
                    }
                }
                return got;
            }
            Ok(Ok(n)) => got.bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Parses one whole response at the start of `b`: its length and itself.
/// `closed`: the connection has ended (a body without framing ends there).
fn parse_response(b: &[u8], head_req: bool, closed: bool) -> Option<(usize, Response)> {
    let head_end = find(b, b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&b[..head_end]).ok()?;
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let field = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut r = Response {
        status,
        headers: headers.clone(),
        body: Vec::new(),
        trailers: Vec::new(),
    };
    if head_req || status < 200 || status == 204 || status == 304 {
        return Some((head_end, r));
    }
    let rest = &b[head_end..];
    if field("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked")) {
        let n = chunked_len(rest)?;
        let (body, trailers) = dechunk(&rest[..n]);
        r.body = body;
        r.trailers = trailers;
        return Some((head_end + n, r));
    }
    if let Some(len) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        r.body = rest[..len].to_vec();
        return Some((head_end + len, r));
    }
    // Until the connection closes.
    if !closed {
        return None;
    }
    r.body = rest.to_vec();
    Some((b.len(), r))
}

/// The data and trailers of a whole chunked body.
fn dechunk(b: &[u8]) -> (Vec<u8>, Vec<(String, String)>) {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = find(&b[at..], b"\r\n").map(|i| at + i) else {
            return (body, Vec::new());
        };
        let line = String::from_utf8_lossy(&b[at..end]);
        let size =
            usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        at = end + 2;
        if size == 0 {
            let t = String::from_utf8_lossy(&b[at..]);
            let trailers = t
                .split("\r\n")
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return (body, trailers);
        }
        body.extend_from_slice(&b[at..(at + size).min(b.len())]);
        at += size + 2;
        if at > b.len() {
            return (body, Vec::new());
        }
    }
}
