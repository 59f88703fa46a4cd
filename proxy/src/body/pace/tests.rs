//! The pace rules on a paused clock (a test module).

use super::*;
use http_body_util::BodyExt as _;
use std::convert::Infallible;
use tokio::sync::mpsc;

/// A body fed through a channel; it ends when the sender is dropped.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

const PACE: Pace = Pace {
    idle_ms: 60_000,
    min_rate: 16,
    window_ms: 10_000,
};

/// Sends `piece` every `every`, `times` times, then ends; how the body
/// fared when read, and when.
async fn feed(
    piece: &'static [u8],
    every: Duration,
    times: usize,
    pace: Pace,
) -> (Result<u64, PaceError>, Duration) {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..times {
            tokio::time::sleep(every).await;
            if tx.send(Bytes::from_static(piece)).await.is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let mut body = Paced::new(Fed(rx), pace);
    let mut n = 0;
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => n += f.into_data().map(|d| d.len() as u64).unwrap_or(0),
            Err(e) => {
                let e = *e.downcast::<PaceError>().expect("a pace error");
                return (Err(e), start.elapsed());
            }
        }
    }
    (Ok(n), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_body_dripped_a_byte_a_second_is_cut_off() {
    let (got, at) = feed(b"x", Duration::from_secs(1), 600, PACE).await;
    assert!(matches!(got, Err(PaceError::TooSlow { .. })), "{got:?}");
    assert!(at <= Duration::from_secs(21), "cut at {at:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_keeps_sending_is_left_alone() {
    // A 50-byte message a second for ten minutes.
    let (got, _) = feed(&[b'm'; 50], Duration::from_secs(1), 600, PACE).await;
    assert_eq!(got, Ok(30_000));
    // A message now and then, with pauses shorter than the idle limit.
    let (got, _) = feed(&[b'm'; 20], Duration::from_secs(45), 20, PACE).await;
    assert_eq!(got, Ok(400));
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_cut_off_at_the_idle_limit() {
    let (got, at) = feed(b"x", Duration::from_secs(61), 2, PACE).await;
    assert_eq!(got, Err(PaceError::Idle(Duration::from_secs(60))));
    assert_eq!(at.as_secs(), 60, "{at:?}");
}

#[tokio::test(start_paused = true)]
async fn rules_off_cut_nothing() {
    let (got, _) = feed(b"x", Duration::from_secs(100), 3, Pace::OFF).await;
    assert_eq!(got, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_waits_keeps_no_state() {
    let (tx, rx) = mpsc::channel(4);
    tx.send(Bytes::from_static(b"abc")).await.unwrap();
    drop(tx);
    let mut body = Paced::new(Fed(rx), PACE);
    while body.frame().await.is_some() {}
    assert!(matches!(body.state, State::Rules(_)));
}
