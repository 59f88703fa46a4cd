//! A flaky backend made invisible, a dead one made cheap: retries, the
//! retry budget, outlier ejection and concurrency limits, end to end with
//! upstreams that fail on command.

use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weft_tests::*;

fn backend(name: &str, eps: &[std::net::SocketAddr], policy: &str) -> String {
    let list: Vec<String> = eps
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{}]\n---\n",
        list.join(", ")
    );
    if !policy.is_empty() {
        y.push_str(&format!(
            "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}---\n"
        ));
    }
    y
}

fn req(method: &str, host: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri("/")
        .header("host", host)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

/// A port nothing listens on.
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_endpoints_under_load_loses_no_request() {
    let ups = [
        Faulty::start("a").await,
        Faulty::start("b").await,
        Faulty::start("c").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    // GETs are idempotent: retrying resets and gateway errors is safe for them.
    let policy = "  retry: {attempts: 3, retryOn: [connect-failure, refused-stream, reset, gateway-error]}\n  outlierDetection: {consecutiveFailures: 5, baseEjectionTime: 30s}\n";
    let p = Proxy::start(backend("svc", &addrs, policy));
    let outbound = p.outbound;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let done = done.clone();
        clients.spawn(async move {
            let mut conn = Conn::open(outbound).await.expect("connect to proxy");
            let mut failures = Vec::new();
            for _ in 0..25 {
                match conn.send(req("GET", "svc", b"")).await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text().trim())),
                    Err(e) => failures.push(e.to_string()),
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            failures
        });
    }
    // Kill b once load is flowing: it goes down with requests in flight.
    eventually("load to be flowing", Duration::from_secs(20), || async {
        (done.load(std::sync::atomic::Ordering::Relaxed) >= 1000).then_some(())
    })
    .await;
    let before_kill = ups[1].requests();
    ups[1].kill();
    let mut failures = Vec::new();
    while let Some(r) = clients.join_next().await {
        failures.extend(r.unwrap());
    }
    assert_eq!(done.load(std::sync::atomic::Ordering::Relaxed), 5000);
    assert!(
        failures.is_empty(),
        "{} client-visible errors, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(before_kill > 100, "b served traffic before it died");
    assert!(
        p.metric("weft_retries_total", &["result=\"sent\""]).await >= 1.0,
        "the kill was hidden by retries"
    );
    assert!(
        p.metric("weft_ejections_total", &[]).await >= 1.0,
        "the dead endpoint was ejected"
    );
}

#[tokio::test]
async fn failing_endpoint_is_ejected_within_five_failures_and_returns() {
    let ups = [
        Faulty::start("a").await,
        Faulty::start("b").await,
        Faulty::start("c").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let policy = "  loadBalancer: {policy: RoundRobin}\n  outlierDetection: {consecutiveFailures: 5, baseEjectionTime: 400ms}\n";
    let p = Proxy::start(backend("svc", &addrs, policy));
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for _ in 0..30 {
        assert_eq!(conn.send(req("GET", "svc", b"")).await.unwrap().status, 200);
    }
    ups[1].set(Mode::Status(503, None));
    let at_failure = ups[1].requests();
    for _ in 0..60 {
        conn.send(req("GET", "svc", b"")).await.unwrap();
    }
    let failed = ups[1].requests() - at_failure;
    assert_eq!(
        failed, 5,
        "ejected after exactly 5 consecutive failures, saw {failed}"
    );
    let (_, eps) = p.admin_get("/endpoints").await;
    let v: serde_json::Value = serde_json::from_str(&eps).unwrap();
    let b = v["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == ups[1].addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(b["ejection"], "ejected", "{b}");
    assert!(b["ejectionRemainingSeconds"].as_f64().unwrap() > 0.0);
    // It recovers; after the ejection ends, one probe is let through and restores it.
    ups[1].set(Mode::Ok);
    let back = ups[1].requests();
    let url = p.url("/");
    eventually(
        "the recovered endpoint to get traffic again",
        Duration::from_secs(5),
        || {
            let url = url.clone();
            let served = ups[1].requests();
            async move {
                let r = get(&url, &[("host", "svc")]).await.ok()?;
                assert_eq!(r.status, 200);
                (served > back + 2).then_some(())
            }
        },
    )
    .await;
    assert!(
        p.logs().contains("back in the balancer"),
        "restoration logged"
    );
}

#[tokio::test]
async fn post_is_not_retried_on_503_but_is_on_connect_failure() {
    let bad = Faulty::start("bad").await;
    bad.set(Mode::Status(503, None));
    // Status retries opted in: they still never apply to a POST by default.
    let policy = "  retry: {attempts: 2, retryOn: [connect-failure, refused-stream, 5xx], backoff: {baseInterval: 1ms, maxInterval: 5ms}}\n";
    let good = Faulty::start("good").await;
    let dead = closed_addr();
    let mut yaml = backend("flaky", &[bad.addr], policy);
    yaml.push_str(&backend(
        "half",
        &[dead, good.addr],
        "  loadBalancer: {policy: RoundRobin}\n",
    ));
    let p = Proxy::start(yaml);
    let mut conn = Conn::open(p.outbound).await.unwrap();

    let r = conn
        .send(req("POST", "flaky", b"charge $10"))
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        bad.requests(),
        1,
        "a POST answered 503 must not be sent again"
    );
    let r = conn.send(req("GET", "flaky", b"")).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(bad.requests(), 1 + 3, "a GET is retried twice");

    // Connect failures are always safe: the request never left. Default policy.
    for _ in 0..10 {
        let r = conn.send(req("POST", "half", b"charge $10")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(good.requests(), 10);
    assert!(
        good.bodies().iter().all(|n| *n == 10),
        "bodies replayed intact: {:?}",
        good.bodies()
    );
}

#[tokio::test]
async fn retries_stay_within_the_budget_when_everything_fails() {
    let ups = [Faulty::start("a").await, Faulty::start("b").await];
    for u in &ups {
        u.set(Mode::Status(503, None));
    }
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    // Up to 5 retries each, but the budget allows 20 % + 1/s.
    let policy = "  retry: {attempts: 5, retryOn: [5xx], backoff: {baseInterval: 1ms, maxInterval: 2ms}, budget: {percent: 20, minRetriesPerSecond: 1}}\n  outlierDetection: {consecutiveFailures: 0}\n";
    let p = Proxy::start(backend("svc", &addrs, policy));
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let started = Instant::now();
    let n = 300;
    for _ in 0..n {
        assert_eq!(conn.send(req("GET", "svc", b"")).await.unwrap().status, 503);
    }
    let secs = started.elapsed().as_secs() + 1;
    let attempts = ups.iter().map(|u| u.requests()).sum::<usize>();
    let allowed = n + n * 20 / 100 + secs as usize;
    assert!(
        attempts <= allowed,
        "{attempts} upstream attempts for {n} requests; budget allows {allowed}"
    );
    assert!(attempts > n, "some retries were sent ({attempts})");
    assert!(
        p.metric("weft_retries_total", &["result=\"budget_exhausted\""])
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_max_backoff() {
    let u = Faulty::start("a").await;
    u.set(Mode::Status(503, Some("1")));
    let policy = "  retry: {attempts: 1, retryOn: [5xx], backoff: {baseInterval: 1ms, maxInterval: 300ms}}\n";
    let p = Proxy::start(backend("svc", &[u.addr], policy));
    let started = Instant::now();
    let r = get(&p.url("/"), &[("host", "svc")]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(u.requests(), 2);
    // Retry-After: 1 s, capped at the 300 ms maximum backoff.
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_millis(900),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_backend_sheds_while_its_neighbour_stays_fast() {
    let slow = Faulty::start("slow").await;
    slow.set(Mode::Slow(Duration::from_secs(3)));
    let fast = Faulty::start("fast").await;
    let mut yaml = backend(
        "slow",
        &[slow.addr],
        "  circuitBreaker: {maxRequests: 10}\n",
    );
    yaml.push_str(&backend("fast", &[fast.addr], ""));
    let p = Proxy::start(yaml);
    let outbound = p.outbound;

    async fn p99(outbound: std::net::SocketAddr, n: usize) -> Duration {
        let mut conn = Conn::open(outbound).await.unwrap();
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            assert_eq!(
                conn.send(req("GET", "fast", b"")).await.unwrap().status,
                200
            );
            lat.push(t.elapsed());
        }
        lat.sort();
        lat[n * 99 / 100]
    }
    let baseline = p99(outbound, 300).await;

    // 10 requests fill the slow backend; 90 more overflow at once.
    let mut storm = tokio::task::JoinSet::new();
    for _ in 0..100 {
        storm.spawn(async move {
            let t = Instant::now();
            let r = get(&format!("http://{outbound}/"), &[("host", "slow")])
                .await
                .unwrap();
            (
                r.status,
                r.header("x-weft-overloaded").map(str::to_owned),
                t.elapsed(),
            )
        });
    }
    eventually(
        "the slow backend to fill up",
        Duration::from_secs(5),
        || async { (slow.requests() >= 10).then_some(()) },
    )
    .await;
    let during = p99(outbound, 300).await;
    // Circuit state on /metrics: the requests limit is full while the slow ones hang.
    let active = p
        .metric(
            "weft_limit_active",
            &["backend=\"default/slow\"", "limit=\"requests\""],
        )
        .await;
    let max = p
        .metric(
            "weft_limit_max",
            &["backend=\"default/slow\"", "limit=\"requests\""],
        )
        .await;
    assert_eq!((active, max), (10.0, 10.0));
    let mut shed = 0;
    while let Some(r) = storm.join_next().await {
        let (status, overloaded, took) = r.unwrap();
        if status == 503 {
            assert_eq!(overloaded.as_deref(), Some("true"));
            assert!(
                took < Duration::from_secs(1),
                "shed at once, not after waiting ({took:?})"
            );
            shed += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(shed, 90, "exactly the requests past the limit are shed");
    assert_eq!(slow.requests(), 10);
    assert!(
        p.metric("weft_overflows_total", &["limit=\"requests\""])
            .await
            >= 90.0
    );
    // The neighbour does not notice (generous bound for a shared 2-core machine).
    assert!(
        during <= baseline * 3 + Duration::from_millis(5),
        "fast p99 went from {baseline:?} to {during:?} while slow was saturated"
    );
}

#[tokio::test]
async fn a_large_body_is_retried_only_when_it_never_left() {
    let good = Faulty::start("good").await;
    let bad = Faulty::start("bad").await;
    bad.set(Mode::Status(503, None));
    let dead = closed_addr();
    let mut yaml = backend(
        "half",
        &[dead, good.addr],
        "  loadBalancer: {policy: RoundRobin}\n",
    );
    // Opted in to retrying anything on 5xx: a body over 64 KiB is still not replayed.
    yaml.push_str(&backend(
        "flaky",
        &[bad.addr],
        "  retry: {attempts: 2, retryOn: [5xx], nonIdempotent: true, backoff: {baseInterval: 1ms, maxInterval: 2ms}}\n",
    ));
    let p = Proxy::start(yaml);
    static BIG: [u8; 200 * 1024] = [7u8; 200 * 1024];
    let mut conn = Conn::open(p.outbound).await.unwrap();
    for _ in 0..4 {
        let r = conn.send(req("POST", "half", &BIG)).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        good.bodies(),
        vec![BIG.len(); 4],
        "every body arrived whole, once"
    );
    let r = conn.send(req("PUT", "flaky", &BIG)).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        bad.requests(),
        1,
        "a 200 KiB body is not buffered for a replay"
    );
    let r = conn.send(req("PUT", "flaky", b"small")).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(bad.requests(), 1 + 3, "a small body is replayed");
    assert!(
        bad.bodies()[1..].iter().all(|n| *n == 5),
        "{:?}",
        bad.bodies()
    );
}

/// One endpoint's entry on `/endpoints` (the first backend's).
async fn endpoint_state(p: &Proxy, addr: std::net::SocketAddr) -> serde_json::Value {
    let (_, eps) = p.admin_get("/endpoints").await;
    let v: serde_json::Value = serde_json::from_str(&eps).unwrap();
    v["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .unwrap()
        .clone()
}

/// The scenario of a dead endpoint holding traffic: A answers five 503s in
/// a row and is ejected (for the default 30 s); then B dies (its port
/// refuses connections) and `maxEjectionPercent: 50` keeps it in. A
/// answers again — before B dies, or only after the first probe B's
/// failures bring it — and within a second of that, traffic is on A.
async fn dead_endpoint_case(method: &'static str, retries: bool, late: bool) {
    let case = format!(
        "{method}, retries {}, A recovers {}",
        if retries { "on" } else { "off" },
        if late {
            "after a failed probe"
        } else {
            "before B dies"
        }
    );
    let a = Faulty::start("a").await;
    let b = Faulty::start("b").await;
    a.set(Mode::Status(503, None));
    let retry = if retries {
        ""
    } else {
        "  retry: {attempts: 0}\n"
    };
    let policy = format!(
        "  loadBalancer: {{policy: RoundRobin}}\n{retry}  outlierDetection: {{consecutiveFailures: 5, maxEjectionPercent: 50}}\n"
    );
    let p = Proxy::start(backend("svc", &[a.addr, b.addr], &policy));
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let body: &'static [u8] = if method == "POST" { b"charge $10" } else { b"" };
    // B answers every other request; A's five 503s eject it.
    for _ in 0..20 {
        if a.requests() >= 5 {
            break;
        }
        conn.send(req(method, "svc", body)).await.unwrap();
    }
    assert_eq!(a.requests(), 5, "{case}");
    let a_state = endpoint_state(&p, a.addr).await;
    assert_eq!(a_state["ejection"], "ejected", "{case}: {a_state}");

    if !late {
        a.set(Mode::Ok);
    }
    b.kill();
    let mut recovered = Instant::now();
    let limit = Duration::from_secs(1);
    if late {
        // B's failures bring A a probe; it still answers 503, then recovers.
        while a.requests() == 5 {
            if recovered.elapsed() > limit {
                let eps = p.admin_get("/endpoints").await.1;
                panic!("{case}: A got no probe while B failed: {eps}");
            }
            conn.send(req(method, "svc", body)).await.unwrap();
        }
        a.set(Mode::Ok);
        recovered = Instant::now();
    }
    let (mut streak, mut failed, mut last) = (0, 0, 0);
    while streak < 5 {
        if recovered.elapsed() > limit {
            let eps = p.admin_get("/endpoints").await.1;
            panic!("{case}: traffic not back on A a second after it recovered ({failed} failed requests, the last {last}): {eps}");
        }
        let r = conn.send(req(method, "svc", body)).await.unwrap();
        if r.status == 200 && r.header("x-upstream") == Some("a") {
            streak += 1;
        } else {
            (streak, failed, last) = (0, failed + 1, r.status);
        }
    }
    let b_state = endpoint_state(&p, b.addr).await;
    assert_eq!(
        b_state["ejection"], "ejected",
        "{case}: the dead endpoint is the one out now: {b_state}"
    );
    // Logs are read from the proxy's stderr as they come.
    eventually(
        "the restoration to be logged",
        Duration::from_secs(5),
        || async { p.logs().contains("back in the balancer").then_some(()) },
    )
    .await;
    assert!(
        a.bodies().iter().all(|n| *n == body.len()),
        "{case}: {:?}",
        a.bodies()
    );
}

#[tokio::test]
async fn a_dead_endpoint_kept_in_by_the_ejection_cap_does_not_hold_traffic() {
    for method in ["GET", "POST"] {
        for retries in [true, false] {
            dead_endpoint_case(method, retries, false).await;
        }
    }
}

#[tokio::test]
async fn an_ejected_endpoint_recovering_while_the_rest_fail_gets_traffic_within_a_second() {
    for method in ["GET", "POST"] {
        for retries in [true, false] {
            dead_endpoint_case(method, retries, true).await;
        }
    }
}
