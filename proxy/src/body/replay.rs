//! A request body that can be sent more than once.
//!
//! The first try streams the client's body as it arrives (nothing waits
//! for the whole of it) and keeps what goes by, up to a cap. A retry gets a
//! copy that sends what was kept and then, if the client's body is not
//! over yet, reads on from where the earlier try stopped. Only one copy is
//! read at a time (tries follow each other); a copy that needs the client's
//! body while an earlier try still holds it waits until that try lets go.
//! Past the cap nothing more is kept and no further copy can be made: the
//! request can no longer be sent again.
//!
//! The state the copies share sits behind a mutex that only the copies of
//! one request ever take, one after another: it is never contended.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::BoxError;

/// One copy of a replayable body.
pub(crate) struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// How many kept chunks this copy has sent.
    sent: usize,
    /// The client's body, while this copy is the one reading it.
    source: Option<B>,
    /// This copy has sent the trailers (or there are none to send).
    trailers_sent: bool,
    /// This copy has ended.
    done: bool,
    size: SizeHint,
}

struct Shared<B> {
    /// What the client's body has given so far, while under the cap.
    chunks: Vec<Bytes>,
    kept: u64,
    cap: u64,
    /// The client's body, when no copy is reading it.
    source: Option<B>,
    /// A copy waiting for the client's body.
    waiting: Option<Waker>,
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
    #[error("the request body went past what is kept for retries")]
    Overflowed,
    #[error("the request body failed on an earlier try")]
    Failed,
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// The first copy of `body`, keeping up to `cap` bytes for retries.
    pub(crate) fn new(body: B, cap: u64) -> ReplayBody<B> {
        let size = body.size_hint();
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                chunks: Vec::new(),
                kept: 0,
                cap,
                source: Some(body),
                waiting: None,
                ended: false,
                trailers: None,
                overflowed: false,
                failed: false,
            })),
            sent: 0,
            source: None,
            trailers_sent: false,
            done: false,
            size,
        }
    }

    /// Another copy from the start, for a retry; `None` once the body went
    /// past the cap or failed.
    pub(crate) fn replay(&self) -> Option<ReplayBody<B>> {
        let s = lock(&self.shared);
        if s.overflowed || s.failed {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            sent: 0,
            source: None,
            trailers_sent: false,
            done: false,
            size: self.size,
        })
    }

    /// Whether another copy can still be made.
    pub(crate) fn replayable(&self) -> bool {
        let s = lock(&self.shared);
        !s.overflowed && !s.failed
    }

    /// Reads the client's body on (this copy holds it).
    fn poll_source(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        let mut s = lock(&self.shared);
        // A copy waiting for what this one reads can go on.
        if let Some(w) = s.waiting.take() {
            w.wake();
        }
        match frame {
            None => {
                s.ended = true;
                self.source = None;
                self.trailers_sent = true;
                self.done = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                s.failed = true;
                self.source = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !s.overflowed {
                        s.kept += data.len() as u64;
                        if s.kept > s.cap {
                            s.overflowed = true;
                            s.chunks = Vec::new();
                        } else {
                            s.chunks.push(data.clone());
                            self.sent += 1;
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        if this.done {
            return Poll::Ready(None);
        }
        if this.source.is_some() {
            return this.poll_source(cx);
        }
        let mut s = lock(&this.shared);
        if s.failed {
            return Poll::Ready(Some(Err(Unavailable::Failed.into())));
        }
        if s.overflowed {
            return Poll::Ready(Some(Err(Unavailable::Overflowed.into())));
        }
        if let Some(chunk) = s.chunks.get(this.sent) {
            this.sent += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = &s.trailers {
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
            }
            this.done = true;
            return Poll::Ready(None);
        }
        match s.source.take() {
            Some(source) => {
                drop(s);
                this.source = Some(source);
                this.poll_source(cx)
            }
            None => {
                // An earlier try still holds the client's body: wait for
                // what it reads, or for it to let go.
                s.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        if self.source.is_some() {
            return false;
        }
        let s = lock(&self.shared);
        !s.failed
            && !s.overflowed
            && s.ended
            && self.sent >= s.chunks.len()
            && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        // Hand the client's body on to the next copy.
        if let Some(source) = self.source.take() {
            let mut s = lock(&self.shared);
            s.source = Some(source);
            if let Some(w) = s.waiting.take() {
                w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests;
