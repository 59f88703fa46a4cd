//! Local rate limits (`TrafficPolicy.spec.rateLimit`) enforced by the
//! inbound sidecar B (`--service reviews`) for its replica, with real mTLS
//! callers: sidecars A with distinct SPIFFE identities, and a plaintext
//! client straight to B's inbound (no verified identity).
//!
//! Rates are about wall time, so the load tests run on real time: every
//! caller hammers B for a fixed window (offered several times its limit),
//! and its admitted count is held to `burst + rate * window`, the window
//! measured from the caller's first to its last send. B's limits come in
//! by a reload after every caller's connection is warm, so each bucket is
//! full when the window opens and no handshake delays the first arrival.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::sync::Mutex;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_tests::mesh::{mint, with_identity};
use weft_tests::*;

const TD: &str = "spiffe://weft.local/ns/default/sa";
const WINDOW: Duration = Duration::from_secs(2);
/// Each caller's workers, and how often each sends: 2 every 10 ms offers
/// 200 requests a second, at least 5 times any per-caller limit below, so
/// that a slow moment of a loaded machine never lets a bucket fill up.
const WORKERS: usize = 2;
const EVERY: Duration = Duration::from_millis(10);

/// The load tests one at a time: they measure wall-time rates.
static LOAD: Mutex<()> = Mutex::const_new(());

fn id(sa: &str) -> String {
    format!("{TD}/{sa}")
}

/// B's config: its own Backend and, when `rate_limit` is given, the
/// TrafficPolicy on it carrying that `rateLimit` block.
fn b_config(rate_limit: Option<&str>) -> String {
    let mut y = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: reviews}\nspec:\n  protocol: http\n  endpoints: [{address: \"127.0.0.1:9\"}]\n".to_string();
    if let Some(rl) = rate_limit {
        y.push_str(&format!("---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: reviews-limits}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  rateLimit:\n{rl}"));
    }
    y
}

/// A caller's config: Backend `reviews` at B's inbound, proving `reviews`.
fn a_config(b: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews}}\nspec:\n  protocol: http\n  endpoints: [{{address: \"{b}\", identity: \"{}\"}}]\n",
        id("reviews")
    )
}

struct Mesh {
    app: Upstream,
    b: Proxy,
    /// Caller sidecars by identity name.
    callers: Vec<(String, Proxy)>,
    _dirs: Vec<TempDir>,
}

/// B (with `b_yaml` and `b_args`) in front of an app, and a caller sidecar
/// for each of `identities`.
async fn mesh(b_yaml: String, b_args: &[&str], identities: &[&str]) -> Mesh {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = Upstream::start("reviews-app").await;
    let b_dir = mint(&ca, &ca, &id("reviews"));
    let mut b = with_identity(Proxy::builder(b_yaml), &b_dir)
        .app(app.addr)
        .arg("--service")
        .arg("reviews");
    for a in b_args {
        b = b.arg(*a);
    }
    let b = b.start();
    let mut dirs = vec![b_dir];
    let mut callers = Vec::new();
    for who in identities {
        let dir = mint(&ca, &ca, &id(who));
        callers.push((
            who.to_string(),
            with_identity(Proxy::builder(a_config(b.inbound)), &dir).start(),
        ));
        dirs.push(dir);
    }
    Mesh {
        app,
        b,
        callers,
        _dirs: dirs,
    }
}

fn get_reviews() -> Request<Full<Bytes>> {
    Request::get("/")
        .header("host", "reviews")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// One request on a fresh connection to `addr`.
async fn once(addr: SocketAddr) -> Resp {
    let mut c = Conn::open(addr).await.expect("connect");
    tokio::time::timeout(Duration::from_secs(10), c.send(get_reviews()))
        .await
        .expect("answer within 10 s")
        .expect("request")
}

/// What one caller saw over its window.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    limited: u64,
    other: Vec<String>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// One 429, to check its headers.
    refusal: Option<Resp>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.admitted += o.admitted;
        self.limited += o.limited;
        self.other.extend(o.other);
        self.first = [self.first, o.first].into_iter().flatten().min();
        self.last = [self.last, o.last].into_iter().flatten().max();
        self.refusal = self.refusal.take().or(o.refusal);
    }

    /// First to last send, in seconds.
    fn span(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => (l - f).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// [`WORKERS`] keep-alive connections to `addr`, each sending `GET /`
/// (Host `reviews`) every [`EVERY`] until [`WINDOW`] has passed.
async fn hammer(addr: SocketAddr) -> Tally {
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut conn = Conn::open(addr).await.expect("connect");
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let sent = Instant::now();
                    if sent - start >= WINDOW {
                        return t;
                    }
                    t.first.get_or_insert(sent);
                    t.last = Some(sent);
                    match conn.send(get_reviews()).await {
                        Ok(r) if r.status == 200 => t.admitted += 1,
                        Ok(r) if r.status == 429 => {
                            t.limited += 1;
                            t.refusal.get_or_insert(r);
                        }
                        Ok(r) => t.other.push(format!("{} {}", r.status, r.text())),
                        Err(e) => {
                            t.other.push(e.to_string());
                            conn = Conn::open(addr).await.expect("reconnect");
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = Tally::default();
    for w in workers {
        total.merge(w.await.expect("worker"));
    }
    total
}

/// Every caller (by name and address) hammers at once.
async fn hammer_all(callers: &[(String, SocketAddr)]) -> Vec<(String, Tally)> {
    let runs: Vec<_> = callers
        .iter()
        .map(|(n, a)| (n.clone(), tokio::spawn(hammer(*a))))
        .collect();
    let mut out = Vec::new();
    for (n, r) in runs {
        out.push((n, r.await.expect("hammer")));
    }
    out
}

/// `admitted` within 5 % of `burst + rate * span`.
fn assert_rate(who: &str, t: &Tally, rate: f64, burst: f64) {
    assert!(
        t.other.is_empty(),
        "{who}: unexpected answers {:?}",
        t.other
    );
    let expected = burst + rate * t.span();
    let got = t.admitted as f64;
    eprintln!(
        "{who}: {got} admitted, {} refused over {:.3} s; expected {expected:.1}",
        t.limited,
        t.span()
    );
    assert!(
        (got - expected).abs() <= 0.05 * expected,
        "{who}: {got} admitted over {:.3} s, expected {expected:.1} (burst {burst} + {rate}/s) within 5 %; {} refused",
        t.span(),
        t.limited
    );
    assert!(
        t.limited > 0,
        "{who} was never refused: the load was too light"
    );
}

fn assert_refusal(who: &str, r: &Resp) {
    assert_eq!(r.header("x-weft-error"), Some("rate-limited"), "{who}");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{who}: no retry-after in {:?}", r.headers));
    assert!(retry >= 1, "{who}: retry-after {retry}");
    assert!(r.text().contains("rate limited"), "{who}: {}", r.text());
}

/// The callers of `m` through their sidecars, plus the plaintext client
/// straight to B; warmed up with one request each (before any limit).
async fn warm_callers(m: &Mesh) -> Vec<(String, SocketAddr)> {
    let mut callers: Vec<(String, SocketAddr)> = m
        .callers
        .iter()
        .map(|(n, p)| (n.clone(), p.outbound))
        .collect();
    callers.push(("plaintext".into(), m.b.inbound));
    for (n, a) in &callers {
        let r = once(*a).await;
        assert_eq!(r.status, 200, "{n} warm-up: {} {:?}", r.text(), r.headers);
    }
    callers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_identity_gets_its_own_rate_and_overrides_theirs() {
    let _one = LOAD.lock().await;
    let m = mesh(b_config(None), &[], &["frontend", "checkout", "vip"]).await;
    let callers = warm_callers(&m).await;
    let warm = m.app.requests();
    m.b.reload(&b_config(Some(&format!(
        "    identity: {{requestsPerSecond: 20, burst: 5}}\n    overrides:\n      - identities: [\"{}\"]\n        requestsPerSecond: 40\n        burst: 10\n",
        id("vip")
    ))))
    .await;
    let tallies = hammer_all(&callers).await;
    let mut admitted = 0;
    let (mut identity_refused, mut override_refused) = (0, 0);
    for (who, t) in &tallies {
        match who.as_str() {
            "vip" => {
                assert_rate(who, t, 40.0, 10.0);
                override_refused += t.limited;
            }
            // The plaintext client has no verified identity: it gets the
            // one bucket every such caller shares, at the identity limit.
            _ => {
                assert_rate(who, t, 20.0, 5.0);
                identity_refused += t.limited;
            }
        }
        assert_refusal(who, t.refusal.as_ref().unwrap());
        admitted += t.admitted;
    }
    // Only admitted requests reached the app, and every refusal is counted.
    assert_eq!((m.app.requests() - warm) as u64, admitted);
    let b = &m.b;
    let metric = |limit: &str| {
        let label = format!("limit=\"{limit}\"");
        async move { b.metric("weft_rate_limited_total", &[&label]).await }
    };
    assert_eq!(metric("identity").await, identity_refused as f64);
    assert_eq!(metric("override").await, override_refused as f64);
    assert_eq!(metric("total").await, 0.0);
    assert_eq!(
        m.b.metric("weft_inbound_rejected_total", &["reason=\"rate-limited\""])
            .await,
        (identity_refused + override_refused) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_limit_holds_across_callers() {
    let _one = LOAD.lock().await;
    let m = mesh(b_config(None), &[], &["frontend", "checkout"]).await;
    let callers = warm_callers(&m).await;
    m.b.reload(&b_config(Some(
        "    total: {requestsPerSecond: 50, burst: 10}\n",
    )))
    .await;
    let tallies = hammer_all(&callers).await;
    let mut all = Tally::default();
    for (who, t) in tallies {
        assert!(t.admitted > 0, "{who} got nothing through: {t:?}");
        assert_refusal(&who, t.refusal.as_ref().unwrap());
        all.merge(t);
    }
    assert_rate("all callers", &all, 50.0, 10.0);
    assert_eq!(
        m.b.metric("weft_rate_limited_total", &["limit=\"total\""])
            .await,
        all.limited as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_says_when_to_retry_and_grpc_gets_resource_exhausted() {
    let m = mesh(
        b_config(Some("    total: {requestsPerSecond: 1, burst: 1}\n")),
        &["--access-log", "on"],
        &["frontend"],
    )
    .await;
    let a = m.callers[0].1.outbound;
    // One token a second, so of two requests in a row the second is refused.
    let first = once(a).await;
    let second = once(a).await;
    let statuses = [first.status, second.status];
    assert!(statuses.contains(&429), "{statuses:?}");
    let refused = if first.status == 429 { &first } else { &second };
    assert_refusal("frontend", refused);
    assert_eq!(refused.header("retry-after"), Some("1"));
    // A gRPC call (HTTP/2, plaintext) refused: a RESOURCE_EXHAUSTED status.
    let mut h2 = H2Conn::open(m.b.inbound).await.expect("h2 to B");
    let mut grpc_refused = None;
    for _ in 0..3 {
        let r = h2
            .send(
                Request::post("http://reviews/weft.test.Echo/Call")
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                    .unwrap(),
            )
            .await
            .expect("grpc call");
        if r.header("x-weft-error") == Some("rate-limited") {
            grpc_refused = Some(r);
            break;
        }
    }
    let r = grpc_refused.expect("three calls in a row, one token a second: one is refused");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("8"), "{:?}", r.headers);
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    // The access log flags the refusals RL.
    eventually("an access line flagged RL", Duration::from_secs(5), || {
        let found = m.b.logs().lines().any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v["target"] == "weft::access" && v["flags"] == "RL")
        });
        async move { found.then_some(()) }
    })
    .await;
}

/// Mesh mode: the control plane sends B (the sidecar of `reviews`) the
/// TrafficPolicy on its own service, though B calls nothing, and B limits
/// the caller it authenticated.
#[tokio::test]
async fn in_mesh_mode_the_control_plane_sends_the_service_its_own_limit() {
    let app = Upstream::start("reviews-app").await;
    let placeholder = Upstream::start("placeholder").await;
    let cp = ControlPlane::start(
        &format!("apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: placeholder}}\nspec:\n  endpoints: [{{address: \"{}\"}}]\n", placeholder.addr),
        &[],
    );
    let b = cp
        .sidecar("default", "reviews")
        .arg("--service")
        .arg("reviews")
        .app(app.addr)
        .start();
    let a = cp.sidecar("default", "productpage").start();
    for p in [&a, &b] {
        eventually("the sidecar is ready", Duration::from_secs(20), || async {
            (p.admin_get("/ready").await.0 == 200).then_some(())
        })
        .await;
    }
    let old = cp.version().await;
    // Three at once, then one a second, for each caller identity.
    cp.write_config(&format!(
        "{}---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: reviews-limits}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  rateLimit:\n    identity: {{requestsPerSecond: 1, burst: 3}}\n",
        a_config(b.inbound)
    ));
    cp.wait_all_acked(2, Some(&old), Duration::from_secs(10))
        .await;
    let (_, config) = b.admin_get("/config").await;
    assert!(config.contains("reviews-limits"), "{config}");
    // Six calls in a row: the first three pass (the bucket starts full),
    // and over `t` seconds at most 3 + t do.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = get(&a.url("/"), &[("host", "reviews")]).await.unwrap();
        if r.status == 429 {
            assert_refusal("productpage", &r);
        }
        statuses.push(r.status);
    }
    let elapsed = started.elapsed().as_secs();
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let admitted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert!(admitted <= 3 + elapsed, "{statuses:?} in {elapsed} s");
    assert_eq!(
        b.metric("weft_rate_limited_total", &["limit=\"identity\""])
            .await,
        statuses.iter().filter(|s| **s == 429).count() as f64
    );
}

/// A refused request's server span carries the `rate_limited` event (with
/// the limit) and the RL flag.
#[tokio::test]
async fn a_refusal_is_a_span_event() {
    use weft_tests::otlp::{receiver_available, with_env, Receiver};
    if !receiver_available() {
        return;
    }
    let rx = Receiver::start().await;
    let app = Upstream::start("reviews-app").await;
    let b = with_env(
        Proxy::builder(b_config(Some(
            "    total: {requestsPerSecond: 1, burst: 1}\n",
        ))),
        &rx.env("grpc"),
    )
    .app(app.addr)
    .arg("--service")
    .arg("reviews")
    .start();
    let statuses = [once(b.inbound).await.status, once(b.inbound).await.status];
    assert!(statuses.contains(&429), "{statuses:?}");
    let s = rx
        .span("the refused request's span", |s| {
            s["attributes"]["http.response.status_code"] == 429
        })
        .await;
    let event = s["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "rate_limited"))
        .unwrap_or_else(|| panic!("no rate_limited event: {s}"));
    assert_eq!(event["attributes"]["weft.limit"], "total", "{s}");
    assert_eq!(s["attributes"]["weft.response_flags"], "RL", "{s}");
}
