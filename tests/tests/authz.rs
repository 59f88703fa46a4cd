//! Inbound strict mode and AuthorizationPolicy, with two real sidecars:
//! A (identity `frontend`) calls B (fronting service `reviews`, `--service
//! reviews`) over mTLS; B enforces the policies selecting `reviews`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_tests::mesh::{mint, with_identity};
use weft_tests::*;

const FRONTEND: &str = "spiffe://weft.local/ns/default/sa/frontend";
const REVIEWS: &str = "spiffe://weft.local/ns/default/sa/reviews";
const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A's config: Backend `reviews` at B's inbound, expected to be `reviews`.
fn reviews_backend(endpoint: SocketAddr) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews}}\nspec:\n  protocol: http\n  port: 8080\n  endpoints: [{{address: \"{endpoint}\", identity: \"{REVIEWS}\"}}]\n"
    )
}

/// B's config: an unrelated Backend plus `extra` documents.
fn b_config(extra: &str) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: unused}}\nspec:\n  protocol: http\n  port: 8080\n  endpoints: [{{address: \"127.0.0.1:9\"}}]\n{extra}"
    )
}

/// An AuthorizationPolicy document on service `reviews`.
fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  action: {action}\n  rules:\n{rules}"
    )
}

struct Mesh {
    app: Upstream,
    a: Proxy,
    b: Proxy,
    _dirs: Vec<TempDir>,
}

/// A (frontend) → B (reviews, with `b_yaml` and `b_args`) → app.
async fn mesh(b_yaml: &str, b_args: &[&str]) -> Mesh {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let app = Upstream::start("reviews-app").await;
    let b_dir = mint(&ca, &ca, REVIEWS);
    let mut b = with_identity(Proxy::builder(b_config(b_yaml)), &b_dir)
        .app(app.addr)
        .arg("--service")
        .arg("reviews");
    for a in b_args {
        b = b.arg(*a);
    }
    let b = b.start();
    let a_dir = mint(&ca, &ca, FRONTEND);
    let a = with_identity(Proxy::builder(reviews_backend(b.inbound)), &a_dir).start();
    Mesh {
        app,
        a,
        b,
        _dirs: vec![a_dir, b_dir],
    }
}

/// `method path` via A to B.
async fn call(m: &Mesh, method: &str, path: &str) -> Resp {
    let mut c = Conn::open(m.a.outbound).await.expect("connect to A");
    within(
        "request via A",
        c.send(
            Request::builder()
                .method(method)
                .uri(path)
                .header("host", "reviews")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .expect("request via A")
}

fn assert_forbidden(r: &Resp) {
    assert_eq!(r.status, 403, "{} {:?}", r.text(), r.headers);
    assert_eq!(r.header("x-weft-error"), Some("forbidden"));
    assert_eq!(r.text().lines().count(), 1, "{}", r.text());
}

async fn forbidden_count(b: &Proxy) -> f64 {
    b.metric("weft_inbound_rejected_total", &["reason=\"forbidden\""])
        .await
}

#[tokio::test]
async fn allow_policy_for_the_caller_lets_it_through() {
    let m = mesh(
        &policy(
            "frontend-in",
            "Allow",
            &format!("    - from: {{identities: [\"{FRONTEND}\"]}}\n"),
        ),
        &[],
    )
    .await;
    let r = call(&m, "GET", "/headers").await;
    assert_eq!(r.status, 200, "{} {:?}", r.text(), r.headers);
    assert_eq!(r.header("x-upstream"), Some("reviews-app"));
    assert_eq!(forbidden_count(&m.b).await, 0.0);
}

#[tokio::test]
async fn allow_policy_for_another_identity_forbids_the_caller() {
    let m = mesh(
        &policy(
            "ratings-only",
            "Allow",
            "    - from: {identities: [\"spiffe://weft.local/ns/default/sa/ratings\"]}\n",
        ),
        &[],
    )
    .await;
    let r = call(&m, "GET", "/headers").await;
    assert_forbidden(&r);
    assert_eq!(m.app.requests(), 0);
    assert_eq!(forbidden_count(&m.b).await, 1.0);
}

#[tokio::test]
async fn deny_wins_over_allow() {
    let yaml = format!(
        "{}{}",
        policy(
            "allow-default",
            "Allow",
            "    - from: {identities: [\"spiffe://weft.local/ns/default/*\"]}\n",
        ),
        policy(
            "deny-frontend",
            "Deny",
            &format!("    - from: {{identities: [\"{FRONTEND}\"]}}\n"),
        )
    );
    let m = mesh(&yaml, &[]).await;
    assert_forbidden(&call(&m, "GET", "/headers").await);
    assert_eq!(m.app.requests(), 0);
}

#[tokio::test]
async fn method_and_path_rules() {
    let m = mesh(
        &policy(
            "public-reads",
            "Allow",
            &format!(
                "    - from: {{identities: [\"{FRONTEND}\"]}}\n      to: {{methods: [GET], paths: [\"/public\", \"/docs/*\"]}}\n"
            ),
        ),
        &[],
    )
    .await;
    let r = call(&m, "GET", "/public").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&m, "GET", "/docs/a/b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_forbidden(&call(&m, "POST", "/public").await);
    assert_forbidden(&call(&m, "GET", "/private").await);
    assert_eq!(m.app.requests(), 2);
    assert_eq!(forbidden_count(&m.b).await, 2.0);
}

#[tokio::test]
async fn namespace_rule() {
    let m = mesh(
        &policy(
            "from-default",
            "Allow",
            "    - from: {namespaces: [default]}\n",
        ),
        &[],
    )
    .await;
    assert_eq!(call(&m, "GET", "/headers").await.status, 200);
    // A plaintext caller has no identity, hence no namespace.
    let r = within(
        "plaintext to B",
        get(&format!("http://{}/headers", m.b.inbound), &[]),
    )
    .await
    .expect("plaintext to B");
    assert_forbidden(&r);

    let m = mesh(
        &policy("from-prod", "Allow", "    - from: {namespaces: [prod]}\n"),
        &[],
    )
    .await;
    assert_forbidden(&call(&m, "GET", "/headers").await);
}

/// Sends a plaintext HTTP request to `addr`; returns what came back before
/// the connection closed.
async fn raw_plaintext(addr: SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(b"GET /headers HTTP/1.1\r\nhost: reviews\r\n\r\n")
        .await;
    let mut got = Vec::new();
    let _ = within("B closes the connection", s.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn strict_mode_refuses_plaintext_and_keeps_mtls() {
    let m = mesh("", &["--inbound-mode", "strict"]).await;
    let got = raw_plaintext(m.b.inbound).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(m.app.requests(), 0);
    let rejected =
        m.b.metric("weft_inbound_rejected_total", &["reason=\"plaintext\""])
            .await;
    assert_eq!(rejected, 1.0);

    let r = call(&m, "GET", "/headers").await;
    assert_eq!(r.status, 200, "{} {:?}", r.text(), r.headers);
    assert_eq!(m.app.requests(), 1);
}

#[tokio::test]
async fn mesh_config_strict_overrides_the_flag() {
    let yaml = "---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh}\nspec:\n  defaultInboundMode: Strict\n";
    let m = mesh(yaml, &["--inbound-mode", "permissive"]).await;
    assert!(raw_plaintext(m.b.inbound).await.is_empty());
    assert_eq!(m.app.requests(), 0);
    assert_eq!(call(&m, "GET", "/headers").await.status, 200);
}

#[tokio::test]
async fn permissive_mode_accepts_plaintext() {
    let m = mesh("", &[]).await;
    let r = within(
        "plaintext to B",
        get(&format!("http://{}/headers", m.b.inbound), &[]),
    )
    .await
    .expect("plaintext to B");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(call(&m, "GET", "/headers").await.status, 200);
    assert_eq!(m.app.requests(), 2);
}

#[tokio::test]
async fn strict_without_identity_is_refused_at_startup() {
    let dir = TempDir::new("strict");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, b_config("")).unwrap();
    let out = std::process::Command::new(proxy_bin())
        .args(["run", "--config"])
        .arg(&config)
        .args([
            "--inbound-mode",
            "strict",
            "--outbound",
            "127.0.0.1:0",
            "--inbound",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run weft-proxy");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--identity-dir"), "{err}");
}

/// A reload that would turn on Strict without an identity is rejected with
/// its position, and inbound keeps serving.
#[tokio::test]
async fn strict_by_reload_without_identity_is_rejected() {
    let app = Upstream::start("app").await;
    let base = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: x}\nspec:\n  endpoints: []\n";
    let p = Proxy::builder(base).app(app.addr).start();
    let strict = format!("{base}---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n  defaultInboundMode: Strict\n");
    p.write_config(&strict);
    let config = eventually(
        "the rejection to show",
        std::time::Duration::from_secs(3),
        || async {
            let (_, body) = p.admin_get("/config").await;
            body.contains("REJECTED").then_some(body)
        },
    )
    .await;
    assert!(config.contains("spec.defaultInboundMode"), "{config}");
    let r = get(&format!("http://{}/", p.inbound), &[]).await.unwrap();
    assert_eq!(r.status, 200, "inbound still serves plaintext");
}
