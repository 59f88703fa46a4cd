//! The client's request body with its pace watched, so a client cannot
//! hold a connection, a request slot and an upstream connection by sending
//! a body slowly (slowloris on the body):
//! - **idle**: no body bytes for `idle` ends the body with an error;
//! - **minimum rate**: each `window`, the bytes that came must reach
//!   `min_rate` per second over the time they were coming in (from the
//!   window's first byte to its last). A pause does not count against the
//!   rate (that is the idle timeout's business), so a long-lived stream
//!   that sends a message now and then is left alone, while a body dripped
//!   a byte at a time is cut off.
//!
//! Either ends the body with a [`PaceError`], which the request path turns
//! into 408 `request-body-timeout`. A body that is whole when first read
//! costs nothing: the timer and the counters are made the first time the
//! body has to wait.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The rules, from the listener's settings. Kept small (every request
/// carries a copy): whole milliseconds and bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pace {
    /// Longest wait for the next body bytes, in ms (0: no limit).
    idle_ms: u32,
    /// Least bytes per second while bytes are coming (0: no minimum).
    min_rate: u32,
    /// How often the rate is judged, in ms.
    window_ms: u32,
}

impl Pace {
    pub(crate) fn new(idle: Option<Duration>, min_rate: u64, window: Duration) -> Pace {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        Pace {
            idle_ms: idle.map_or(0, ms),
            min_rate: min_rate.min(u64::from(u32::MAX)) as u32,
            window_ms: ms(window).max(1),
        }
    }

    fn idle(self) -> Option<Duration> {
        (self.idle_ms > 0).then(|| Duration::from_millis(u64::from(self.idle_ms)))
    }

    fn window(self) -> Duration {
        Duration::from_millis(u64::from(self.window_ms))
    }
}

#[cfg(test)]
impl Pace {
    /// No rule at all.
    pub(crate) const OFF: Pace = Pace {
        idle_ms: 0,
        min_rate: 0,
        window_ms: 10_000,
    };
}

/// Why a body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaceError {
    Idle(Duration),
    TooSlow { bytes: u64, over: Duration },
}

impl std::fmt::Display for PaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaceError::Idle(d) => write!(f, "the request body stalled for {d:?}"),
            PaceError::TooSlow { bytes, over } => {
                write!(
                    f,
                    "the request body came too slowly ({bytes} bytes in {over:?})"
                )
            }
        }
    }
}

impl std::error::Error for PaceError {}

/// What is kept once the body has had to wait.
struct Watch {
    pace: Pace,
    /// Only with an idle limit.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the idle timeout runs out (the timer may be set earlier; it is
    /// moved only when it fires).
    idle_deadline: Instant,
    window_start: Instant,
    first: Option<Instant>,
    last: Instant,
    bytes: u64,
}

/// The client's body, watched.
pub(crate) struct Paced<B = Incoming> {
    inner: B,
    state: State,
}

/// The rules alone until the body first waits; then the watch, which holds
/// them. (One field, so a request carries no more than it must.)
enum State {
    Rules(Pace),
    Watching(Box<Watch>),
}

impl<B> Paced<B> {
    pub(crate) fn new(inner: B, pace: Pace) -> Paced<B> {
        Paced {
            inner,
            state: State::Rules(pace),
        }
    }

    fn on_data(&mut self, n: usize) -> Result<(), PaceError> {
        let State::Watching(w) = &mut self.state else {
            return Ok(());
        };
        let pace = w.pace;
        let now = Instant::now();
        if let Some(idle) = pace.idle() {
            w.idle_deadline = now + idle;
        }
        if pace.min_rate > 0 && now.duration_since(w.window_start) >= pace.window() {
            // Judge the window that just closed, then start the next.
            if let Some(first) = w.first {
                let over = w.last.duration_since(first);
                let need = u64::from(pace.min_rate).saturating_mul(over.as_millis() as u64) / 1000;
                if w.bytes < need {
                    return Err(PaceError::TooSlow {
                        bytes: w.bytes,
                        over,
                    });
                }
            }
            w.window_start = now;
            w.first = None;
            w.bytes = 0;
        }
        w.first.get_or_insert(now);
        w.last = now;
        w.bytes += n as u64;
        Ok(())
    }

    /// The body has to wait: is the wait over its limit?
    fn on_pending(&mut self, cx: &mut Context<'_>) -> Result<(), PaceError> {
        if let State::Rules(pace) = self.state {
            if pace.idle_ms == 0 && pace.min_rate == 0 {
                return Ok(());
            }
            self.state = State::Watching(Box::new(Watch::new(pace)));
        }
        let State::Watching(w) = &mut self.state else {
            return Ok(());
        };
        let pace = w.pace;
        let (Some(idle), Some(timer)) = (pace.idle(), w.timer.as_mut()) else {
            return Ok(());
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            if Instant::now() >= w.idle_deadline {
                return Err(PaceError::Idle(idle));
            }
            // Bytes came since the timer was set: wait on to the new deadline.
            timer.as_mut().reset(w.idle_deadline);
        }
    }
}

impl Watch {
    fn new(pace: Pace) -> Watch {
        let now = Instant::now();
        let deadline = now + pace.idle().unwrap_or_default();
        Watch {
            pace,
            timer: pace
                .idle()
                .map(|_| Box::pin(tokio::time::sleep_until(deadline))),
            idle_deadline: deadline,
            window_start: now,
            first: None,
            last: now,
            bytes: 0,
        }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<super::BoxError>,
{
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if let Err(e) = this.on_data(d.len()) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.on_pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Some(Err(e.into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
