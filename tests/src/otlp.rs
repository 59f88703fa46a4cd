//! A real OTLP trace receiver for tests (`peers/otlp_receiver.py`: the
//! OpenTelemetry project's protobuf definitions with grpcio, gRPC and
//! HTTP/protobuf) and the helpers the trace tests share.

use crate::client::{Conn, Resp};
use crate::{peers_dir, ProxyBuilder};
use bytes::Bytes;
use http_body_util::Full;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

pub const STEP: Duration = Duration::from_secs(15);

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Whether the receiver's Python modules are installed (`opentelemetry-proto`
/// and `grpcio`); prints why the test skips when not (and fails in CI).
pub fn receiver_available() -> bool {
    crate::require_python_module("opentelemetry.proto") && crate::require_python_module("grpc")
}

/// The OTLP receiver process and the spans it has printed.
pub struct Receiver {
    child: Option<tokio::process::Child>,
    pub grpc: u16,
    pub http: u16,
    pub spans: Arc<Mutex<Vec<serde_json::Value>>>,
    pub arrived: Arc<Notify>,
    /// `http`, or `https` for a receiver started with TLS.
    scheme: &'static str,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_with(&[]).await
    }

    /// A receiver speaking TLS only, with the PEM certificate and key given;
    /// with `client_ca` it requires a client certificate signed by it.
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Receiver {
        let mut args = vec!["--tls".as_ref(), cert.as_os_str(), key.as_os_str()];
        if let Some(ca) = client_ca {
            args.extend(["--client-ca".as_ref(), ca.as_os_str()]);
        }
        Receiver::start_with(&args).await
    }

    async fn start_with(args: &[&std::ffi::OsStr]) -> Receiver {
        let mut child = tokio::process::Command::new("python3")
            .arg(peers_dir().join("otlp_receiver.py"))
            .arg("server")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn python3");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = within("receiver READY", lines.next_line())
            .await
            .unwrap()
            .expect("receiver exited before READY");
        let ports: Vec<u16> = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected first line {ready:?}"))
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        {
            let (spans, arrived) = (spans.clone(), arrived.clone());
            tokio::spawn(async move {
                while let Ok(Some(l)) = lines.next_line().await {
                    let v: serde_json::Value = serde_json::from_str(&l).expect("span JSON");
                    spans.lock().unwrap().push(v);
                    arrived.notify_waiters();
                }
            });
        }
        Receiver {
            child: Some(child),
            grpc: ports[0],
            http: ports[1],
            spans,
            arrived,
            scheme: if args.is_empty() { "http" } else { "https" },
        }
    }

    /// The `OTEL_*` environment of a proxy exporting here over `protocol`.
    pub fn env(&self, protocol: &str) -> Vec<(String, String)> {
        let port = if protocol == "grpc" {
            self.grpc
        } else {
            self.http
        };
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("{}://127.0.0.1:{port}", self.scheme),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "20".into()),
        ]
    }

    /// Waits until a span matching `f` has arrived; returns it.
    pub async fn span(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        within(what, async {
            loop {
                let notified = self.arrived.notified();
                if let Some(s) = self.spans.lock().unwrap().iter().find(|s| f(s)) {
                    return s.clone();
                }
                notified.await;
            }
        })
        .await
    }

    pub fn all(&self) -> Vec<serde_json::Value> {
        self.spans.lock().unwrap().clone()
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}

pub fn with_env(mut b: ProxyBuilder, env: &[(String, String)]) -> ProxyBuilder {
    for (k, v) in env {
        b = b.env(k, v);
    }
    b
}

pub fn request(host: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder()
        .uri(format!("http://{host}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

pub fn headers_json(r: &Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.text()))
}

pub fn backend(name: &str, endpoints: &[String], policy: &str) -> String {
    let mut y = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  protocol: http\n  port: 8080\n  endpoints: [{}]\n",
        endpoints.join(", ")
    );
    if !policy.is_empty() {
        y.push_str(&format!(
            "---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\nspec:\n  targetRef: {{kind: Backend, name: {name}}}\n{policy}"
        ));
    }
    y
}

/// Sends GET /headers to `app` with `headers`; what the app received.
pub async fn send(c: &mut Conn, headers: &[(&str, &str)]) -> serde_json::Value {
    let r = within("request", c.send(request("app:8080", "/headers", headers)))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    headers_json(&r)
}

/// PEM files for an https collector, in a temporary directory: `ca.pem`,
/// `server.pem` + `server-key.pem` (for 127.0.0.1, signed by the CA),
/// `client.pem` + `client-key.pem` (common name `weft-sidecar`, signed by
/// the CA), and `other-ca.pem`, a CA that signed none of them.
pub struct CollectorPki {
    pub dir: crate::TempDir,
}

impl CollectorPki {
    pub fn new() -> CollectorPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, SanType,
        };
        let dir = crate::TempDir::new("otlp-pki");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let issuer = ca("otlp test CA");
        write("ca.pem", issuer.pem());
        write("other-ca.pem", ca("another CA").pem());
        let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose, server: bool| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages.push(usage);
            if server {
                params
                    .subject_alt_names
                    .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (cert, key) = leaf("collector", ExtendedKeyUsagePurpose::ServerAuth, true);
        write("server.pem", cert);
        write("server-key.pem", key);
        let (cert, key) = leaf("weft-sidecar", ExtendedKeyUsagePurpose::ClientAuth, false);
        write("client.pem", cert);
        write("client-key.pem", key);
        CollectorPki { dir }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `OTEL_EXPORTER_OTLP_<var>` naming one of the files.
    pub fn env(&self, var: &str, name: &str) -> (String, String) {
        (
            format!("OTEL_EXPORTER_OTLP_{var}"),
            self.path(name).display().to_string(),
        )
    }
}

impl Default for CollectorPki {
    fn default() -> Self {
        CollectorPki::new()
    }
}
