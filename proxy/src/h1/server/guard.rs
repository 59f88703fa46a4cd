//! A watch on the request heads hyper's server reads after the handoff, for
//! what hyper repairs silently instead of refusing: a `Content-Length`
//! repeated with the same value (hyper keeps one), `Content-Length` beside
//! `Transfer-Encoding` (hyper drops the length and closes after the
//! response) and a fragment in the target (dropped). Other proxies refuse
//! all three, and a request one hop repairs is one the next hop may read
//! another way, so here they are a 400 like every other ambiguous message.
//!
//! The guard follows the byte stream's message boundaries (head, then a
//! body framed by its length or chunked coding) without changing a byte
//! until a head breaks the rule; that head is then cut at its last byte,
//! replaced by one hyper cannot parse, so hyper answers 400 and closes.
//! Whenever the guard's reading could part from hyper's (a head hyper
//! refuses anyway, an upgrade or `CONNECT` after which the bytes may be a
//! tunnel's, an oversized or malformed line) it stops watching for the
//! rest of the connection: it never trips on bytes it is unsure of.

use crate::h1::chunked::parse_size;
use crate::h1::framing::digits;
use crate::h1::limits::{MAX_CHUNK_LINE, MAX_HEADERS};
use crate::h1::tokens::has_token;
use std::mem::MaybeUninit;

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Reading a request head (kept in `Guard::head` while incomplete).
    Head,
    /// This many body bytes to go.
    Length(u64),
    /// A chunk-size line (kept in `Guard::line`).
    ChunkSize,
    /// This many chunk bytes to go, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data: this many bytes of it to go.
    ChunkEnd(u8),
    /// The trailer section: bytes on the current line so far, on all
    /// lines, and whether the last was a CR.
    Trailers { line: usize, total: usize, cr: bool },
    /// No longer watching.
    Off,
    /// A head broke the rule: nothing more is read.
    Tripped,
}

/// The guard's view of one connection's request stream.
pub(super) struct Guard {
    state: State,
    head: Vec<u8>,
    line: Vec<u8>,
    max_head: usize,
}

/// What `Guard::scan` made of new bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Pass them on.
    Pass,
    /// Pass on the first `n`, whose last byte is to be replaced by NUL, and
    /// nothing after.
    Cut(usize),
    /// Pass on nothing more (end of stream).
    Stop,
}

impl Guard {
    pub(super) fn new(max_head: usize) -> Guard {
        Guard {
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            max_head,
        }
    }

    /// Follows `bytes`, the next ones read off the connection.
    pub(super) fn scan(&mut self, bytes: &[u8]) -> Verdict {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            at += match self.state {
                State::Off => return Verdict::Pass,
                State::Tripped => return Verdict::Stop,
                State::Head => match self.head_step(rest) {
                    Step::Took(n) => n,
                    Step::Trip(n) => return Verdict::Cut(at + n),
                },
                State::Length(left) => {
                    let n = left.min(rest.len() as u64);
                    self.state = match left - n {
                        0 => State::Head,
                        left => State::Length(left),
                    };
                    n as usize
                }
                State::ChunkSize => self.size_line_step(rest),
                State::ChunkData(left) => {
                    let n = left.min(rest.len() as u64);
                    self.state = match left - n {
                        0 => State::ChunkEnd(2),
                        left => State::ChunkData(left),
                    };
                    n as usize
                }
                State::ChunkEnd(left) => {
                    let want = if left == 2 { b'\r' } else { b'\n' };
                    self.state = match (rest[0] == want, left) {
                        (false, _) => State::Off,
                        (true, 2) => State::ChunkEnd(1),
                        (true, _) => State::ChunkSize,
                    };
                    1
                }
                State::Trailers { line, total, cr } => {
                    let b = rest[0];
                    self.state = if total >= self.max_head {
                        State::Off
                    } else if b == b'\n' && (line == 0 || (line == 1 && cr)) {
                        State::Head
                    } else if b == b'\n' {
                        State::Trailers {
                            line: 0,
                            total: total + 1,
                            cr: false,
                        }
                    } else {
                        State::Trailers {
                            line: line + 1,
                            total: total + 1,
                            cr: b == b'\r',
                        }
                    };
                    1
                }
            };
        }
        match self.state {
            State::Tripped => Verdict::Stop,
            _ => Verdict::Pass,
        }
    }

    /// Reads head bytes from the front of `rest`.
    fn head_step(&mut self, rest: &[u8]) -> Step {
        let before = self.head.len();
        let parsed = if before == 0 {
            judge(rest)
        } else {
            let take = rest
                .len()
                .min(self.max_head + 1 - before.min(self.max_head));
            self.head.extend_from_slice(&rest[..take]);
            judge(&self.head)
        };
        match parsed {
            // hyper refuses a head longer than the limit (431), whether it
            // came in one read or several.
            Judged::Done(len, _) | Judged::Refuse(len) if len > self.max_head => {
                self.off();
                Step::Took(rest.len())
            }
            Judged::Partial => {
                if before == 0 {
                    self.head.extend_from_slice(rest);
                }
                if self.head.len() > self.max_head {
                    // hyper refuses it (431).
                    self.off();
                }
                Step::Took(rest.len())
            }
            Judged::Done(len, next) => {
                self.head.clear();
                self.state = next;
                Step::Took(len - before)
            }
            Judged::Refuse(len) => {
                self.head.clear();
                self.state = State::Tripped;
                Step::Trip(len - before)
            }
            Judged::Unsure => {
                self.off();
                Step::Took(rest.len())
            }
        }
    }

    /// Reads chunk-size line bytes from the front of `rest`.
    fn size_line_step(&mut self, rest: &[u8]) -> usize {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            self.line.extend_from_slice(rest);
            if self.line.len() > MAX_CHUNK_LINE {
                self.off();
            }
            return rest.len();
        };
        self.line.extend_from_slice(&rest[..end]);
        let size = self
            .line
            .strip_suffix(b"\r")
            .filter(|_| self.line.len() <= MAX_CHUNK_LINE)
            .and_then(parse_size);
        self.line.clear();
        self.state = match size {
            None => State::Off,
            Some(0) => State::Trailers {
                line: 0,
                total: 0,
                cr: false,
            },
            Some(n) => State::ChunkData(n),
        };
        end + 1
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
        self.line = Vec::new();
    }
}

enum Step {
    Took(usize),
    Trip(usize),
}

enum Judged {
    Partial,
    /// A whole head of this length; what follows it.
    Done(usize, State),
    /// A whole head of this length, to refuse.
    Refuse(usize),
    /// Not something to follow further.
    Unsure,
}

/// Parses the head at the front of `b` and judges its framing.
fn judge(b: &[u8]) -> Judged {
    let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(b, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Judged::Partial,
        Err(_) => return Judged::Unsure,
    };
    if req.method == Some("CONNECT") {
        return Judged::Unsure;
    }
    if req.path.is_some_and(|p| p.contains('#')) {
        return Judged::Refuse(len);
    }
    let (mut lengths, mut length, mut codings, mut chunked) = (0, None, 0, false);
    for h in req.headers.iter() {
        // The length first: most names are none of these four.
        let name = h.name.as_bytes();
        let is = |want: &[u8]| name.len() == want.len() && name.eq_ignore_ascii_case(want);
        match name.len() {
            14 if is(b"content-length") => {
                lengths += 1;
                length = digits(h.value);
            }
            17 if is(b"transfer-encoding") => {
                codings += 1;
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            // What follows may be a tunnel's bytes.
            7 if is(b"upgrade") => return Judged::Unsure,
            10 if is(b"connection") && has_token(h.value, b"upgrade") => return Judged::Unsure,
            _ => {}
        }
    }
    if lengths > 1 || (lengths > 0 && codings > 0) {
        return Judged::Refuse(len);
    }
    match (codings, chunked, length) {
        (0, _, _) if lengths == 0 => Judged::Done(len, State::Head),
        (0, _, Some(0)) => Judged::Done(len, State::Head),
        (0, _, Some(n)) => Judged::Done(len, State::Length(n)),
        (1, true, _) => Judged::Done(len, State::ChunkSize),
        // hyper refuses these itself, or the checks do.
        _ => Judged::Unsure,
    }
}

#[cfg(test)]
mod tests;
