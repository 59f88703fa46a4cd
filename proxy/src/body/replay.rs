//! A request body that can be sent more than once.
//!
//! The first try streams the client's body as it arrives (nothing waits
//! for the whole of it) and keeps what goes by, up to a cap. A retry gets a
//! copy ([`Replay::copy`]) that sends what was kept and then, if the
//! client's body is not over yet, reads on from where the earlier try
//! stopped. A new copy supersedes the earlier ones: a try the retry loop
//! has given up on may still be polled by its connection, but it then ends
//! with an error instead of reading on, so only the newest copy ever reads
//! the client's body (and is woken by it). Past the cap nothing more is
//! kept and no further copy can be made: the request can no longer be sent
//! again, though the copy reading it still sends every byte.
//!
//! The state the copies share sits behind a mutex taken only by the copies
//! of one request, one after another: it is not contended. The client's
//! body lives in that state and is taken out only for the length of one
//! poll.

use super::BoxError;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// One copy of a replayable body.
pub(crate) struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    copy: Copy,
    size: SizeHint,
}

/// Where one copy is.
struct Copy {
    /// Which copy this is; only the newest reads on.
    generation: u64,
    /// How many kept chunks this copy has sent.
    sent: usize,
    /// This copy has sent the trailers.
    trailers_sent: bool,
    /// This copy has ended.
    done: bool,
}

impl Copy {
    fn new(generation: u64) -> Copy {
        Copy {
            generation,
            sent: 0,
            trailers_sent: false,
            done: false,
        }
    }
}

/// Makes copies of a replayable body, for retries.
pub(crate) struct Replay<B> {
    shared: Arc<Mutex<Shared<B>>>,
    size: SizeHint,
}

struct Shared<B> {
    /// What the client's body has given so far, while under the cap.
    chunks: Vec<Bytes>,
    kept: u64,
    cap: u64,
    /// The client's body, unless a copy is polling it right now, or it ended.
    source: Option<B>,
    /// The newest copy's generation.
    current: u64,
    /// Copies that found the client's body out for another copy's poll.
    waiting: Vec<Waker>,
    /// The client's body has ended; everything it gave is in `chunks`.
    ended: bool,
    trailers: Option<HeaderMap>,
    /// More than `cap` went by: the body cannot be sent again.
    overflowed: bool,
    /// Reading the client's body failed.
    failed: bool,
}

/// Why a copy cannot go on.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("a later try took over the request body")]
    Superseded,
    #[error("the request body failed on an earlier try")]
    Failed,
}

impl<B> Shared<B> {
    /// The client's body is back from a poll: copies waiting for it go on.
    fn put_back(&mut self, source: B) {
        self.source = Some(source);
        for w in self.waiting.drain(..) {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The first copy of `body`, keeping up to `cap` bytes for retries, and
    /// the handle that makes further copies.
    pub(crate) fn new(body: B, cap: u64) -> (ReplayBody<B>, Replay<B>) {
        let size = body.size_hint();
        let shared = Arc::new(Mutex::new(Shared {
            chunks: Vec::new(),
            kept: 0,
            cap,
            source: Some(body),
            current: 0,
            waiting: Vec::new(),
            ended: false,
            trailers: None,
            overflowed: false,
            failed: false,
        }));
        let first = ReplayBody {
            shared: shared.clone(),
            copy: Copy::new(0),
            size,
        };
        (first, Replay { shared, size })
    }
}

impl Copy {
    /// Reads the client's body on; `s` is the shared state, locked.
    fn poll_source<B>(
        &mut self,
        shared: &Mutex<Shared<B>>,
        mut s: MutexGuard<'_, Shared<B>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let Some(mut source) = s.source.take() else {
            // Another copy's poll has it out for a moment.
            s.waiting.push(cx.waker().clone());
            return Poll::Pending;
        };
        drop(s);
        let frame = Pin::new(&mut source).poll_frame(cx);
        let mut s = lock(shared);
        if !matches!(frame, Poll::Ready(None)) {
            s.put_back(source);
        }
        match frame {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                self.finish(s)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                self.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if !s.overflowed {
                        s.kept += data.len() as u64;
                        if s.kept > s.cap {
                            s.overflowed = true;
                            s.chunks = Vec::new();
                        } else {
                            s.chunks.push(data.clone());
                            // Only the newest copy is caught up with the kept
                            // chunks; an earlier one reading here is ending.
                            if self.generation == s.current {
                                self.sent += 1;
                            }
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(t) = frame.trailers_ref() {
                        s.trailers = Some(t.clone());
                    }
                    self.trailers_sent = true;
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    /// The client's body has ended: the trailers, if this copy has not sent
    /// them yet (an earlier try read them), then the end.
    fn finish<B>(
        &mut self,
        s: MutexGuard<'_, Shared<B>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.trailers_sent {
            self.trailers_sent = true;
            if let Some(t) = &s.trailers {
                return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
            }
        }
        self.done = true;
        Poll::Ready(None)
    }
}

impl<B> Replay<B> {
    /// A new copy from the start, for a retry; earlier copies stand down.
    /// `None` once the body went past the cap or failed.
    pub(crate) fn copy(&self) -> Option<ReplayBody<B>> {
        let mut s = lock(&self.shared);
        if s.overflowed || s.failed {
            return None;
        }
        s.current += 1;
        Some(ReplayBody {
            shared: self.shared.clone(),
            copy: Copy::new(s.current),
            size: self.size,
        })
    }

    /// Whether the client's body was read to its end, or to its declared
    /// length, and kept whole (a copy made now takes nothing from the copy
    /// that read it: HTTP/1 stops reading a body at its length).
    pub(crate) fn whole(&self) -> bool {
        let s = lock(&self.shared);
        let read = s.ended || self.size.exact() == Some(s.kept);
        read && !s.overflowed && !s.failed
    }

    /// Whether another copy can still be made.
    pub(crate) fn available(&self) -> bool {
        let s = lock(&self.shared);
        !s.overflowed && !s.failed
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let copy = &mut this.copy;
        if copy.done {
            return Poll::Ready(None);
        }
        let s = lock(&this.shared);
        if copy.generation != s.current {
            copy.done = true;
            return Poll::Ready(Some(Err(Unavailable::Superseded.into())));
        }
        if s.failed {
            copy.done = true;
            return Poll::Ready(Some(Err(Unavailable::Failed.into())));
        }
        if !s.overflowed {
            if let Some(chunk) = s.chunks.get(copy.sent) {
                copy.sent += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
        }
        if s.ended {
            return copy.finish(s);
        }
        copy.poll_source(&this.shared, s, cx)
    }

    fn is_end_stream(&self) -> bool {
        let c = &self.copy;
        if c.done {
            return true;
        }
        let s = lock(&self.shared);
        s.ended
            && !s.failed
            && c.generation == s.current
            && c.sent >= s.chunks.len()
            && (c.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

#[cfg(test)]
mod tests;
