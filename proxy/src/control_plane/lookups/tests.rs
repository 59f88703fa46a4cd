//! A want waits for its own answer, and one sent on a watch that dies is
//! answered by the next watch's hello (paused clock: a wait that ran out
//! shows as exactly `DISCOVERY_WAIT`).

use super::*;
use std::sync::Arc;
use tokio::time::Instant;

fn hello(names: Vec<String>) -> Bytes {
    api::line(&WatchUp::Hello(api::Hello {
        name: "p".into(),
        service: None,
        version: None,
        wants: names,
    }))
}

fn parse(line: Bytes) -> WatchUp {
    serde_json::from_slice(line.trim_ascii()).unwrap()
}

/// A new watch: its upward channel's receiving end, past the hello.
async fn watch(lookups: &Lookups) -> (mpsc::Receiver<Bytes>, Vec<String>) {
    let (tx, mut rx) = mpsc::channel(8);
    assert!(lookups.attach(tx, hello));
    let WatchUp::Hello(h) = parse(rx.recv().await.unwrap()) else {
        panic!("the hello comes first");
    };
    (rx, h.wants)
}

#[tokio::test(start_paused = true)]
async fn a_want_is_answered_by_its_own_answer_not_the_hellos() {
    let lookups = Arc::new(Lookups::default());
    let (mut rx, wants) = watch(&lookups).await;
    assert!(wants.is_empty());
    let started = Instant::now();
    let ask = tokio::spawn({
        let l = lookups.clone();
        async move { l.ask("reviews.shop").await }
    });
    assert!(
        matches!(parse(rx.recv().await.unwrap()), WatchUp::Want { names } if names == ["reviews.shop"])
    );
    lookups.answered(); // the hello's answer
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!ask.is_finished(), "woken by the hello's answer");
    lookups.answered(); // the want's
    assert!(ask.await.unwrap());
    assert!(started.elapsed() < DISCOVERY_WAIT);
    // Asked already: false at once.
    assert!(!lookups.ask("reviews.shop").await);
}

#[tokio::test(start_paused = true)]
async fn a_want_lost_with_its_watch_is_answered_by_the_next_hello() {
    let lookups = Arc::new(Lookups::default());
    let (mut rx, _) = watch(&lookups).await;
    lookups.answered();
    let started = Instant::now();
    let ask = tokio::spawn({
        let l = lookups.clone();
        async move { l.ask("ratings.shop").await }
    });
    rx.recv().await.unwrap();
    drop(rx); // the replica died: no answer will come on that watch
    let (_rx, wants) = watch(&lookups).await;
    assert_eq!(wants, ["ratings.shop"], "the new hello names it");
    lookups.answered();
    assert!(ask.await.unwrap());
    assert!(started.elapsed() < DISCOVERY_WAIT);
}

#[tokio::test(start_paused = true)]
async fn with_no_watch_a_want_waits_for_one_then_gives_up_in_time() {
    let lookups = Lookups::default();
    let started = Instant::now();
    assert!(lookups.ask("details.shop").await);
    assert_eq!(started.elapsed(), DISCOVERY_WAIT);
    let (_rx, wants) = watch(&lookups).await;
    assert_eq!(wants, ["details.shop"]);
}

#[tokio::test(start_paused = true)]
async fn many_wants_at_once_each_wait_for_their_answers() {
    let lookups = Arc::new(Lookups::default());
    let (tx, mut rx) = mpsc::channel(64);
    assert!(lookups.attach(tx, hello));
    rx.recv().await.unwrap();
    let started = Instant::now();
    let asks: Vec<_> = (0..20)
        .map(|i| {
            let l = lookups.clone();
            tokio::spawn(async move { l.ask(&format!("svc-{i}.shop")).await })
        })
        .collect();
    for _ in 0..20 {
        assert!(matches!(
            parse(rx.recv().await.unwrap()),
            WatchUp::Want { .. }
        ));
    }
    // The hello's answer and 19 of the 20 wants': one is still waiting.
    for _ in 0..20 {
        lookups.answered();
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(asks.iter().filter(|a| a.is_finished()).count(), 19);
    lookups.answered();
    for a in asks {
        assert!(a.await.unwrap());
    }
    assert!(started.elapsed() < DISCOVERY_WAIT);
}

#[tokio::test(start_paused = true)]
async fn addresses_cannot_crowd_out_names() {
    let l = Lookups::default();
    // No watch open: each ask waits its time, the want is kept for the
    // next hello.
    for i in 0..MAX_ADDRESS_WANTS + 5 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
        l.ask(&format!("{ip}:80")).await;
    }
    l.ask("reviews.shop").await;
    let (_rx, wanted) = watch(&l).await;
    assert_eq!(wanted.len(), MAX_ADDRESS_WANTS + 1);
    assert!(wanted.contains(&"reviews.shop".to_string()));
    assert!(wanted.contains(&"10.0.0.0:80".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_second_ask_waits_for_the_answer_to_the_first() {
    let l = Arc::new(Lookups::default());
    let (mut rx, _) = watch(&l).await;
    l.answered(); // the hello's answer
    let started = Instant::now();
    let first = tokio::spawn({
        let l = l.clone();
        async move { l.ask("10.96.0.1:80").await }
    });
    // The want went up; a second ask for it waits rather than failing.
    assert!(
        matches!(parse(rx.recv().await.unwrap()), WatchUp::Want { names } if names == ["10.96.0.1:80"])
    );
    let second = tokio::spawn({
        let l = l.clone();
        async move { l.ask("10.96.0.1:80").await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished());
    l.answered();
    assert!(first.await.unwrap());
    assert!(second.await.unwrap());
    assert!(started.elapsed() < DISCOVERY_WAIT);
    // Answered: asking again is false at once, and sends nothing.
    assert!(!l.ask("10.96.0.1:80").await);
    assert!(rx.try_recv().is_err());
}
