//! Mesh mTLS in file mode (`--identity-dir`): two sidecars, A (the caller,
//! `frontend`) and B (in front of the app, `reviews`), with certificates
//! minted by a test CA. A dials B's inbound over mTLS and HTTP/2, checking
//! B's SPIFFE ID; B terminates it, checks A's certificate and hands the app
//! A's verified identity in `x-weft-peer-identity`.
//!
//! The proxy binary must be built first (`cargo build -p weft-proxy`). The
//! curl test skips locally without curl and fails under CI (env `CI`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_tests::mesh::{mint, with_identity};
use weft_tests::*;

const FRONTEND: &str = "spiffe://weft.local/ns/default/sa/frontend";
const REVIEWS: &str = "spiffe://weft.local/ns/default/sa/reviews";
const RATINGS: &str = "spiffe://weft.local/ns/default/sa/ratings";
const STEP: Duration = Duration::from_secs(10);

/// A's config: Backend `reviews` at `endpoint`, expected to be `identity`.
fn reviews_backend(endpoint: SocketAddr, identity: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews}}\nspec:\n  protocol: http\n  port: 8080\n  endpoints: [{{address: \"{endpoint}\", identity: \"{identity}\"}}]\n"
    )
}

/// A config with nothing of interest (B only serves inbound).
fn unrelated_backend() -> String {
    "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: unused}\nspec:\n  protocol: http\n  port: 8080\n  endpoints: [{address: \"127.0.0.1:9\"}]\n".to_owned()
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn headers_json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

struct Mesh {
    app: Upstream,
    a: Proxy,
    b: Proxy,
    _dirs: Vec<TempDir>,
}

/// A (frontend) → B (reviews) → app, all certificates from one CA; A expects
/// B to be `expected`.
async fn mesh(expected: &str) -> Mesh {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = Upstream::start("reviews-app").await;
    let b_dir = mint(&ca, &ca, REVIEWS);
    let b = with_identity(Proxy::builder(unrelated_backend()), &b_dir)
        .app(app.addr)
        .start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let a = with_identity(Proxy::builder(reviews_backend(b.inbound, expected)), &a_dir).start();
    Mesh {
        app,
        a,
        b,
        _dirs: vec![a_dir, b_dir],
    }
}

/// An h1 request through A reaches the app via B over mTLS; the app sees
/// the caller's verified identity, never a forged one; the hop A→B is
/// HTTP/2 (B forwards with the version it received, so the app sees HTTP/2
/// though the client spoke HTTP/1.1).
#[tokio::test]
async fn mtls_between_sidecars_carries_the_verified_identity() {
    let m = mesh(REVIEWS).await;

    let r = within(
        "h1 via A",
        get(
            &m.a.url("/headers"),
            &[
                ("host", "reviews"),
                ("x-weft-peer-identity", "spiffe://evil"),
            ],
        ),
    )
    .await
    .expect("request via A");
    assert_eq!(r.status, 200, "{} {:?}", r.text(), r.headers);
    assert_eq!(r.header("x-upstream"), Some("reviews-app"));
    // The sidecars speak HTTP/2 to each other; the app gets the HTTP/1.1
    // the client spoke (the hop's marker header removed).
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
    let h = headers_json(&r);
    assert_eq!(h["x-weft-peer-identity"], FRONTEND, "{h}");

    // An HTTP/2 client of A gets the same.
    let mut h2 = H2Conn::open(m.a.outbound).await.expect("h2 to A");
    let r = within(
        "h2 via A",
        h2.send(
            Request::get("http://reviews/headers")
                .header("x-weft-peer-identity", "spiffe://weft.local/ns/x/sa/forged")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("h2 request via A");
    assert_eq!(r.status, 200, "{}", r.text());
    // An HTTP/2 client's request reaches the app as HTTP/2.
    assert_eq!(r.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(headers_json(&r)["x-weft-peer-identity"], FRONTEND);

    // Both went on one pooled mTLS connection from A to B.
    assert_eq!(m.app.requests(), 2);
    let conns =
        m.b.metric("weft_connections_total", &["direction=\"inbound\""])
            .await;
    assert_eq!(conns, 1.0, "A→B requests should share one h2 connection");
    // One handshake each side, counted as ok.
    let ok = |dir: &'static str| [format!("direction=\"{dir}\""), "result=\"ok\"".to_owned()];
    let [d, r] = ok("outbound");
    assert_eq!(
        m.a.metric("weft_tls_handshakes_total", &[&d, &r]).await,
        1.0
    );
    let [d, r] = ok("inbound");
    assert_eq!(
        m.b.metric("weft_tls_handshakes_total", &[&d, &r]).await,
        1.0
    );
}

/// Plaintext to B's inbound still works (permissive mode), and a forged
/// identity header is dropped rather than passed on.
#[tokio::test]
async fn plaintext_inbound_is_still_accepted_without_identity() {
    let m = mesh(REVIEWS).await;
    let r = within(
        "plaintext to B",
        get(
            &format!("http://{}/headers", m.b.inbound),
            &[("x-weft-peer-identity", FRONTEND)],
        ),
    )
    .await
    .expect("plaintext to B");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
    assert!(
        headers_json(&r).get("x-weft-peer-identity").is_none(),
        "{}",
        r.text()
    );
}

/// A that expects B to be `ratings` refuses B's `reviews` certificate: a
/// connect failure.
#[tokio::test]
async fn wrong_peer_identity_is_a_connect_failure() {
    let m = mesh(RATINGS).await;
    let r = within("via A", get(&m.a.url("/headers"), &[("host", "reviews")]))
        .await
        .expect("request via A");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("connect-failed"));
    assert_eq!(m.app.requests(), 0);
    // Counted by reason on A: B's certificate names the wrong workload.
    let wrong =
        m.a.metric("weft_tls_handshakes_total", &["result=\"wrong_identity\""])
            .await;
    assert!(wrong >= 1.0, "{}", m.a.admin_get("/metrics").await.1);
}

/// B with a certificate from another CA is refused by A.
#[tokio::test]
async fn peer_from_a_foreign_ca_is_refused() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let rogue = CertificateAuthority::generate("weft.local").unwrap();
    let app = Upstream::start("app").await;
    let b_dir = mint(&rogue, &rogue, REVIEWS);
    let b = with_identity(Proxy::builder(unrelated_backend()), &b_dir)
        .app(app.addr)
        .start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let a = with_identity(Proxy::builder(reviews_backend(b.inbound, REVIEWS)), &a_dir).start();
    let r = within("via A", get(&a.url("/headers"), &[("host", "reviews")]))
        .await
        .expect("request via A");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("connect-failed"));
    assert_eq!(app.requests(), 0);
    // A counts an unknown CA; B hears A's refusal as an alert.
    let a_fail = a
        .metric("weft_tls_handshakes_total", &["result=\"unknown_ca\""])
        .await;
    assert!(a_fail >= 1.0, "{}", a.admin_get("/metrics").await.1);
    let b_fail = b
        .metric("weft_tls_handshakes_total", &["direction=\"inbound\""])
        .await;
    let b_ok = b
        .metric("weft_tls_handshakes_total", &["result=\"ok\""])
        .await;
    assert!(
        b_fail >= 1.0 && b_ok == 0.0,
        "{}",
        b.admin_get("/metrics").await.1
    );
}

/// A bad identity directory stops the proxy at startup with a clear message.
#[tokio::test]
async fn unreadable_identity_dir_fails_startup() {
    let dir = TempDir::new("no-identity");
    let out = std::process::Command::new(proxy_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .arg("--identity-dir")
        .arg(dir.path())
        .output()
        .expect("run weft-proxy");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cert.pem"), "{err}");
}

fn curl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// curl with a mesh client certificate is accepted by B and the app sees its
/// identity; without one it is refused. (`-k`: B's certificate names no DNS
/// name or IP, only its SPIFFE ID, which curl cannot check.)
#[tokio::test]
async fn curl_with_a_client_certificate() {
    if !require_tool("curl") {
        return;
    }
    let m = mesh(REVIEWS).await;
    let dir = &m._dirs[0]; // frontend's cert.pem / key.pem / ca.pem
    let url = format!("https://{}/headers", m.b.inbound);
    let (ok, out) = tokio::task::spawn_blocking({
        let url = url.clone();
        let p = dir.path().to_owned();
        move || {
            curl(
                &[
                    "-k", "--cacert", "ca.pem", "--cert", "cert.pem", "--key", "key.pem", &url,
                ],
                &p,
            )
        }
    })
    .await
    .unwrap();
    assert!(ok, "curl with a client cert failed: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON from the app");
    assert_eq!(v["x-weft-peer-identity"], FRONTEND, "{v}");

    let (ok, out) = tokio::task::spawn_blocking({
        let p = dir.path().to_owned();
        move || curl(&["-k", "-o", "/dev/null", "-w", "%{http_code}", &url], &p)
    })
    .await
    .unwrap();
    assert!(
        !ok || !out.starts_with("200"),
        "curl without a client cert got through: {out}"
    );
}

/// An app that answers any request with `101` and then echoes bytes back.
async fn echo_upgrade_app() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                // Tells the client whether the sidecar vouched for its caller.
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let peer = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-weft-peer-identity: "))
                    .unwrap_or("none")
                    .to_owned();
                let resp = format!("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\nx-peer: {peer}\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Offers the `echo` upgrade to `reviews` through the sidecar at
/// `outbound`; the connection and the answer's head (read to its end and
/// no further, so tunnel bytes stay unread).
async fn offer_echo_upgrade(outbound: SocketAddr) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(outbound).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: reviews\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    within("an answer", async {
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed early");
            head.push(byte[0]);
        }
    })
    .await;
    (s, String::from_utf8_lossy(&head).into_owned())
}

/// The `reviews` Backend listing the `echo` upgrade (both sidecars read it:
/// the caller's to offer it, the service's own to accept it).
fn reviews_with_echo(endpoint: SocketAddr) -> String {
    reviews_backend(endpoint, REVIEWS).replace("  endpoints:", "  upgrades: [echo]\n  endpoints:")
}

/// An Upgrade request to a mesh peer, for a protocol the Backend lists,
/// goes over its own mTLS HTTP/1.1 connection and is spliced end to end.
#[tokio::test]
async fn upgrade_to_a_mesh_peer_is_spliced_over_mtls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = echo_upgrade_app().await;
    let b_dir = mint(&ca, &ca, REVIEWS);
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let b = with_identity(Proxy::builder(reviews_with_echo(unused)), &b_dir)
        .app(app)
        .start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let a = with_identity(Proxy::builder(reviews_with_echo(b.inbound)), &a_dir).start();

    let (mut s, head) = offer_echo_upgrade(a.outbound).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains(&format!("x-peer: {FRONTEND}")), "{head}");
    s.write_all(b"ping over mtls").await.unwrap();
    let mut buf = [0u8; 14];
    within("echo", s.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"ping over mtls");
}

/// The service's own sidecar does not take an upgrade its Backend does not
/// list: the offer never reaches the app, and an app that switches anyway
/// gets the client a 502, not a tunnel past policy.
#[tokio::test]
async fn an_unlisted_upgrade_is_no_tunnel_at_the_service() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = echo_upgrade_app().await;
    let b_dir = mint(&ca, &ca, REVIEWS);
    let b = with_identity(Proxy::builder(unrelated_backend()), &b_dir)
        .app(app)
        .start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let a = with_identity(Proxy::builder(reviews_with_echo(b.inbound)), &a_dir).start();
    let (_s, head) = offer_echo_upgrade(a.outbound).await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert!(head.contains("x-weft-error: upstream-protocol"), "{head}");
}
