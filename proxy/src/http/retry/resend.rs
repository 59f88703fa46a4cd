//! The request as the retry loop keeps it: its head, and its body in the
//! form the policy needs — sent once as it arrives, or through a
//! [`ReplayBody`] that keeps a copy (up to the policy's cap) so the
//! request can be sent again after an upstream has read it.

use crate::body::pace::Paced;
use crate::body::replay::{Replay, ReplayBody};
use crate::body::RequestBody;
use http::Request;
use http_body::Body as _;

/// A request that may be sent more than once.
pub(super) struct Resend {
    /// A request a try handed back unsent.
    pending: Option<Request<RequestBody>>,
    /// What a copy is made from, when the policy needs copies.
    copy: Option<(http::request::Parts, Kept)>,
    bodiless: bool,
}

enum Kept {
    /// No body: a copy is the head alone.
    Nothing,
    /// The body's kept copy: each retry gets a copy that replays it.
    Replay(Replay<Paced>),
    /// The body goes once, as it arrives (too large, or of unknown size,
    /// to keep): no copy can be made.
    Once,
}

impl Resend {
    /// Keeps what retries of `req` need, and gives back the request for
    /// the first try. With `keep_copy` (the policy may resend a request an
    /// upstream already read), copies can be made: of the head, and of a
    /// body of known size up to `cap`, kept as it streams. Without it, only
    /// a request that comes back unsent can go again.
    #[inline(always)]
    pub(super) fn new(
        req: Request<RequestBody>,
        keep_copy: bool,
        cap: u64,
    ) -> (Request<RequestBody>, Resend) {
        let bodiless = req.body().is_end_stream();
        if !keep_copy {
            let resend = Resend {
                pending: None,
                copy: None,
                bodiless,
            };
            return (req, resend);
        }
        let (parts, body) = req.into_parts();
        let (kept, first) = match body {
            _ if bodiless => (Kept::Nothing, RequestBody::Empty),
            RequestBody::Incoming(b) if b.size_hint().exact().is_some_and(|n| n <= cap) => {
                let (first, replay) = ReplayBody::new(b, cap);
                (Kept::Replay(replay), RequestBody::Replay(Box::new(first)))
            }
            other => (Kept::Once, other),
        };
        let resend = Resend {
            pending: None,
            copy: Some((clone_head(&parts), kept)),
            bodiless,
        };
        (Request::from_parts(parts, first), resend)
    }

    /// The request has no body.
    pub(super) fn bodiless(&self) -> bool {
        self.bodiless
    }

    /// The next try's request: one handed back unsent, else a copy, if one
    /// can be made.
    pub(super) fn next(&mut self) -> Option<Request<RequestBody>> {
        if let Some(r) = self.pending.take() {
            return Some(r);
        }
        let (head, kept) = self.copy.as_ref()?;
        let body = match kept {
            Kept::Nothing => RequestBody::Empty,
            Kept::Replay(b) => RequestBody::Replay(Box::new(b.copy()?)),
            Kept::Once => return None,
        };
        Some(Request::from_parts(clone_head(head), body))
    }

    /// A try handed its request back unsent: it goes next.
    pub(super) fn unsent(&mut self, req: Request<RequestBody>) {
        self.pending = Some(req);
    }

    /// Whether a copy can be made without cutting short a try that is
    /// still sending the body (a hedge runs beside the try it copies).
    pub(super) fn whole(&self) -> bool {
        match &self.copy {
            Some((_, Kept::Nothing)) => true,
            Some((_, Kept::Replay(b))) => b.whole(),
            _ => false,
        }
    }

    /// Whether a next try would have a request to send.
    pub(super) fn resendable(&self) -> bool {
        self.pending.is_some()
            || match &self.copy {
                None => false,
                Some((_, Kept::Nothing)) => true,
                Some((_, Kept::Replay(b))) => b.available(),
                Some((_, Kept::Once)) => false,
            }
    }
}

/// A copy of a request head (extensions are not carried: nothing on the
/// way upstream reads them).
fn clone_head(p: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = p.method.clone();
    *r.uri_mut() = p.uri.clone();
    *r.version_mut() = p.version;
    *r.headers_mut() = p.headers.clone();
    r.into_parts().0
}
