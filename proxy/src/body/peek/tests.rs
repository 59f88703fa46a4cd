//! Reading ahead hands on every frame, in order, errors included.
//! (This file is the #[cfg(test)] mod tests of `peek.rs`.)

use super::*;
use http_body_util::BodyExt;

/// A body of scripted frames.
struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = &'static str;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        Poll::Ready(self.0.pop_front())
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn data(s: &'static str) -> Result<Frame<Bytes>, &'static str> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

fn trailers(status: &'static str) -> Result<Frame<Bytes>, &'static str> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", status.parse().unwrap());
    Ok(Frame::trailers(t))
}

/// Everything the client would read: data joined, trailers' status, error.
async fn read_all<B: Body<Data = Bytes> + Unpin>(mut b: B) -> (String, Option<String>, bool)
where
    B::Error: std::fmt::Debug,
{
    let mut body = String::new();
    let mut status = None;
    while let Some(f) = b.frame().await {
        match f {
            Ok(f) => match f.into_data() {
                Ok(d) => body.push_str(std::str::from_utf8(&d).unwrap()),
                Err(f) => {
                    status = f
                        .trailers_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .map(|v| v.to_str().unwrap().to_owned())
                }
            },
            Err(_) => return (body, status, true),
        }
    }
    (body, status, false)
}

#[tokio::test]
async fn trailers_are_seen_and_everything_is_handed_on() {
    let b = Frames(vec![data("ab"), data("cd"), trailers("14")].into());
    let (peeked, t) = Peeked::read(b, 1024).await;
    assert_eq!(t.unwrap()["grpc-status"], "14");
    assert_eq!(peeked.size_hint().lower(), 4);
    assert_eq!(
        read_all(peeked).await,
        ("abcd".into(), Some("14".into()), false)
    );
}

#[tokio::test]
async fn reading_stops_past_the_cap_and_the_rest_follows() {
    let b = Frames(vec![data("abc"), data("def"), data("ghi"), trailers("0")].into());
    let (peeked, t) = Peeked::read(b, 4).await;
    assert!(t.is_none(), "the trailers lie past the cap");
    assert_eq!(peeked.frames.len(), 2);
    assert_eq!(
        read_all(peeked).await,
        ("abcdefghi".into(), Some("0".into()), false)
    );
}

#[tokio::test]
async fn an_upstream_error_reaches_the_client_in_its_place() {
    let b = Frames(vec![data("ab"), Err("reset"), data("never")].into());
    let (peeked, t) = Peeked::read(b, 1024).await;
    assert!(t.is_none());
    let (body, _, failed) = read_all(peeked).await;
    assert_eq!(body, "ab");
    assert!(failed, "a broken body must not look complete");
}

#[tokio::test]
async fn an_empty_body_stays_empty() {
    let (peeked, t) = Peeked::read(Frames(VecDeque::new()), 1024).await;
    assert!(t.is_none());
    assert!(peeked.is_end_stream());
}
