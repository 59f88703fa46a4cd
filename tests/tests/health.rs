//! End-to-end active health checks: real upstreams ([`Faulty`]) behind the
//! real proxy, their `/health` answers (or their listeners, or a real gRPC
//! health service) switched by the test, and the proxy's view read from
//! `/endpoints`, `/metrics` and its log.
//!
//! A health state change has no event the test can wait on, so it is polled
//! (bounded); traffic is then counted per upstream, exactly where the policy
//! (RoundRobin) makes it exact.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use weft_tests::{eventually, require_python_module, Conn, Faulty, Proxy};

/// Health checks every 100 ms; a state change takes a few of them.
const CHANGE: Duration = Duration::from_secs(5);

/// Backend `svc` (`protocol`) over `endpoints`, with a TrafficPolicy whose
/// spec carries `policy` (YAML lines indented by two spaces) after its targetRef.
fn config(protocol: &str, endpoints: &[SocketAddr], policy: &str) -> String {
    let mut s = format!(
        "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {{name: svc}}
spec:
  protocol: {protocol}
  endpoints:
"
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
";
    s += policy;
    s
}

/// A health check of `kind` (`http: {..}`, `tcp: {}`, `grpc: {..}`) every 100 ms.
/// The timeout is generous: a loaded machine must not fail healthy endpoints.
fn health_check(kind: &str) -> String {
    format!(
        "  healthCheck:
    {kind}
    interval: 100ms
    timeout: 1s
    unhealthyThreshold: 2
    healthyThreshold: 2
    jitterPercent: 10
"
    )
}

fn addrs(fs: &[&Arc<Faulty>]) -> Vec<SocketAddr> {
    fs.iter().map(|f| f.addr).collect()
}

async fn faulties(names: &[&str]) -> Vec<Arc<Faulty>> {
    let mut v = Vec::new();
    for n in names {
        v.push(Faulty::start(n).await);
    }
    v
}

/// The `/endpoints` entry of backend `svc`, if the config has it.
async fn backend_json(p: &Proxy) -> Option<serde_json::Value> {
    let (status, body) = p.admin_get("/endpoints").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/endpoints is JSON");
    v["backends"].as_array().and_then(|bs| {
        bs.iter()
            .find(|b| b["backend"].as_str().is_some_and(|k| k.ends_with("/svc")))
            .cloned()
    })
}

/// The `/endpoints` entry of one endpoint of `svc`.
async fn endpoint(p: &Proxy, addr: SocketAddr) -> serde_json::Value {
    let b = backend_json(p).await.expect("backend svc in /endpoints");
    b["endpoints"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["address"] == addr.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no endpoint {addr} in {b}"))
}

async fn health_of(p: &Proxy, addr: SocketAddr) -> String {
    endpoint(p, addr).await["health"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits for the proxy to report `addr` as `state` ("healthy", "unhealthy").
async fn wait_health(p: &Proxy, addr: SocketAddr, state: &str) {
    eventually(&format!("{addr} to be {state}"), CHANGE, || async {
        (health_of(p, addr).await == state).then_some(())
    })
    .await;
}

fn req(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "svc")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// `n` requests through the proxy, all expected to succeed; answers per upstream.
async fn traffic(p: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut conn = Conn::open(p.outbound).await.expect("connect to the proxy");
    let mut seen = BTreeMap::new();
    for i in 0..n {
        let r = conn
            .send(req("/"))
            .await
            .expect("request through the proxy");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let up = r.header("x-upstream").expect("x-upstream").to_owned();
        *seen.entry(up).or_insert(0) += 1;
    }
    seen
}

/// Log lines (JSON, one event each) whose message starts with `prefix`.
fn log_messages(p: &Proxy, prefix: &str) -> Vec<String> {
    p.logs()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["message"].as_str().map(|m| m.starts_with(prefix)))
                .unwrap_or(false)
        })
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn failing_http_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let fs = faulties(&["a", "b", "c"]).await;
    let (a, b, c) = (&fs[0], &fs[1], &fs[2]);
    let check = health_check("http: {path: /health, expectedStatuses: [200]}");
    let p = Proxy::start(config("http", &addrs(&[a, b, c]), &check));
    for f in [a, b, c] {
        wait_health(&p, f.addr, "healthy").await;
    }
    let all = traffic(&p, 30).await;
    assert_eq!(
        all.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{all:?}"
    );

    c.set_health(500);
    wait_health(&p, c.addr, "unhealthy").await;
    let e = endpoint(&p, c.addr).await;
    let why = e["lastHealthCheckError"].as_str().unwrap_or_default();
    assert!(why.contains("500"), "lastHealthCheckError: {e}");
    assert!(e["healthCheckFailures"].as_u64().unwrap_or(0) >= 2, "{e}");
    assert!(
        p.metric("weft_health_checks_total", &["svc", "result=\"fail\""])
            .await
            >= 2.0,
        "weft_health_checks_total{{result=fail}}"
    );
    // The others are still healthy, and take all the traffic.
    assert_eq!(health_of(&p, a.addr).await, "healthy");
    assert_eq!(health_of(&p, b.addr).await, "healthy");
    let before = c.requests();
    let seen = traffic(&p, 60).await;
    assert_eq!(c.requests(), before, "the unhealthy endpoint got traffic");
    assert_eq!(seen.get("a"), Some(&30), "{seen:?}");
    assert_eq!(seen.get("b"), Some(&30), "{seen:?}");
    // Its checks go on while it is out.
    let checks = c.health_checks();
    eventually("c to be checked again", CHANGE, || async {
        (c.health_checks() > checks).then_some(())
    })
    .await;

    c.set_health(200);
    wait_health(&p, c.addr, "healthy").await;
    let seen = traffic(&p, 60).await;
    assert!(
        seen.get("c").copied().unwrap_or(0) >= 10,
        "back in the balancer: {seen:?}"
    );
    assert!(c.requests() >= before + 10);
}

#[tokio::test]
async fn tcp_health_checks_follow_a_listener_that_dies_and_comes_back() {
    let fs = faulties(&["a", "b"]).await;
    let (a, b) = (&fs[0], &fs[1]);
    let p = Proxy::start(config("http", &addrs(&[a, b]), &health_check("tcp: {}")));
    wait_health(&p, a.addr, "healthy").await;
    wait_health(&p, b.addr, "healthy").await;

    b.kill();
    wait_health(&p, b.addr, "unhealthy").await;
    let e = endpoint(&p, b.addr).await;
    let why = e["lastHealthCheckError"].as_str().unwrap_or_default();
    assert!(why.contains("refused"), "lastHealthCheckError: {e}");
    assert_eq!(health_of(&p, a.addr).await, "healthy");
    // No request is sent to the dead endpoint (none fails over to a retry either).
    let seen = traffic(&p, 20).await;
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");
    assert_eq!(
        p.metric("weft_upstream_connects_total", &["error"]).await,
        0.0
    );

    b.revive().await;
    wait_health(&p, b.addr, "healthy").await;
    let seen = traffic(&p, 20).await;
    assert_eq!(seen.get("b"), Some(&10), "{seen:?}");
}

/// `tests/peers/grpc_health_peer.py`, driven over its stdin.
struct HealthPeer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    addr: SocketAddr,
}

impl HealthPeer {
    async fn start() -> HealthPeer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/grpc_health_peer.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["server", "0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("grpc_health_peer.py to print READY within 30s")
            .expect("read the peer's stdout")
            .expect("grpc_health_peer.py exited before READY");
        let port: u16 = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        HealthPeer {
            child,
            stdin,
            lines,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Sets the served status ("serving", "not-serving") and waits for the ack.
    async fn set(&mut self, status: &str) {
        self.stdin
            .write_all(format!("{status}\n").as_bytes())
            .await
            .expect("write to the peer");
        self.stdin.flush().await.expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("the peer to acknowledge within 10s")
            .expect("read the peer's stdout");
        assert_eq!(line.as_deref(), Some(format!("OK {status}").as_str()));
    }
}

#[tokio::test]
async fn grpc_health_checks_follow_the_served_status() {
    if !require_python_module("grpc_health") {
        return;
    }
    let mut peer = HealthPeer::start().await;
    let p = Proxy::start(config(
        "grpc",
        &[peer.addr],
        &health_check("grpc: {service: \"\"}"),
    ));
    wait_health(&p, peer.addr, "healthy").await;
    assert_eq!(endpoint(&p, peer.addr).await["healthCheckFailures"], 0);

    peer.set("not-serving").await;
    wait_health(&p, peer.addr, "unhealthy").await;
    let e = endpoint(&p, peer.addr).await;
    let why = e["lastHealthCheckError"].as_str().unwrap_or_default();
    // NOT_SERVING is 2 in grpc.health.v1.HealthCheckResponse.ServingStatus.
    assert!(why.contains("health status 2"), "lastHealthCheckError: {e}");

    peer.set("serving").await;
    wait_health(&p, peer.addr, "healthy").await;
    assert!(
        peer.child.try_wait().expect("peer status").is_none(),
        "the peer is still running"
    );
}

#[tokio::test]
async fn too_few_healthy_endpoints_put_the_backend_in_panic_mode() {
    let fs = faulties(&["a", "b", "c", "d"]).await;
    let all: Vec<&Arc<Faulty>> = fs.iter().collect();
    let mut policy = health_check("http: {path: /health}");
    policy += "  panicThreshold: 50\n";
    let p = Proxy::start(config("http", &addrs(&all), &policy));
    for f in &fs {
        wait_health(&p, f.addr, "healthy").await;
    }
    let gauge = || p.metric("weft_panic_mode", &["backend=\"default/svc\""]);

    // Two of four out is 50 % available: not below the threshold.
    fs[1].set_health(503);
    fs[2].set_health(503);
    wait_health(&p, fs[1].addr, "unhealthy").await;
    wait_health(&p, fs[2].addr, "unhealthy").await;
    let seen = traffic(&p, 20).await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("d"), Some(&10), "{seen:?}");
    assert_eq!(gauge().await, 0.0);
    assert_eq!(backend_json(&p).await.unwrap()["panicMode"], false);

    // Three of four out (25 % available): all four share the load.
    fs[3].set_health(503);
    wait_health(&p, fs[3].addr, "unhealthy").await;
    let before: Vec<usize> = fs.iter().map(|f| f.requests()).collect();
    let seen = traffic(&p, 80).await;
    for (f, b) in fs.iter().zip(&before) {
        assert!(
            f.requests() - b >= 10,
            "{} got {} of 80 in panic mode: {seen:?}",
            f.name,
            f.requests() - b
        );
    }
    assert_eq!(gauge().await, 1.0);
    assert_eq!(backend_json(&p).await.unwrap()["panicMode"], true);
    eventually("the panic mode log line", CHANGE, || async {
        (!log_messages(&p, "panic mode:").is_empty()).then_some(())
    })
    .await;

    // Recovery: out of panic mode, logged once.
    for f in &fs[1..] {
        f.set_health(200);
    }
    for f in &fs {
        wait_health(&p, f.addr, "healthy").await;
    }
    let seen = traffic(&p, 8).await;
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        [2, 2, 2, 2],
        "{seen:?}"
    );
    assert_eq!(gauge().await, 0.0);
    assert_eq!(backend_json(&p).await.unwrap()["panicMode"], false);
    eventually("the panic mode over log line", CHANGE, || async {
        (!log_messages(&p, "panic mode over").is_empty()).then_some(())
    })
    .await;
    let entered = log_messages(&p, "panic mode:");
    assert_eq!(entered.len(), 1, "logged once on entry: {entered:#?}");
    assert!(entered[0].contains("default/svc"), "{}", entered[0]);
    let over = log_messages(&p, "panic mode over");
    assert_eq!(over.len(), 1, "logged once on exit: {over:#?}");
}

#[tokio::test]
async fn check_failures_are_counted_per_endpoint_and_checks_stop_with_their_backend() {
    let fs = faulties(&["a", "b", "other"]).await;
    let (a, b, other) = (&fs[0], &fs[1], &fs[2]);
    let check = health_check("http: {path: /health}");
    let p = Proxy::start(config("http", &addrs(&[a, b]), &check));
    b.set_health(502);
    wait_health(&p, b.addr, "unhealthy").await;
    // b's failures count up, check after check; a's stay at zero.
    let failures = |addr| {
        let p = &p;
        async move {
            endpoint(p, addr).await["healthCheckFailures"]
                .as_u64()
                .unwrap()
        }
    };
    let first = failures(b.addr).await;
    eventually("b's failed checks to count up", CHANGE, || async {
        (failures(b.addr).await >= first + 3).then_some(())
    })
    .await;
    assert_eq!(failures(a.addr).await, 0);
    assert_eq!(
        endpoint(&p, a.addr).await["lastHealthCheckError"],
        serde_json::Value::Null
    );
    assert!(
        p.metric(
            "weft_health_checks_total",
            &["backend=\"default/svc\"", "result=\"fail\""]
        )
        .await
            >= (first + 3) as f64
    );
    assert!(a.health_checks() > 0);

    // The backend goes away in a hot reload: its checks stop.
    let without = "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: other}
spec:
  endpoints:
"
    .to_owned()
        + &format!("  - {{address: \"{}\"}}\n", other.addr);
    p.reload(&without).await;
    assert!(
        backend_json(&p).await.is_none(),
        "svc is gone from /endpoints"
    );
    // A check in flight at the reload may still land: wait for a quiet spell
    // of 3 intervals, then require 5 more intervals without a check.
    let quiet = |window: Duration| async move {
        let n = (a.health_checks(), b.health_checks());
        tokio::time::sleep(window).await;
        (n == (a.health_checks(), b.health_checks())).then_some(n)
    };
    let settled = eventually(
        "the health checks of the removed backend to stop",
        Duration::from_secs(3),
        || quiet(Duration::from_millis(300)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (a.health_checks(), b.health_checks()),
        settled,
        "health checks went on after their backend was removed"
    );
    assert_eq!(other.health_checks(), 0, "other has no health check");
}

/// Removing the healthCheck from a policy by reload must not leave an
/// endpoint that was failing its checks out of the balancer for good: with
/// no check left to bring it back, it has to be treated as healthy again.
#[tokio::test]
async fn turning_health_checks_off_brings_unhealthy_endpoints_back() {
    let fs = faulties(&["a", "b"]).await;
    let (a, b) = (&fs[0], &fs[1]);
    let eps = addrs(&[a, b]);
    let p = Proxy::start(config("http", &eps, &health_check("http: {path: /health}")));
    b.set_health(500);
    wait_health(&p, b.addr, "unhealthy").await;
    let seen = traffic(&p, 10).await;
    assert_eq!(seen.get("a"), Some(&10), "{seen:?}");

    // Same backend, same endpoints; the policy no longer checks health.
    p.reload(&config("http", &eps, "")).await;
    let seen = traffic(&p, 10).await;
    assert_eq!(
        seen.get("b"),
        Some(&5),
        "b is still out of the balancer with no health check to bring it back: {seen:?}; /endpoints: {}",
        endpoint(&p, b.addr).await
    );
    assert_ne!(health_of(&p, b.addr).await, "unhealthy");
}

/// Retries stay off unhealthy endpoints too: once a request has tried every
/// healthy endpoint, a retry goes to one of those again, not to one that is
/// failing its health checks (the backend is not in panic mode).
#[tokio::test]
async fn retries_never_go_to_unhealthy_endpoints() {
    let fs = faulties(&["a", "b", "c"]).await;
    let (a, b, c) = (&fs[0], &fs[1], &fs[2]);
    let mut policy = health_check("http: {path: /health}");
    policy += "  panicThreshold: 50
  retry: {attempts: 3, retryOn: [gateway-error], backoff: {baseInterval: 1ms, maxInterval: 5ms}, budget: {percent: 100, minRetriesPerSecond: 1000}}
  outlierDetection: {consecutiveFailures: 1000}
";
    let p = Proxy::start(config("http", &addrs(&[a, b, c]), &policy));
    c.set_health(500);
    wait_health(&p, c.addr, "unhealthy").await;
    // Two of three healthy (67 %): no panic. Both healthy ones answer 503.
    a.set(weft_tests::Mode::Status(503, None));
    b.set(weft_tests::Mode::Status(503, None));
    let mut conn = Conn::open(p.outbound).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let r = conn.send(req("/")).await.unwrap();
        answers.push(r.text().trim().to_owned());
    }
    assert_eq!(backend_json(&p).await.unwrap()["panicMode"], false);
    assert_eq!(
        c.requests(),
        0,
        "retries went to the unhealthy endpoint c (tries: a {}, b {}, c {}); answers: {answers:?}",
        a.requests(),
        b.requests(),
        c.requests()
    );
    assert!(
        answers.iter().all(|t| t.ends_with("failing 503")),
        "{answers:?}"
    );
    assert_eq!(a.requests() + b.requests(), 20, "4 tries per request");
}
