//! End-to-end timeouts: each one the proxy enforces, measured from the
//! client against real upstreams that hang ([`Faulty`] in `Mode::Hang`) or a
//! real listener that cannot accept.
//!
//! The bounds are loose enough for a loaded 2-core machine, but each test
//! would fail if its timeout were not enforced: the upper bound is well below
//! what the request would take without it (forever, the 1 s default, or the
//! sum of every try).
//!
//! Covered elsewhere: idle upstream connections closed after the pool's idle
//! timeout (`balancing.rs`), the downstream header read timeout (`errors.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;
use weft_tests::{get, Faulty, Mode, Proxy, Resp};

/// Backend `svc` over `endpoints`, with a TrafficPolicy whose spec carries
/// `policy` (YAML lines indented by two spaces), and `route` (an HTTPRoute
/// rule's extra lines, indented by six) when given.
fn config(endpoints: &[SocketAddr], policy: &str, route: Option<&str>) -> String {
    let mut s = String::from(
        "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: svc}
spec:
  endpoints:
",
    );
    for a in endpoints {
        s += &format!("  - {{address: \"{a}\"}}\n");
    }
    s += "---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: svc}
spec:
  targetRef: {kind: Backend, name: svc}
  loadBalancer: {policy: RoundRobin}
  outlierDetection: {consecutiveFailures: 1000}
";
    s += policy;
    if let Some(rule) = route {
        s += "---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: svc}
spec:
  parentRefs: [{name: svc}]
  rules:
    - backendRefs: [{name: svc}]
";
        s += rule;
    }
    s
}

/// One GET to `svc` through the proxy, bounded by 5 s (longer than any
/// timeout under test, so a timeout that is not enforced fails here).
async fn timed_get(p: &Proxy, path: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        get(&p.url(path), &[("host", "svc")]),
    )
    .await
    .expect("the proxy to answer within 5s: timeout not enforced")
    .expect("request through the proxy");
    (r, started.elapsed())
}

fn assert_between(what: &str, took: Duration, min: Duration, max: Duration) {
    assert!(
        took >= min && took < max,
        "{what}: took {took:?}, expected between {min:?} and {max:?}"
    );
}

/// A loopback listener that never accepts and whose accept queue is full, so
/// the kernel drops further SYNs and a connect to it hangs (the same as a
/// blackholed address, without leaving loopback). Returns the listener and
/// the connections filling its queue; both must be kept alive.
fn saturated_listener() -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // std binds with a backlog of 128; this needs 0 (one queued connection).
    let listener = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let listener = std::net::TcpListener::from_raw_fd(fd);
        assert_eq!(
            libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                len
            ),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::listen(fd, 0),
            0,
            "listen: {}",
            std::io::Error::last_os_error()
        );
        listener
    };
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return (listener, fillers);
            }
            Err(e) => panic!("connect to the saturated listener: {e}"),
        }
    }
    panic!(
        "a full accept queue did not block connects here ({} connections queued): \
         this kernel answers SYNs beyond the backlog",
        fillers.len()
    );
}

#[tokio::test]
async fn connect_timeout_is_enforced() {
    let (listener, _fillers) = saturated_listener();
    let p = Proxy::start(config(
        &[listener.local_addr().unwrap()],
        "  connectTimeout: 200ms\n  retry: {attempts: 0}\n",
        None,
    ));
    let (r, took) = timed_get(&p, "/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.header("x-weft-error"),
        Some("connect-timeout"),
        "{}",
        r.text()
    );
    // Not the 1 s default, and certainly not the kernel's minutes of SYN retries.
    assert_between(
        "connect timeout",
        took,
        Duration::from_millis(190),
        Duration::from_millis(800),
    );
    assert!(p.metric("weft_upstream_connects_total", &["error"]).await >= 1.0);
}

#[tokio::test]
async fn a_connect_timeout_is_retried_on_another_endpoint() {
    let (listener, _fillers) = saturated_listener();
    let live = Faulty::start("live").await;
    let p = Proxy::start(config(
        &[listener.local_addr().unwrap(), live.addr],
        "  connectTimeout: 200ms
  retry: {attempts: 1, retryOn: [connect-failure], backoff: {baseInterval: 10ms, maxInterval: 20ms}}
",
        None,
    ));
    // RoundRobin: of two requests, at least one tries the blackhole first.
    let mut slowest = Duration::ZERO;
    for _ in 0..2 {
        let (r, took) = timed_get(&p, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("live"));
        slowest = slowest.max(took);
    }
    assert_between(
        "connect timeout, then a retry",
        slowest,
        Duration::from_millis(190),
        Duration::from_millis(900),
    );
    assert!(p.metric("weft_retries_total", &["result=\"sent\""]).await >= 1.0);
}

#[tokio::test]
async fn request_timeout_answers_504_from_a_hanging_upstream() {
    let hang = Faulty::start("hang").await;
    hang.set(Mode::Hang);
    let p = Proxy::start(config(
        &[hang.addr],
        "  retry: {attempts: 0}\n",
        Some("      timeouts: {request: 300ms}\n"),
    ));
    let (r, took) = timed_get(&p, "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("upstream-timeout"));
    assert_between(
        "request timeout",
        took,
        Duration::from_millis(290),
        Duration::from_secs(2),
    );
    assert_eq!(hang.requests(), 1);
}

/// The request timeout bounds the whole request, retries included: ten
/// retries of 150 ms each would take about 1.8 s without it.
#[tokio::test]
async fn request_timeout_bounds_all_the_retries() {
    let a = Faulty::start("a").await;
    let b = Faulty::start("b").await;
    a.set(Mode::Hang);
    b.set(Mode::Hang);
    let p = Proxy::start(config(
        &[a.addr, b.addr],
        "  retry:
    attempts: 10
    retryOn: [gateway-error]
    perTryTimeout: 150ms
    backoff: {baseInterval: 10ms, maxInterval: 20ms}
    budget: {percent: 100, minRetriesPerSecond: 100}
",
        Some("      timeouts: {request: 300ms}\n"),
    ));
    let (r, took) = timed_get(&p, "/").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("upstream-timeout"));
    assert_between(
        "request timeout over retries",
        took,
        Duration::from_millis(290),
        Duration::from_secs(1),
    );
    let tries = a.requests() + b.requests();
    assert!(
        (2..=3).contains(&tries),
        "{tries} tries in 300 ms of 150 ms each"
    );
    assert!(p.metric("weft_retries_total", &["result=\"sent\""]).await >= 1.0);
}

/// Endpoint `hang` never answers, `live` does: a GET whose first try goes to
/// `hang` is cut after the per-try timeout and retried on `live`.
async fn per_try_timeout_retries_elsewhere(policy: &str, route: Option<&str>) {
    let hang = Faulty::start("hang").await;
    let live = Faulty::start("live").await;
    hang.set(Mode::Hang);
    let p = Proxy::start(config(&[hang.addr, live.addr], policy, route));
    // RoundRobin: of two requests, at least one tries `hang` first.
    let mut cut = None;
    for _ in 0..2 {
        let before = hang.requests();
        let (r, took) = timed_get(&p, "/").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-upstream"), Some("live"));
        if hang.requests() > before {
            cut = Some(took);
        }
    }
    let took = cut.expect("a request tried the hanging endpoint");
    assert_between(
        "a per-try timeout, then a retry",
        took,
        Duration::from_millis(190),
        Duration::from_secs(1),
    );
    assert!(p.metric("weft_retries_total", &["result=\"sent\""]).await >= 1.0);
    assert!(
        p.metric("weft_retries_total", &["result=\"succeeded\""])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn per_try_timeout_cuts_a_try_and_the_retry_succeeds() {
    per_try_timeout_retries_elsewhere(
        "  retry:
    attempts: 2
    retryOn: [gateway-error]
    perTryTimeout: 200ms
    backoff: {baseInterval: 10ms, maxInterval: 50ms}
",
        None,
    )
    .await;
}

#[tokio::test]
async fn route_backend_request_timeout_is_a_per_try_timeout() {
    per_try_timeout_retries_elsewhere(
        "  retry:
    attempts: 2
    retryOn: [gateway-error]
    backoff: {baseInterval: 10ms, maxInterval: 50ms}
",
        Some("      timeouts: {request: 3s, backendRequest: 200ms}\n"),
    )
    .await;
}
