//! SIGTERM: stop accepting, let in-flight requests finish, exit 0.

use std::time::Duration;
use weft_tests::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let a = Upstream::start("a").await;
    let mut p = Proxy::start(format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec:\n  endpoints: [{{address: {}}}]\n",
        a.addr
    ));
    let url = p.url("/delay/800");
    let in_flight = tokio::spawn(async move { get(&url, &[("host", "a")]).await });
    // The request has reached the upstream before we signal.
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || async { (a.requests() == 1).then_some(()) },
    )
    .await;
    p.signal(libc::SIGTERM);
    let outbound = p.outbound;
    eventually("the listener to close", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(outbound)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let r = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "a delayed 800ms\n");
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn grace_period_bounds_shutdown() {
    let a = Upstream::start("a").await;
    let mut p = Proxy::builder(format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec:\n  endpoints: [{{address: {}}}]\n",
        a.addr
    ))
    .arg("--shutdown-grace")
    .arg("300ms")
    .start();
    let url = p.url("/delay/30000");
    let _stuck = tokio::spawn(async move { get(&url, &[("host", "a")]).await });
    eventually(
        "the slow request to reach the upstream",
        Duration::from_secs(5),
        || async { (a.requests() == 1).then_some(()) },
    )
    .await;
    p.signal(libc::SIGTERM);
    let started = std::time::Instant::now();
    let code = tokio::task::spawn_blocking(move || p.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
