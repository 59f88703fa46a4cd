//! Mesh mode: identity and config from `weft-control-plane`.
//!
//! The proxy generates its key in memory, sends a CSR (with its bootstrap
//! token the first time, with its current certificate afterwards), and
//! renews at a jittered 50–70 % of the certificate's life, keeping the old
//! one until a new one arrives. It then holds a watch open: each snapshot is
//! validated and compiled like a file edit, swapped in, and answered with an
//! ACK, or a NACK with the errors while the previous config keeps serving.
//! When the control plane is away the proxy keeps its config and
//! certificate, and reconnects with jittered backoff.

use crate::proxy::Proxy;
use crate::resilience::backoff;
use crate::snapshot::Snapshot;
use crate::tls::mesh::MeshTls;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use weft_mesh::api::{self, CertificateRequest, CertificateResponse, Hello, WatchDown, WatchUp};
use weft_mesh::config::{self, ConfigErrors};
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::{self as tls, Identity, SpiffeId, TrustBundle};

use weft_mesh::process::lock;

/// Largest snapshot line accepted from the control plane.
const MAX_SNAPSHOT: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(15);

/// Where the control plane is and who this proxy is.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `https://host:port` (the scheme may be left out).
    pub url: String,
    /// The mesh trust anchors, to verify the control plane.
    pub trust: TrustBundle,
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
    pub service: Option<String>,
    /// Proves the workload's identity for its first certificate.
    pub token: Option<String>,
    /// Names this instance in the control plane's list.
    pub name: String,
}

/// A body fed line by line through a channel.
pub struct LinesBody(pub mpsc::Receiver<Bytes>);

impl Body for LinesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pub struct Client {
    settings: Settings,
    authority: String,
    /// The control plane's own SPIFFE ID, verified exactly.
    control_plane: SpiffeId,
    id: SpiffeId,
    /// The snapshot version in force, named when reconnecting.
    held: Mutex<Option<String>>,
    /// Names the app called that the config did not have, asked of the
    /// control plane (and named again when reconnecting).
    wants: Mutex<BTreeSet<String>>,
    /// The open watch's upward channel, to send wants on.
    up: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Counts answers from the control plane (snapshots and settlements),
    /// so a request waiting on a want knows when it has been answered.
    answers: tokio::sync::watch::Sender<u64>,
}

/// How long a request for an unknown name waits for the control plane.
const DISCOVERY_WAIT: Duration = Duration::from_secs(2);
/// Most names one proxy asks for.
const MAX_WANTS: usize = 10_000;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads the PEM trust anchors a proxy verifies the control plane with.
pub fn read_trust(path: &std::path::Path) -> Result<TrustBundle, String> {
    Ok(TrustBundle {
        roots: weft_mesh::identity::read_pem_certs(path)?,
    })
}

impl Client {
    pub fn new(settings: Settings) -> Result<Client, String> {
        let authority = settings
            .url
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(format!(
                "--control-plane {:?}: expected https://host:port",
                settings.url
            ));
        }
        let control_plane = SpiffeId::new(
            &settings.trust_domain,
            api::CONTROL_PLANE_NAMESPACE,
            api::CONTROL_PLANE_SERVICE_ACCOUNT,
        )
        .map_err(|e| e.to_string())?;
        let id = SpiffeId::new(
            &settings.trust_domain,
            &settings.namespace,
            &settings.service_account,
        )
        .map_err(|e| e.to_string())?;
        Ok(Client {
            settings,
            authority,
            control_plane,
            id,
            held: Mutex::new(None),
            wants: Mutex::new(BTreeSet::new()),
            up: Mutex::new(None),
            answers: tokio::sync::watch::channel(0).0,
        })
    }

    /// An HTTP/2 connection to the control plane, presenting `identity` if given.
    async fn connect(
        &self,
        identity: Option<&Identity>,
    ) -> Result<
        http2::SendRequest<http_body_util::Either<http_body_util::Full<Bytes>, LinesBody>>,
        String,
    > {
        let config = match identity {
            Some(id) => tls::client_config(id, &self.settings.trust, self.control_plane.clone()),
            None => tls::client_config_anonymous(&self.settings.trust, self.control_plane.clone()),
        }
        .map_err(|e| e.to_string())?;
        let work = async {
            let tcp = tokio::net::TcpStream::connect(self.authority.as_str())
                .await
                .map_err(|e| format!("connect {}: {e}", self.authority))?;
            let _ = tcp.set_nodelay(true);
            // The verifier checks the SPIFFE ID, not the name.
            let name = rustls::pki_types::ServerName::try_from("control-plane.weft")
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with the control plane: {e}"))?;
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP/2 with the control plane: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(tx)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, work)
            .await
            .map_err(|_| format!("connect {}: timed out", self.authority))?
    }

    /// Asks for a certificate: with the bootstrap token, or (renewal) with
    /// the current one. The key is made here and never leaves the process.
    pub async fn certificate(
        &self,
        current: Option<&MeshTls>,
    ) -> Result<(MeshTls, SystemTime, SystemTime), String> {
        let key = WorkloadKey::generate(&self.id).map_err(|e| e.to_string())?;
        let mut tx = self.connect(current.map(MeshTls::identity)).await?;
        let body = serde_json::to_vec(&CertificateRequest {
            csr: key.csr_pem().to_string(),
        })
        .map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "https://{}{}",
                self.authority,
                api::CERTIFICATE_PATH
            ))
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Either::Left(http_body_util::Full::new(
                Bytes::from(body),
            )))
            .map_err(|e| e.to_string())?;
        if current.is_none() {
            let token = self
                .settings
                .token
                .as_deref()
                .ok_or("no bootstrap token (--bootstrap-token) for a first certificate")?;
            let v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the bootstrap token has characters a header cannot carry")?;
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), 1024 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "the control plane refused a certificate ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let r: CertificateResponse =
            serde_json::from_slice(&body).map_err(|e| format!("certificate response: {e}"))?;
        let chain = CertificateDer::pem_slice_iter(r.chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
        let roots = CertificateDer::pem_slice_iter(r.roots.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("trust bundle: {e}"))?;
        let mesh = MeshTls::new(key.into_identity(chain), TrustBundle { roots })
            .map_err(|e| e.to_string())?;
        if mesh.id != self.id {
            return Err(format!(
                "the control plane issued {} instead of {}",
                mesh.id, self.id
            ));
        }
        // The life is counted from now, not from a back-dated notBefore
        // (CAs back-date for clock skew), so renewal lands at 50-70 % of
        // the time actually left.
        let _ = r.not_before;
        Ok((
            mesh,
            SystemTime::now(),
            UNIX_EPOCH + Duration::from_secs(r.not_after),
        ))
    }

    /// One watch, until the stream ends or fails: apply each snapshot, ACK or NACK it.
    async fn watch_once(
        &self,
        proxy: &Arc<Proxy>,
        on_apply: &(dyn Fn(&Arc<Snapshot>) + Send + Sync),
    ) -> Result<(), String> {
        let mesh = proxy.mesh.load_full().ok_or("no certificate yet")?;
        let mut tx = self.connect(Some(mesh.identity())).await?;
        let (up, up_rx) = mpsc::channel::<Bytes>(8);
        let hello = WatchUp::Hello(Hello {
            name: self.settings.name.clone(),
            service: self.settings.service.clone(),
            version: lock(&self.held).clone(),
            wants: lock(&self.wants).iter().cloned().collect(),
        });
        up.send(api::line(&hello))
            .await
            .map_err(|_| "watch closed")?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{}{}", self.authority, api::WATCH_PATH))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(http_body_util::Either::Right(LinesBody(up_rx)))
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("watch refused: {}", resp.status()));
        }
        tracing::info!(control_plane = %self.authority, "watching the control plane");
        *lock(&self.up) = Some(up.clone());
        let mut body = resp.into_body();
        let mut lines = api::LineReader::new(MAX_SNAPSHOT);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("watch: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for msg in lines.push::<WatchDown>(&data)? {
                let snap = match msg {
                    WatchDown::Snapshot(s) => s,
                    WatchDown::Settled { .. } => {
                        self.answers.send_modify(|n| *n += 1);
                        continue;
                    }
                };
                let answer = match self.apply(proxy, &snap) {
                    Ok(()) => {
                        on_apply(&proxy.snapshot.load_full());
                        WatchUp::Ack {
                            version: snap.version,
                        }
                    }
                    Err(e) => WatchUp::Nack {
                        version: snap.version,
                        reason: e.to_string(),
                    },
                };
                self.answers.send_modify(|n| *n += 1);
                up.send(api::line(&answer))
                    .await
                    .map_err(|_| "watch closed")?;
            }
        }
        Err("the control plane ended the watch".into())
    }

    /// Asks the control plane about a name the app called and the config
    /// does not have; true once it has answered (the snapshot then has the
    /// name if it exists). False at once for a name already asked about, or
    /// when no watch is open.
    pub async fn discover(&self, authority: &str) -> bool {
        let name = authority.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.len() > 300 {
            return false;
        }
        {
            let mut wants = lock(&self.wants);
            if wants.contains(&name) || wants.len() >= MAX_WANTS {
                return false;
            }
            wants.insert(name.clone());
        }
        let Some(up) = lock(&self.up).clone() else {
            return false;
        };
        let mut answers = self.answers.subscribe();
        answers.borrow_and_update();
        let want = WatchUp::Want { names: vec![name] };
        if up.send(api::line(&want)).await.is_err() {
            return false;
        }
        tokio::time::timeout(DISCOVERY_WAIT, answers.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn apply(&self, proxy: &Proxy, snap: &api::Snapshot) -> Result<(), ConfigErrors> {
        let source = format!("control-plane {} version {}", self.authority, snap.version);
        let result = config::load_sources(vec![(source.clone(), snap.yaml.clone())])
            .and_then(|set| crate::reload::apply_set(proxy, set));
        let label = if result.is_ok() {
            "applied"
        } else {
            "rejected"
        };
        proxy
            .metrics
            .config_reloads
            .get_or_create(&crate::telemetry::metrics::ResultLabels { result: label })
            .inc();
        match result {
            Ok(local) => {
                tracing::info!(version = %snap.version, local, "config from the control plane applied");
                *lock(&self.held) = Some(snap.version.clone());
                if let Ok(mut st) = proxy.status.lock() {
                    st.source = source;
                    st.last_error = None;
                }
                Ok(())
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(version = %snap.version, error = %e, "snapshot rejected; the previous config keeps serving");
                }
                if let Ok(mut st) = proxy.status.lock() {
                    st.last_error = Some(errors.to_string());
                    st.rejected += 1;
                }
                Err(errors)
            }
        }
    }
}

/// Runs after each applied snapshot (starts DNS watches and health checks
/// for new backends).
pub type OnApply = Arc<dyn Fn(&Arc<Snapshot>) + Send + Sync>;

/// The renewal window in percent of the lifetime: a MeshConfig's
/// `rotationPercent: [low, high]` from the snapshot in force, else 50–70.
fn rotation_window(proxy: &Proxy) -> (f64, f64) {
    let snap = proxy.snapshot.load();
    let set = snap
        .config
        .mesh_configs
        .iter()
        .find_map(|m| m.spec.rotation_percent.clone());
    match set.as_deref() {
        // Validation keeps it to 1 <= low <= high <= 95.
        Some([lo, hi]) => (*lo as f64 / 100.0, *hi as f64 / 100.0),
        _ => (0.5, 0.7),
    }
}

/// When to renew: a uniformly random point in `window` of the lifetime.
fn renewal_at(not_before: SystemTime, not_after: SystemTime, window: (f64, f64)) -> SystemTime {
    let life = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::from_secs(60));
    let frac = window.0 + rand::random::<f64>() * (window.1 - window.0);
    not_before + life.mul_f64(frac)
}

/// Obtains the first certificate (retrying until it comes), then renews it
/// for the life of the process. Once the first one is in hand, starts the
/// watch.
pub async fn run(client: Arc<Client>, proxy: Arc<Proxy>, on_apply: OnApply) {
    let mut attempt = 0;
    let mut expiry;
    loop {
        match client.certificate(None).await {
            Ok((mesh, nb, na)) => {
                tracing::info!(identity = %mesh.id, expires = unix(na), "mesh certificate obtained: mTLS on");
                proxy.metrics.cert_expiry.set(unix(na) as i64);
                proxy.mesh.store(Some(Arc::new(mesh)));
                expiry = (nb, na);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "no certificate yet; retrying");
                tokio::time::sleep(backoff::jittered(attempt, RETRY_BASE, RETRY_MAX)).await;
                attempt += 1;
            }
        }
    }
    {
        let (client, proxy, on_apply) = (client.clone(), proxy.clone(), on_apply.clone());
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let started = tokio::time::Instant::now();
                if let Err(e) = client.watch_once(&proxy, &*on_apply).await {
                    tracing::warn!(error = %e, "control plane watch lost; serving the last good config");
                }
                if started.elapsed() > Duration::from_secs(10) {
                    attempt = 0;
                }
                tokio::time::sleep(backoff::jittered(attempt, RETRY_BASE, RETRY_MAX)).await;
                attempt += 1;
            }
        });
    }
    loop {
        let at = renewal_at(expiry.0, expiry.1, rotation_window(&proxy));
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let mut attempt = 0;
        loop {
            let current = proxy.mesh.load_full();
            match client.certificate(current.as_deref()).await {
                Ok((mesh, nb, na)) => {
                    tracing::info!(identity = %mesh.id, expires = unix(na), "mesh certificate renewed");
                    proxy.metrics.cert_expiry.set(unix(na) as i64);
                    proxy.mesh.store(Some(Arc::new(mesh)));
                    expiry = (nb, na);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "certificate renewal failed; keeping the current one");
                    tokio::time::sleep(backoff::jittered(
                        attempt,
                        RETRY_BASE * 5,
                        Duration::from_secs(60),
                    ))
                    .await;
                    attempt += 1;
                }
            }
        }
    }
}
