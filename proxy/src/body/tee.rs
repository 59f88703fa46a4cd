//! A request body read once and sent twice: the client's body goes to the
//! chosen backend as it arrives, and a copy of each frame goes to a mirror
//! (`RequestMirror`). The mirror never slows the real request: its copy
//! waits in a small queue, and when the queue is full — or the body grows
//! past the copy's byte limit — the mirror's body is cut off with an error
//! (its request is abandoned, never sent short).

use super::{BoxError, RequestBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::mpsc;

/// Frames the mirror may fall behind by before it is cut off.
const QUEUE: usize = 64;

/// The real request's body: the client's, copying each frame to the mirror.
pub(crate) struct Tee {
    inner: RequestBody,
    copy: Option<mpsc::Sender<Frame<Bytes>>>,
    cut: Arc<AtomicBool>,
    /// Bytes the copy may still take.
    room: u64,
}

/// The mirror's body: the copies, ending as the client's body ends, or with
/// an error if the client's failed or the mirror fell behind.
pub(crate) struct Copy {
    frames: mpsc::Receiver<Frame<Bytes>>,
    cut: Arc<AtomicBool>,
    done: bool,
}

/// Splits `body` into the one to send on and the mirror's copy, which is
/// cut off if the body grows past `limit` bytes.
pub(crate) fn tee(body: RequestBody, limit: u64) -> (RequestBody, RequestBody) {
    if body.is_end_stream() {
        return (body, RequestBody::Empty);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let cut = Arc::new(AtomicBool::new(false));
    let tee = Tee {
        inner: body,
        copy: Some(tx),
        cut: cut.clone(),
        room: limit,
    };
    let copy = Copy {
        frames: rx,
        cut,
        done: false,
    };
    (
        RequestBody::Tee(Box::new(tee)),
        RequestBody::Copy(Box::new(copy)),
    )
}

impl Tee {
    fn cut_off(&mut self) {
        self.cut.store(true, Ordering::Release);
        self.copy = None;
    }
}

impl Drop for Tee {
    /// The real request gave up on the body before its end (it failed, or
    /// was answered early): the copy must not look complete.
    fn drop(&mut self) {
        if self.copy.is_some() && !self.inner.is_end_stream() {
            self.cut.store(true, Ordering::Release);
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let copy = match (f.data_ref(), f.trailers_ref()) {
                    (Some(d), _) if d.len() as u64 > this.room => {
                        this.cut_off();
                        None
                    }
                    (Some(d), _) => {
                        this.room -= d.len() as u64;
                        Some(Frame::data(d.clone()))
                    }
                    (_, Some(t)) => Some(Frame::trailers(t.clone())),
                    _ => None,
                };
                if let (Some(c), Some(tx)) = (copy, &this.copy) {
                    if tx.try_send(c).is_err() {
                        this.cut_off();
                    }
                }
            }
            Some(Err(_)) => this.cut_off(),
            // The end: dropping the sender ends the copy cleanly.
            None => this.copy = None,
        }
        // A body that knows it has ended may not be polled again.
        if this.copy.is_some() && this.inner.is_end_stream() {
            this.copy = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Body for Copy {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.frames.poll_recv(cx)) {
            Some(f) => Poll::Ready(Some(Ok(f))),
            None => {
                self.done = true;
                if self.cut.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(
                        "the mirror fell behind the request, or the request failed".into(),
                    )))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn both_halves_see_every_frame() {
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(8);
        let source = RequestBody::Copy(Box::new(Copy {
            frames: rx,
            cut: Arc::new(AtomicBool::new(false)),
            done: false,
        }));
        let (main, copy) = tee(source, u64::MAX);
        for chunk in ["a", "bc", "def"] {
            tx.send(Frame::data(Bytes::from(chunk))).await.unwrap();
        }
        drop(tx);
        let main = main.collect().await.unwrap().to_bytes();
        let copy = copy.collect().await.unwrap().to_bytes();
        assert_eq!((&main[..], &copy[..]), (&b"abcdef"[..], &b"abcdef"[..]));
    }

    #[tokio::test]
    async fn a_body_the_request_abandons_is_cut_off_not_sent_short() {
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(8);
        let source = RequestBody::Copy(Box::new(Copy {
            frames: rx,
            cut: Arc::new(AtomicBool::new(false)),
            done: false,
        }));
        let (mut main, copy) = tee(source, u64::MAX);
        tx.send(Frame::data(Bytes::from_static(b"part")))
            .await
            .unwrap();
        let first = main.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "part");
        drop(main);
        assert!(copy.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_mirror_that_falls_behind_is_cut_off_not_sent_short() {
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(QUEUE * 2);
        let source = RequestBody::Copy(Box::new(Copy {
            frames: rx,
            cut: Arc::new(AtomicBool::new(false)),
            done: false,
        }));
        let (main, copy) = tee(source, u64::MAX);
        for _ in 0..QUEUE + 1 {
            tx.send(Frame::data(Bytes::from_static(b"x")))
                .await
                .unwrap();
        }
        drop(tx);
        // The real request gets everything, unslowed.
        let main = main.collect().await.unwrap().to_bytes();
        assert_eq!(main.len(), QUEUE + 1);
        // The mirror's body ends in an error.
        assert!(copy.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_cut_off_not_sent_short() {
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(8);
        let source = RequestBody::Copy(Box::new(Copy {
            frames: rx,
            cut: Arc::new(AtomicBool::new(false)),
            done: false,
        }));
        let (main, copy) = tee(source, 10);
        for chunk in ["12345", "67890", "x"] {
            tx.send(Frame::data(Bytes::from(chunk))).await.unwrap();
        }
        drop(tx);
        let main = main.collect().await.unwrap().to_bytes();
        assert_eq!(&main[..], b"1234567890x");
        assert!(copy.collect().await.is_err());

        // Exactly at the limit is whole.
        let (tx, rx) = mpsc::channel::<Frame<Bytes>>(8);
        let source = RequestBody::Copy(Box::new(Copy {
            frames: rx,
            cut: Arc::new(AtomicBool::new(false)),
            done: false,
        }));
        let (main, copy) = tee(source, 10);
        for chunk in ["12345", "67890"] {
            tx.send(Frame::data(Bytes::from(chunk))).await.unwrap();
        }
        drop(tx);
        main.collect().await.unwrap();
        assert_eq!(&copy.collect().await.unwrap().to_bytes()[..], b"1234567890");
    }
}
