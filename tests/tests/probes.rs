//! The probe listener (`--probes`, `--app-probes`): the kubelet's view of a
//! meshed pod. Each rewritten probe path reaches the app's own probe on
//! loopback (HTTP, or HTTPS with a certificate nobody could verify) with the
//! listed headers and within the probe's timeout, and answers the app's
//! status; `/ready` is the proxy's readiness; everything else is 404, and
//! the admin pages are not there. A malformed `WEFT_APP_PROBES` stops the
//! proxy at startup with a message naming the fault.

use bytes::Bytes;
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use weft_tests::*;

const BACKEND: &str = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\n\
                       spec:\n  endpoints: [{address: \"127.0.0.1:1\"}]\n";

/// A TLS front for `app` whose certificate names `app.example` (never the
/// loopback address the probe dials); counts completed handshakes.
async fn https_front(app: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let cert = rcgen::generate_simple_self_signed(vec!["app.example".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(weft_mesh::identity::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let count = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                count.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut app) = TcpStream::connect(app).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut app).await;
                }
            });
        }
    });
    (addr, handshakes)
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn probes_reach_the_app_and_nothing_else() {
    let app = Upstream::start("web").await;
    let (https, handshakes) = https_front(app.addr).await;
    let (port, tls_port, down) = (app.addr.port(), https.port(), closed_port().await);
    let app_probes = serde_json::json!({
        "/app-health/web/readyz": {"port": port, "path": "/status/200", "scheme": "HTTP", "timeoutSeconds": 1},
        "/app-health/web/livez": {"port": port, "path": "/status/503"},
        "/app-health/web/startupz": {"port": port, "path": "/headers",
            "headers": [{"name": "X-Probe", "value": "kubelet"}, {"name": "Host", "value": "web.local"}]},
        "/app-health/slow/readyz": {"port": port, "path": "/delay/5000", "timeoutSeconds": 1},
        "/app-health/tls/livez": {"port": tls_port, "path": "/status/200", "scheme": "HTTPS"},
        "/app-health/down/readyz": {"port": down, "path": "/"},
    });
    let p = Proxy::builder(BACKEND)
        .arg("--probes")
        .arg("127.0.0.1:0")
        .env("WEFT_APP_PROBES", app_probes.to_string())
        .start();
    let probes = p.probes.expect("the probe listener's address is logged");
    let url = |path: &str| format!("http://{probes}{path}");
    let kubelet = [("user-agent", "kube-probe/1.36")];

    let r = get(&url("/app-health/web/readyz"), &kubelet).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "web status 200\n".into()));
    let r = get(&url("/app-health/web/livez"), &kubelet).await.unwrap();
    assert_eq!((r.status, r.text()), (503, "web status 503\n".into()));

    // The listed headers, a listed Host replacing the default, the kubelet's User-Agent.
    let r = get(&url("/app-health/web/startupz"), &kubelet)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: serde_json::Value = serde_json::from_slice(&r.body).expect("headers as JSON");
    assert_eq!(seen["x-probe"], "kubelet", "{seen}");
    assert_eq!(seen["host"], "web.local", "{seen}");
    assert_eq!(seen["user-agent"], "kube-probe/1.36", "{seen}");

    // HTTPS without verification: the certificate names app.example.
    let r = get(&url("/app-health/tls/livez"), &kubelet).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "web status 200\n".into()));
    assert_eq!(handshakes.load(Ordering::Relaxed), 1);

    // Within the probe's timeout, else a failure saying so.
    let started = Instant::now();
    let r = get(&url("/app-health/slow/readyz"), &kubelet)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("timed out"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let r = get(&url("/app-health/down/readyz"), &kubelet)
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(r.text().contains("probe of the app failed"), "{}", r.text());

    // The proxy's readiness, and nothing else.
    let r = get(&url("/ready"), &[]).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "ready\n".into()));
    for path in [
        "/",
        "/live",
        "/metrics",
        "/config",
        "/endpoints",
        "/log-level",
        "/app-health/web",
        "/app-health/other/readyz",
        "/app-health/web/readyz/x",
    ] {
        assert_eq!(get(&url(path), &[]).await.unwrap().status, 404, "{path}");
    }
    let mut conn = Conn::open(probes).await.unwrap();
    let post = http::Request::post("/app-health/web/readyz")
        .header("host", "pod")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(conn.send(post).await.unwrap().status, 405);
    // Only the probes that ran reached the app (the slow one included).
    assert_eq!(app.requests(), 5);
}

#[tokio::test]
async fn ready_is_503_until_the_mesh_certificate_arrives() {
    // Mesh mode with a control plane that never answers: no certificate.
    let dir = TempDir::new("probes-ca");
    let ca = weft_mesh::identity::ca::CertificateAuthority::generate("weft.local").unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let nowhere = closed_port().await;
    let p = Proxy::builder("")
        .no_config()
        .arg("--control-plane")
        .arg(format!("https://127.0.0.1:{nowhere}"))
        .arg("--control-plane-ca")
        .arg(ca_file.to_string_lossy())
        .arg("--probes")
        .arg("127.0.0.1:0")
        .start();
    let probes = p.probes.expect("probe listener");
    let r = get(&format!("http://{probes}/ready"), &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "not ready: no mesh certificate yet\n");
    assert_eq!(p.admin_get("/ready").await, (503, r.text()));
}

fn start_failure(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(proxy_bin())
        .args(["run", "--config", "/nonexistent.yaml"])
        .args(["--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run weft-proxy");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_app_probes_stop_the_proxy_at_startup() {
    let probes = [("WEFT_PROBES", "127.0.0.1:0")];
    let (code, err) = start_failure(
        &[
            probes[0],
            (
                "WEFT_APP_PROBES",
                "{\"/app-health/web/readyz\": {\"port\": \"x\"",
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--app-probes is not the expected JSON object"),
        "{err}"
    );
    let (code, err) = start_failure(
        &[
            probes[0],
            (
                "WEFT_APP_PROBES",
                r#"{"/app-health/web/readyz": {"port": 0}}"#,
            ),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("\"/app-health/web/readyz\": port 0"), "{err}");
    // The probes' JSON means nothing without the listener.
    let (code, err) = start_failure(&[], &["--app-probes", "{}"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--probes"), "{err}");
}
