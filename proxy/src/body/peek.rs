//! Reading ahead of a response body to see its trailers, then handing on
//! everything read.
//!
//! gRPC puts a call's status in the trailers, after the message; to retry
//! on a status (`retryOn: unavailable`), the retry loop must read a small
//! response to its end before deciding. [`Peeked`] reads ahead up to a cap
//! of data, stops at the trailers, the end, or an error, and then gives the
//! client exactly the frames it would have had (an upstream error included,
//! in its place), followed by the rest of the body.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A body whose first frames were read ahead.
pub(crate) struct Peeked<B: Body> {
    frames: VecDeque<Frame<Bytes>>,
    /// An error met while reading ahead, given after the frames.
    error: Option<B::Error>,
    rest: B,
}

// Nothing of a `Peeked` is pinned but `rest`, which is `Unpin`.
impl<B: Body + Unpin> Unpin for Peeked<B> {}

impl<B> Peeked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads `body` ahead until its trailers, its end, an error, or more
    /// than `cap` bytes of data; returns the trailers if they were reached.
    pub(crate) async fn read(mut body: B, cap: u64) -> (Peeked<B>, Option<HeaderMap>) {
        let mut frames = VecDeque::new();
        let mut seen = 0u64;
        let mut trailers = None;
        let mut error = None;
        while seen <= cap {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(f)) => {
                    if let Some(t) = f.trailers_ref() {
                        trailers = Some(t.clone());
                    }
                    seen += f.data_ref().map_or(0, |d| d.len() as u64);
                    let last = f.is_trailers();
                    frames.push_back(f);
                    if last {
                        break;
                    }
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
                None => break,
            }
        }
        let peeked = Peeked {
            frames,
            error,
            rest: body,
        };
        (peeked, trailers)
    }
}

impl<B> Body for Peeked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(Ok(f)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.error.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self
            .frames
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}

#[cfg(test)]
mod tests;
