//! What the client is sent: an upstream body streamed as it arrives, or a
//! body the proxy made itself.
//!
//! When an upstream HTTP/1 body has been read to its end, its connection
//! goes back to its pool; a body dropped half-way closes the connection
//! instead, since unread bytes would corrupt the next exchange. The body
//! also holds what must last as long as the response: the endpoint's
//! active-request count, the backend's request slot, and the trace span.

use super::peek::Peeked;
use super::request::RequestBody;
use crate::balance::ActiveGuard;
use crate::h1::{client, strip_trailer_fields};
use crate::resilience::limits::Permit;
use crate::telemetry::trace::Pending;
use crate::transport::Reusable;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// An error while streaming a response body.
pub(crate) type BodyError = super::BoxError;

/// What we send to the client.
pub(crate) struct ResponseBody {
    kind: Kind,
    /// Runs when the body has been fully read (pool return).
    done: Option<Reusable<RequestBody>>,
    /// Counts the request as active on its endpoint until the body ends.
    _active: Option<ActiveGuard>,
    /// The backend's concurrent-request slot, held until the body ends.
    _permit: Option<Permit>,
    /// The listener's in-flight request slot, held until the body ends.
    _listener: Option<Permit>,
    /// The request's trace span, which ends with the body.
    trace: Option<Box<Pending>>,
}

// Not boxed: a box would cost an allocation per response, and the body is
// stored once per connection by the server, not copied around.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Upstream(Incoming),
    /// Read by the lean HTTP/1 client, which pools its own connection.
    Lean(client::Body<RequestBody>),
    /// Frames read ahead (to see gRPC trailers), then the rest.
    Peeked(Box<Peeked<ResponseBody>>),
    Full(Option<Bytes>),
}

impl ResponseBody {
    /// A body produced by the proxy itself (errors, redirects, admin).
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        ResponseBody {
            kind: Kind::Full((!b.is_empty()).then_some(b)),
            done: None,
            _active: None,
            _permit: None,
            _listener: None,
            trace: None,
        }
    }

    pub(crate) fn empty() -> Self {
        ResponseBody {
            kind: Kind::Full(None),
            done: None,
            _active: None,
            _permit: None,
            _listener: None,
            trace: None,
        }
    }

    /// An upstream body; `done` runs once it has been read to the end.
    pub(crate) fn upstream(
        b: Incoming,
        done: Option<Reusable<RequestBody>>,
        active: Option<ActiveGuard>,
    ) -> Self {
        ResponseBody {
            kind: Kind::Upstream(b),
            done,
            _active: active,
            _permit: None,
            _listener: None,
            trace: None,
        }
    }

    /// A body read by the lean HTTP/1 client.
    pub(crate) fn lean(b: client::Body<RequestBody>, active: ActiveGuard) -> Self {
        ResponseBody {
            kind: Kind::Lean(b),
            done: None,
            _active: Some(active),
            _permit: None,
            _listener: None,
            trace: None,
        }
    }

    /// A body read ahead (an upstream body already wrapped).
    pub(crate) fn peeked(body: Peeked<ResponseBody>) -> Self {
        ResponseBody {
            kind: Kind::Peeked(Box::new(body)),
            done: None,
            _active: None,
            _permit: None,
            _listener: None,
            trace: None,
        }
    }

    /// Ends `span` when the body is done (sent, failed or dropped).
    pub(crate) fn with_trace(mut self, span: Box<Pending>) -> Self {
        self.trace = Some(span);
        self
    }

    /// Holds a limit slot until the body is done.
    pub(crate) fn with_permit(mut self, permit: Permit) -> Self {
        self._permit = Some(permit);
        self
    }

    /// Holds the listener's in-flight slot until the body is done.
    pub(crate) fn hold_listener_permit(&mut self, permit: Permit) {
        self._listener = Some(permit);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut frame = ready!(self.as_mut().poll_kind(cx));
        if let Some(Ok(f)) = &mut frame {
            if let Some(t) = f.trailers_mut() {
                strip_trailer_fields(t);
            }
        }
        if self.trace.is_some() {
            match &frame {
                None => self.trace = None,
                Some(Err(_)) => {
                    if let Some(t) = &mut self.trace {
                        t.body_failed();
                    }
                    self.trace = None;
                }
                Some(Ok(_)) => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.kind_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Peeked(b) => b.size_hint(),
            Kind::Upstream(b) => b.size_hint(),
            Kind::Lean(b) => b.size_hint(),
        }
    }
}

impl ResponseBody {
    fn poll_kind(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match &mut this.kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Peeked(b) => Pin::new(&mut **b).poll_frame(cx),
            Kind::Upstream(b) => {
                let frame = ready!(Pin::new(b).poll_frame(cx));
                match &frame {
                    None => {
                        if let Some(done) = this.done.take() {
                            done.reuse();
                        }
                    }
                    Some(Err(_)) => this.done = None,
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Kind::Lean(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(Into::into))),
        }
    }

    fn kind_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Peeked(b) => b.is_end_stream(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Lean(b) => b.is_end_stream(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Bodiless responses (HEAD, 204, 304) are never polled to their end.
        if let (Some(done), Kind::Upstream(b)) = (self.done.take(), &self.kind) {
            if b.is_end_stream() {
                done.reuse();
            }
        }
    }
}
