//! One try under its deadlines: the per-try timeout and what is left of the
//! request's, whichever ends first, answered as the right 504.

use crate::http::errors::ProxyError;
use std::time::Duration;
use tokio::time::Instant;

/// Runs one try within the per-try timeout and what is left of the request's.
/// A plain future rather than an `async fn`, so the (large) try future is
/// stored once and not copied into a second slot.
pub(crate) fn within<T, E: From<ProxyError>, F: std::future::Future<Output = Result<T, E>>>(
    deadline: Option<Instant>,
    per_try: Option<Duration>,
    request_timeout: Option<Duration>,
    fut: F,
) -> Within<F> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let limit = match (left, per_try) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Which budget runs out decides what the client is told.
    let error = match limit {
        Some(l) if left == Some(l) => request_timeout.unwrap_or(l),
        Some(l) => l,
        None => Duration::ZERO,
    };
    Within {
        fut,
        sleep: limit.map(tokio::time::sleep),
        error,
    }
}

pin_project_lite::pin_project! {
    /// See [`within`].
    pub(crate) struct Within<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        error: Duration,
    }
}

impl<T, E: From<ProxyError>, F: std::future::Future<Output = Result<T, E>>> std::future::Future
    for Within<F>
{
    type Output = Result<T, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(r) = this.fut.poll(cx) {
            return std::task::Poll::Ready(r);
        }
        let expired = this
            .sleep
            .as_pin_mut()
            .is_some_and(|s| s.poll(cx).is_ready());
        match expired {
            true => std::task::Poll::Ready(Err(ProxyError::Timeout(*this.error).into())),
            false => std::task::Poll::Pending,
        }
    }
}
