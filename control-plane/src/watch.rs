//! `POST /v1/watch`: one proxy's config stream. Read its hello, then push
//! its scoped snapshot on every change (of the resources, or of the names
//! it wants), record its ACKs and NACKs, until either side goes away.

use crate::body::CpBody;
use crate::body::MAX_MESSAGE;
use crate::state::{unix_now, ControlPlane, Nack, ProxyStatus};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use weft_mesh::api::{self, LineStream, WatchDown, WatchUp};
use weft_mesh::identity::SpiffeId;
use weft_mesh::process::lock;

pub(crate) fn start(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: String,
    peer: SocketAddr,
) -> Response<CpBody> {
    let id = cp.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let cp = cp.clone();
    tokio::spawn(async move {
        run(&cp, id, req.into_body(), tx, identity, peer).await;
        lock(&cp.proxies).remove(&id);
    });
    let mut r = Response::new(CpBody::Stream(LineStream(rx)));
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
async fn run(
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
                            // Answered even when it holds the version
                            // already (as from another replica): the
                            // wants it names are answered by it.
                            settle = true;
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
