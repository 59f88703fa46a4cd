//! `weft-control-plane serve`: the certificate authority and the watch
//! stream over HTTP/2 + TLS 1.3 (see [`weft_mesh::api`]); the admin
//! endpoint listing every connected proxy with the version it runs and its
//! last NACK, is in `admin.rs`.
//!
//! Stateless: the truth is the files (and the CA directory). Versions are
//! content hashes, so two instances serving the same files hand proxies the
//! same snapshots, and a restart loses nothing: proxies reconnect and name
//! the version they hold.

use crate::ca::CertificateAuthority;
use crate::scope::Catalog;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use weft_mesh::api::{self, CertificateRequest, CertificateResponse, WatchDown, WatchUp};
use weft_mesh::config::files::FileWatch;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::token::Tokens;
use weft_mesh::identity::SpiffeId;

pub(crate) use weft_mesh::process::lock;

/// Largest request body accepted on `/v1/certificate` and per watch line.
const MAX_MESSAGE: usize = 256 * 1024;
/// Changes settle this long before they are pushed (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The resources in force: the files, validated with the proxy's own
/// loader, the version derived from their text, and the catalog each
/// proxy's scoped snapshot is cut from.
pub struct Resources {
    pub version: String,
    pub files: Vec<String>,
    pub catalog: Catalog,
}

/// What the admin endpoint shows of one connected proxy.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProxyStatus {
    pub name: String,
    pub identity: String,
    pub service: Option<String>,
    pub namespace: String,
    pub peer: String,
    pub connected_at: u64,
    /// Names it asked for; the ones that resolve are in its snapshot.
    pub wants: Vec<String>,
    /// The resources version its snapshot was last cut from.
    pub resources: Option<String>,
    /// Its snapshot's version now, the last sent, and the last acknowledged.
    pub current: Option<String>,
    pub sent: Option<String>,
    pub acked: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Nack {
    pub version: String,
    pub reason: String,
    pub at: u64,
}

#[derive(Default)]
pub struct Counters {
    pub pushes: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub certificates: AtomicU64,
    pub certificate_denials: AtomicU64,
    pub rejected_reloads: AtomicU64,
}

pub struct ControlPlane {
    pub ca: CertificateAuthority,
    pub tokens: Tokens,
    pub trust_domain: String,
    pub cert_ttl: Duration,
    pub resources: watch::Sender<Arc<Resources>>,
    /// Why the files were last rejected (the previous resources still serve).
    pub last_error: Mutex<Option<String>>,
    pub proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    next_id: AtomicU64,
    pub counters: Counters,
    acceptor: ArcSwap<tokio_rustls::TlsAcceptor>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads and validates the files. The version is a hash of their text (the
/// first 16 hex digits of SHA-256), in path order.
pub fn load(paths: &[PathBuf]) -> Result<Resources, String> {
    let set = weft_mesh::config::load_paths(paths).map_err(|e| e.to_string())?;
    let mut all = String::new();
    let mut files = Vec::new();
    for (name, text) in &set.sources {
        files.push(name.clone());
        all.push_str(text);
        all.push('\0');
    }
    Ok(Resources {
        version: crate::scope::version_of(&all),
        files,
        catalog: Catalog::new(set),
    })
}

impl ControlPlane {
    pub fn new(
        ca: CertificateAuthority,
        trust_domain: String,
        cert_ttl: Duration,
        initial: Resources,
    ) -> Result<Arc<ControlPlane>, String> {
        let tokens = Tokens::from_ca_key(ca.key_pem());
        let acceptor = server_acceptor(&ca, &trust_domain)?;
        Ok(Arc::new(ControlPlane {
            tokens,
            trust_domain,
            cert_ttl,
            resources: watch::channel(Arc::new(initial)).0,
            last_error: Mutex::new(None),
            proxies: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            acceptor: ArcSwap::from_pointee(acceptor),
            ca,
        }))
    }

    /// Re-issues the serving certificate (it is as short-lived as any).
    pub fn refresh_serving_cert(&self) -> Result<(), String> {
        self.acceptor
            .store(Arc::new(server_acceptor(&self.ca, &self.trust_domain)?));
        Ok(())
    }

    fn identity_for(&self, namespace: &str, sa: &str) -> Result<SpiffeId, String> {
        SpiffeId::new(&self.trust_domain, namespace, sa).map_err(|e| e.to_string())
    }
}

/// TLS 1.3 server config presenting the control plane's own SPIFFE ID, with
/// client certificates optional (bootstrap) but verified when sent.
fn server_acceptor(
    ca: &CertificateAuthority,
    trust_domain: &str,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let id = SpiffeId::new(
        trust_domain,
        api::CONTROL_PLANE_NAMESPACE,
        api::CONTROL_PLANE_SERVICE_ACCOUNT,
    )
    .map_err(|e| e.to_string())?;
    let key = WorkloadKey::generate(&id).map_err(|e| e.to_string())?;
    let issued = ca.sign_csr(key.csr_pem(), &id).map_err(|e| e.to_string())?;
    let identity = key.into_identity(vec![issued.der]);
    let config = weft_mesh::identity::server_config_optional_client(&identity, &ca.trust_bundle())
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(config))
}

/// Watches the files; validated changes replace the resources (after a
/// short debounce), rejected ones are logged and shown on `/config`.
pub async fn watch_files(cp: Arc<ControlPlane>, paths: Vec<PathBuf>) {
    let mut files = FileWatch::new(&paths);
    loop {
        files.changed().await;
        tokio::time::sleep(DEBOUNCE).await;
        files.rebase();
        match load(&paths) {
            Ok(r) => {
                *lock(&cp.last_error) = None;
                if r.version != cp.resources.borrow().version {
                    tracing::info!(version = %r.version, "resources changed; pushing to proxies");
                    drop(cp.resources.send_replace(Arc::new(r)));
                    // The previous version's parse trees and compiled
                    // snapshots are freed once every watch has moved on;
                    // hand the freed pages back to the system then, or RSS
                    // keeps the high-water mark of every edit.
                    tokio::spawn(async {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        release_free_memory();
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "config rejected; proxies keep the previous version");
                cp.counters.rejected_reloads.fetch_add(1, Ordering::Relaxed);
                *lock(&cp.last_error) = Some(e);
            }
        }
    }
}

/// Returns free heap pages to the system (glibc keeps them otherwise).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A response body: whole, or lines pushed through a channel (the watch).
pub enum CpBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for CpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            CpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            CpBody::Stream(rx) => rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, CpBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            CpBody::Stream(_) => SizeHint::default(),
        }
    }
}

pub fn text(status: StatusCode, body: impl Into<String>) -> Response<CpBody> {
    let mut r = Response::new(CpBody::Full(Some(Bytes::from(body.into()))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<CpBody> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(CpBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the API on `listener` (TLS; HTTP/2, or HTTP/1.1 for curl).
pub async fn serve_api(cp: Arc<ControlPlane>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let cp = cp.clone();
        tokio::spawn(async move {
            let acceptor = cp.acceptor.load_full();
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = weft_mesh::identity::peer_identity(tls.get_ref().1);
            let svc = service_fn(move |req| {
                let cp = cp.clone();
                let identity = identity.clone();
                async move { Ok::<_, Infallible>(handle_api(&cp, req, identity, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

async fn handle_api(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: Option<String>,
    peer: SocketAddr,
) -> Response<CpBody> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, api::CERTIFICATE_PATH) => certificate(cp, req, identity).await,
        (&Method::POST, api::WATCH_PATH) => match identity {
            Some(id) => start_watch(cp, req, id, peer),
            None => text(
                StatusCode::UNAUTHORIZED,
                "the watch needs a mesh certificate (get one from /v1/certificate)\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "weft-control-plane: POST /v1/certificate, POST /v1/watch\n",
        ),
    }
}

/// Who is asking for a certificate: the holder of a mesh certificate (a
/// renewal, for the same identity), or the workload a bootstrap token names.
fn authenticate(
    cp: &ControlPlane,
    req: &Request<Incoming>,
    identity: Option<String>,
) -> Result<SpiffeId, String> {
    if let Some(id) = identity {
        return SpiffeId::parse(&id).map_err(|e| e.to_string());
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("no client certificate and no bootstrap token (Authorization: Bearer)")?;
    let claims = cp.tokens.verify(token.trim()).map_err(str::to_string)?;
    cp.identity_for(&claims.namespace, &claims.service_account)
}

async fn certificate(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: Option<String>,
) -> Response<CpBody> {
    let id = match authenticate(cp, &req, identity) {
        Ok(id) => id,
        Err(e) => {
            cp.counters
                .certificate_denials
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "certificate request refused");
            return text(StatusCode::FORBIDDEN, format!("{e}\n"));
        }
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
    };
    let creq: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid request: {e}\n")),
    };
    // The CA signs only the proven identity; a CSR asking for another one
    // is refused outright rather than quietly given what was proven.
    if let Some(asked) = requested_identity(&creq.csr) {
        if asked != id.as_str() {
            cp.counters
                .certificate_denials
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(proven = %id, %asked, "certificate request refused: identity mismatch");
            return text(
                StatusCode::FORBIDDEN,
                format!("this caller is {id}; it cannot have a certificate for {asked}\n"),
            );
        }
    }
    // A MeshConfig's certificateLifetime wins over the flag.
    let ttl = cp
        .resources
        .borrow()
        .catalog
        .certificate_lifetime()
        .unwrap_or(cp.cert_ttl);
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(60);
    let not_after = now + ttl;
    match cp
        .ca
        .sign_csr_with_validity(&creq.csr, &id, not_before, not_after)
    {
        Ok(issued) => {
            cp.counters.certificates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(identity = %id, ?ttl, "certificate issued");
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            json(
                StatusCode::OK,
                &CertificateResponse {
                    chain: issued.pem,
                    roots: cp.ca.cert_pem().to_string(),
                    not_before: secs(not_before),
                    not_after: secs(not_after),
                },
            )
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("cannot sign the CSR: {e}\n"),
        ),
    }
}

/// The SPIFFE ID a CSR asks for (its URI SAN), if it names one.
fn requested_identity(csr_pem: &str) -> Option<String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).ok()?;
    csr.params.subject_alt_names.iter().find_map(|s| match s {
        rcgen::SanType::URI(u) => Some(u.as_str().to_string()),
        _ => None,
    })
}

fn start_watch(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: String,
    peer: SocketAddr,
) -> Response<CpBody> {
    let id = cp.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let cp = cp.clone();
    tokio::spawn(async move {
        run_watch(&cp, id, req.into_body(), tx, identity, peer).await;
        lock(&cp.proxies).remove(&id);
    });
    let mut r = Response::new(CpBody::Stream(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// Most names one proxy may ask for (bounds a misbehaving proxy).
const MAX_WANTS: usize = 10_000;

/// One proxy's watch: read its hello, then push its scoped snapshot on
/// every change (of the files, or of the names it wants), record its ACKs
/// and NACKs, until either side goes away.
async fn run_watch(
    cp: &ControlPlane,
    id: u64,
    mut body: Incoming,
    tx: mpsc::Sender<Bytes>,
    identity: String,
    peer: SocketAddr,
) {
    let namespace = SpiffeId::parse(&identity)
        .map(|i| i.namespace().to_string())
        .unwrap_or_else(|_| "default".into());
    let mut lines = api::LineReader::new(MAX_MESSAGE);
    let mut held: Option<String> = None;
    let mut hello: Option<api::Hello> = None;
    let mut wants: BTreeSet<String> = BTreeSet::new();
    let mut resources = cp.resources.subscribe();
    // Something changed (files or wants) since the last push decision.
    let mut dirty = false;
    // A want arrived: answer even if nothing changes.
    let mut settle = false;
    loop {
        if dirty {
            dirty = false;
            let current = resources.borrow_and_update().clone();
            let service = hello.as_ref().and_then(|h| h.service.as_deref());
            let scoped = current.catalog.scope(&namespace, service, &wants);
            if let Some(p) = lock(&cp.proxies).get_mut(&id) {
                p.resources = Some(current.version.clone());
                p.current = Some(scoped.version.clone());
                p.wants = wants.iter().cloned().collect();
            }
            let msg = if held.as_deref() != Some(scoped.version.as_str()) {
                cp.counters.pushes.fetch_add(1, Ordering::Relaxed);
                held = Some(scoped.version.clone());
                if let Some(p) = lock(&cp.proxies).get_mut(&id) {
                    p.sent = Some(scoped.version.clone());
                }
                Some(WatchDown::Snapshot(api::Snapshot {
                    version: scoped.version,
                    yaml: scoped.yaml,
                }))
            } else if settle {
                Some(WatchDown::Settled {
                    version: scoped.version,
                })
            } else {
                None
            };
            settle = false;
            if let Some(msg) = msg {
                if tx.send(api::line(&msg)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            changed = resources.changed(), if hello.is_some() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            frame = body.frame() => {
                let data = match frame {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    _ => return,
                };
                let msgs: Vec<WatchUp> = match lines.push(&data) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(%identity, error = %e, "closing a watch");
                        return;
                    }
                };
                for m in msgs {
                    match m {
                        WatchUp::Hello(h) => {
                            tracing::info!(%identity, name = %h.name, held = ?h.version, wants = h.wants.len(), "proxy connected");
                            held = h.version.clone();
                            wants.extend(h.wants.iter().take(MAX_WANTS).cloned());
                            lock(&cp.proxies).insert(id, ProxyStatus {
                                name: h.name.clone(),
                                identity: identity.clone(),
                                service: h.service.clone(),
                                namespace: namespace.clone(),
                                peer: peer.to_string(),
                                connected_at: unix_now(),
                                acked: h.version.clone(),
                                ..Default::default()
                            });
                            hello = Some(h);
                            dirty = true;
                        }
                        WatchUp::Want { names } => {
                            for n in names {
                                if wants.len() < MAX_WANTS && n.len() <= 300 {
                                    wants.insert(n.to_ascii_lowercase());
                                }
                            }
                            dirty = hello.is_some();
                            settle = true;
                        }
                        WatchUp::Ack { version } => {
                            cp.counters.acks.fetch_add(1, Ordering::Relaxed);
                            if let Some(p) = lock(&cp.proxies).get_mut(&id) {
                                p.acked = Some(version);
                            }
                        }
                        WatchUp::Nack { version, reason } => {
                            cp.counters.nacks.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%identity, %version, %reason, "proxy rejected a snapshot");
                            if let Some(p) = lock(&cp.proxies).get_mut(&id) {
                                p.last_nack = Some(Nack { version, reason, at: unix_now() });
                            }
                        }
                    }
                }
            }
        }
    }
}
