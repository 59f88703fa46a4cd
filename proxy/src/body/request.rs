//! What is sent upstream: the client's body as it arrives, a copy that can
//! be sent again (retries), a body shared with a mirror (`tee`), or nothing.

use super::pace::Paced;
use super::replay::ReplayBody;
use super::BoxError;
use crate::h1::strip_trailer_fields;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

#[derive(Default)]
pub(crate) enum RequestBody {
    /// The client's body as it arrives, its pace watched.
    Incoming(Paced),
    /// A copy of the client's body, kept so the request can be sent again.
    /// Boxed: rare, and it would make every request larger.
    Replay(Box<ReplayBody<Paced>>),
    /// The client's body, copied to a mirror as it goes.
    Tee(Box<super::tee::Tee>),
    /// A mirror's copy of a client's body.
    Copy(Box<super::tee::Copy>),
    #[default]
    Empty,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut frame = match self.get_mut() {
            RequestBody::Incoming(b) => ready!(Pin::new(b).poll_frame(cx)),
            RequestBody::Replay(b) => ready!(Pin::new(&mut **b).poll_frame(cx)),
            RequestBody::Tee(b) => ready!(Pin::new(&mut **b).poll_frame(cx)),
            RequestBody::Copy(b) => ready!(Pin::new(&mut **b).poll_frame(cx)),
            RequestBody::Empty => None,
        };
        if let Some(Ok(f)) = &mut frame {
            if let Some(t) = f.trailers_mut() {
                strip_trailer_fields(t);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Replay(b) => b.is_end_stream(),
            RequestBody::Tee(b) => b.is_end_stream(),
            RequestBody::Copy(b) => b.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Replay(b) => b.size_hint(),
            RequestBody::Tee(b) => b.size_hint(),
            RequestBody::Copy(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
