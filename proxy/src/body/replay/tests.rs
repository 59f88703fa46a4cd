//! The replay body: copies send the same bytes whatever point the earlier
//! try reached, never more than the cap is kept, and a copy that needs the
//! client's body waits for the try that holds it.
//! (This file is the #[cfg(test)] mod tests of `replay.rs`.)

use super::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

/// A client body that gives its steps one poll at a time.
enum Step {
    Data(&'static str),
    Pending,
    Trailers,
    Fail,
}

struct Script(VecDeque<Step>, SizeHint);

fn script(steps: Vec<Step>) -> Script {
    let n: u64 = steps
        .iter()
        .map(|s| match s {
            Step::Data(d) => d.len() as u64,
            _ => 0,
        })
        .sum();
    Script(steps.into(), SizeHint::with_exact(n))
}

impl Body for Script {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.pop_front() {
            None => Poll::Ready(None),
            Some(Step::Data(d)) => {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(d.as_bytes())))))
            }
            Some(Step::Pending) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Some(Step::Trailers) => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", "0".parse().unwrap());
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            Some(Step::Fail) => Poll::Ready(Some(Err(std::io::Error::other("client went away")))),
        }
    }
    fn size_hint(&self) -> SizeHint {
        self.1
    }
}

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one poll gave: data, trailers, the end, an error, or nothing yet.
#[derive(Debug, PartialEq)]
enum Got {
    Data(String),
    Trailers,
    End,
    Error,
    Pending,
}

fn poll(b: &mut ReplayBody<Script>, waker: &Waker) -> Got {
    let mut cx = Context::from_waker(waker);
    match Pin::new(b).poll_frame(&mut cx) {
        Poll::Pending => Got::Pending,
        Poll::Ready(None) => Got::End,
        Poll::Ready(Some(Err(_))) => Got::Error,
        Poll::Ready(Some(Ok(f))) => match f.into_data() {
            Ok(d) => Got::Data(String::from_utf8(d.to_vec()).unwrap()),
            Err(_) => Got::Trailers,
        },
    }
}

/// Polls to the end (or an error), skipping `Pending`s that the source
/// itself produces; returns what was read.
fn drain(b: &mut ReplayBody<Script>) -> Vec<Got> {
    let mut out = Vec::new();
    for _ in 0..100 {
        match poll(b, Waker::noop()) {
            Got::Pending => continue,
            g @ (Got::End | Got::Error) => {
                out.push(g);
                return out;
            }
            g => out.push(g),
        }
    }
    panic!("did not end: {out:?}");
}

fn data(parts: &[&str]) -> Vec<Got> {
    parts.iter().map(|p| Got::Data(p.to_string())).collect()
}

fn new(steps: Vec<Step>, cap: u64) -> (ReplayBody<Script>, Replay<Script>) {
    ReplayBody::new(script(steps), cap)
}

#[test]
fn a_copy_sends_what_the_first_try_sent() {
    let (mut first, replay) = new(
        vec![
            Step::Data("ab"),
            Step::Pending,
            Step::Data("cd"),
            Step::Trailers,
        ],
        64,
    );
    assert_eq!(first.size_hint().exact(), Some(4));
    let mut want = data(&["ab", "cd"]);
    want.extend([Got::Trailers, Got::End]);
    assert_eq!(drain(&mut first), want);
    assert!(first.is_end_stream());
    let mut second = replay.copy().unwrap();
    assert!(!second.is_end_stream());
    assert_eq!(drain(&mut second), want);
    assert!(second.is_end_stream());
    assert_eq!(drain(&mut replay.copy().unwrap()), want);
}

#[test]
fn a_copy_reads_on_where_an_earlier_try_stopped() {
    let (mut first, replay) = new(vec![Step::Data("a"), Step::Data("b"), Step::Data("c")], 64);
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("a".into()));
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("b".into()));
    let mut second = replay.copy().unwrap();
    let mut want = data(&["a", "b", "c"]);
    want.push(Got::End);
    assert_eq!(drain(&mut second), want);
    assert_eq!(drain(&mut replay.copy().unwrap()), want);
}

#[test]
fn an_earlier_copy_stands_down_once_a_newer_one_exists() {
    let (mut first, replay) = new(vec![Step::Data("a"), Step::Data("b")], 64);
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("a".into()));
    let mut second = replay.copy().unwrap();
    // The abandoned try's connection polls on: it ends, reading nothing.
    assert_eq!(poll(&mut first, Waker::noop()), Got::Error);
    assert_eq!(poll(&mut first, Waker::noop()), Got::End);
    assert!(first.is_end_stream());
    let mut want = data(&["a", "b"]);
    want.push(Got::End);
    assert_eq!(drain(&mut second), want);
}

#[test]
fn a_copy_that_finds_the_body_out_waits_and_is_woken() {
    let (mut first, replay) = new(vec![Step::Data("a")], 64);
    let mut second = replay.copy().unwrap();
    // As if another copy's poll had the client's body out at this moment.
    let out = lock(&first.shared).source.take();
    let woken = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(woken.clone());
    assert_eq!(poll(&mut second, &waker), Got::Pending);
    assert_eq!(woken.0.load(Ordering::Relaxed), 0);
    lock(&first.shared).put_back(out.unwrap());
    assert_eq!(
        woken.0.load(Ordering::Relaxed),
        1,
        "woken when the body came back"
    );
    // The superseded first copy reads nothing; the waiting one reads on.
    assert_eq!(poll(&mut first, Waker::noop()), Got::Error);
    assert_eq!(poll(&mut second, &waker), Got::Data("a".into()));
    assert_eq!(poll(&mut second, &waker), Got::End);
}

#[test]
fn trailers_an_earlier_try_read_are_sent_by_a_retry() {
    let (mut first, replay) = new(vec![Step::Data("a"), Step::Trailers], 64);
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("a".into()));
    assert_eq!(poll(&mut first, Waker::noop()), Got::Trailers);
    // The first try's connection stops there (HTTP/2 does after trailers).
    drop(first);
    let mut second = replay.copy().unwrap();
    assert_eq!(
        drain(&mut second),
        vec![Got::Data("a".into()), Got::Trailers, Got::End]
    );
}

#[test]
fn past_the_cap_the_reading_copy_sends_everything_and_no_copy_is_made() {
    let (mut first, replay) = new(
        vec![Step::Data("abc"), Step::Data("def"), Step::Data("g")],
        5,
    );
    assert!(replay.available());
    let mut want = data(&["abc", "def", "g"]);
    want.push(Got::End);
    assert_eq!(drain(&mut first), want);
    assert!(!replay.available());
    assert!(replay.copy().is_none());
    assert!(lock(&first.shared).chunks.is_empty());
}

#[test]
fn a_retry_that_passes_the_cap_still_sends_everything() {
    let (mut first, replay) = new(vec![Step::Data("abc"), Step::Data("def")], 4);
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("abc".into()));
    let mut second = replay.copy().unwrap();
    let mut want = data(&["abc", "def"]);
    want.push(Got::End);
    assert_eq!(drain(&mut second), want);
    assert!(replay.copy().is_none());
}

#[test]
fn a_failed_body_cannot_be_sent_again() {
    let (mut first, replay) = new(vec![Step::Data("a"), Step::Fail], 64);
    assert_eq!(poll(&mut first, Waker::noop()), Got::Data("a".into()));
    assert_eq!(poll(&mut first, Waker::noop()), Got::Error);
    assert!(!replay.available());
    assert!(replay.copy().is_none());
}
