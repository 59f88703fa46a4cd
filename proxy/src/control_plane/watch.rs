//! The config watch: one long-lived stream per proxy. The proxy says who
//! it is and what it holds; the control plane sends a full scoped snapshot
//! whenever that changes; each goes through the pipeline like a file edit
//! and is answered ACK, or NACK with the errors while the previous config
//! keeps serving. When the control plane is away the proxy keeps its
//! config, and reconnects with jittered backoff.

use super::connection::Connector;
use super::lookups::Lookups;
use crate::pipeline::Pipeline;
use crate::resilience::backoff;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Either};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use weft_mesh::api::{self, Hello, LineStream, WatchDown, WatchUp};

/// Largest snapshot line accepted from the control plane.
const MAX_SNAPSHOT: usize = 64 * 1024 * 1024;
/// Backoff between reconnects.
const RETRY_BASE: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(15);
/// Messages queued upward: every want a proxy may make, and its ACKs.
const UP_QUEUE: usize = super::lookups::MAX_WANTS + 64;
/// A watch that lasted this long was healthy: the backoff starts over.
const HEALTHY_WATCH: Duration = Duration::from_secs(10);

/// Who this proxy is, as it introduces itself.
pub(crate) struct Introduction {
    /// How this instance is listed at the control plane.
    pub(crate) name: String,
    /// The service it fronts (selects its inbound policy).
    pub(crate) service: Option<String>,
}

/// Watches for the life of the process (once a certificate is in hand).
pub(crate) async fn run(
    connector: Arc<Connector>,
    lookups: Arc<Lookups>,
    pipeline: Arc<Pipeline>,
    me: Introduction,
) {
    let mut held: Option<String> = None;
    let mut attempt = 0;
    loop {
        let started = tokio::time::Instant::now();
        let watch = Watch {
            connector: &connector,
            lookups: &lookups,
            pipeline: &pipeline,
            me: &me,
        };
        if let Err(e) = watch.once(&mut held).await {
            tracing::warn!(error = %e, "control plane watch lost; serving the last good config");
        }
        if started.elapsed() > HEALTHY_WATCH {
            attempt = 0;
        }
        tokio::time::sleep(backoff::jittered(attempt, RETRY_BASE, RETRY_MAX)).await;
        attempt += 1;
    }
}

struct Watch<'a> {
    connector: &'a Connector,
    lookups: &'a Lookups,
    pipeline: &'a Pipeline,
    me: &'a Introduction,
}

impl Watch<'_> {
    /// One watch, until the stream ends or fails. `held`: the version in
    /// force, named when reconnecting.
    async fn once(&self, held: &mut Option<String>) -> Result<(), String> {
        let proxy = self.pipeline.proxy();
        let mesh = proxy.mesh.load_full().ok_or("no certificate yet")?;
        let mut tx = self.connector.connect(Some(mesh.identity())).await?;
        // Room for every want: lookups queue them without waiting (memory
        // is taken only as they come).
        let (up, up_rx) = mpsc::channel::<Bytes>(UP_QUEUE);
        // The hello names every want so far; wants asked from now on go
        // out on this watch after it (one step, so none falls between).
        let attached = self.lookups.attach(up.clone(), |wants| {
            api::line(&WatchUp::Hello(Hello {
                name: self.me.name.clone(),
                service: self.me.service.clone(),
                version: held.clone(),
                wants,
            }))
        });
        if !attached {
            return Err("watch closed".into());
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.connector.uri(api::WATCH_PATH))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Either::Right(LineStream(up_rx)))
            .map_err(|e| e.to_string())?;
        let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("watch refused: {}", resp.status()));
        }
        tracing::info!(control_plane = %self.connector.authority(), "watching the control plane");
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
                        self.lookups.answered();
                        continue;
                    }
                };
                let answer = self.apply(&snap, held);
                self.lookups.answered();
                up.send(api::line(&answer))
                    .await
                    .map_err(|_| "watch closed")?;
            }
        }
        Err("the control plane ended the watch".into())
    }

    /// Applies a snapshot through the pipeline; the ACK or NACK to send.
    fn apply(&self, snap: &api::Snapshot, held: &mut Option<String>) -> WatchUp {
        let source = format!(
            "control-plane {} version {}",
            self.connector.authority(),
            snap.version
        );
        let loaded = weft_mesh::config::load_sources(vec![(source.clone(), snap.yaml.clone())]);
        match self.pipeline.apply(&source, loaded) {
            Ok(_) => {
                *held = Some(snap.version.clone());
                WatchUp::Ack {
                    version: snap.version.clone(),
                }
            }
            Err(e) => WatchUp::Nack {
                version: snap.version.clone(),
                reason: e.to_string(),
            },
        }
    }
}
