//! Response bodies of both endpoints (API and admin): whole, or a stream of
//! lines, with helpers for text and JSON answers.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use weft_mesh::api::LineStream;

/// Largest message read from a caller: a certificate request, a watch line.
pub(crate) const MAX_MESSAGE: usize = 256 * 1024;

/// A response body: whole, or lines pushed through a channel (the watch).
pub(crate) enum CpBody {
    Full(Option<Bytes>),
    Stream(LineStream),
}

impl Body for CpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            CpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            CpBody::Stream(lines) => Pin::new(lines).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, CpBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            CpBody::Stream(_) => SizeHint::default(),
        }
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response<CpBody> {
    let mut r = Response::new(CpBody::Full(Some(Bytes::from(body.into()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<CpBody> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(CpBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
