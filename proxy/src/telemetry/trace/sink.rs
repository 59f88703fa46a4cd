//! Where finished spans go: the sampler and ids for new spans, and the
//! bounded queue that a thread of its own (with its own runtime) drains in
//! batches to the exporter. One sink per tracing configuration; a change
//! starts a new one and closes the old.

use super::export::{self, Stats};
use super::otlp;
use super::settings::{Env, Settings};
use crossbeam_queue::ArrayQueue;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{RandomIdGenerator, Sampler, ShouldSample};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// How the proxy is named in its spans' resource.
pub(super) struct Names<'a> {
    /// `service.name`, unless the environment sets it.
    pub(crate) service: Option<&'a str>,
    pub(crate) namespace: &'a str,
    /// `service.instance.id`: the sidecar's name ("" for none).
    pub(crate) instance: &'a str,
}

/// One export pipeline: the sampler and ids for new spans, and the queue
/// that the export task drains.
pub(super) struct Sink {
    pub(super) sampler: Box<dyn ShouldSample>,
    pub(super) ids: RandomIdGenerator,
    /// Encoded spans (OTLP `Span` messages).
    pub(super) tx: mpsc::Sender<Vec<u8>>,
    /// Span buffers the export thread is done with, for new spans to reuse:
    /// a buffer allocated on a worker and freed on the export thread would
    /// cost the allocator's slow path on both.
    pub(super) buffers: Arc<ArrayQueue<Vec<u8>>>,
    /// Rung when a batch's worth is queued.
    pub(super) ready: Arc<Notify>,
    /// Queue free space at or under which a batch's worth is waiting.
    pub(super) ready_at: usize,
    pub(super) dropped: Counter,
    pub(super) closing: Arc<Notify>,
    /// Fires when the export thread has finished.
    pub(super) done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Sink {
    /// Starts an export thread for `s` and returns the sink that feeds it.
    pub(super) fn start(
        s: &Settings,
        env: &Env,
        names: &Names,
        stats: &Stats,
    ) -> Result<Sink, String> {
        let mut resource = Resource::builder();
        if let Some(service) = names.service {
            resource = resource.with_service_name(service.to_owned());
        }
        let mut resource = resource.with_attribute(KeyValue::new(
            "service.namespace",
            names.namespace.to_owned(),
        ));
        if !names.instance.is_empty() {
            resource = resource.with_attribute(KeyValue::new(
                "service.instance.id",
                names.instance.to_owned(),
            ));
        }
        let resource = resource.build();
        let frame = otlp::Frame::new(
            resource.iter().map(|(k, v)| (k.as_str(), v)),
            "weft-proxy",
            env!("CARGO_PKG_VERSION"),
        );
        let (tx, rx) = mpsc::channel(env.queue_size);
        let buffers = Arc::new(ArrayQueue::new(env.max_batch));
        let returned = buffers.clone();
        let closing = Arc::new(Notify::new());
        let ready = Arc::new(Notify::new());
        let ready_rx = ready.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (settings, thread_stats, thread_env, wake) =
            (s.clone(), stats.clone(), env.clone(), closing.clone());
        // The exporter and its loop live on a thread of their own with its
        // own runtime, as the SDK's batch processor does: framing and
        // sending a batch then never holds up the request workers.
        std::thread::Builder::new()
            .name("weft-trace-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = built_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let exporter = match export::Exporter::new(&settings, &thread_env, frame) {
                        Ok(x) => {
                            let _ = built_tx.send(Ok(()));
                            x
                        }
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    };
                    export::export_loop(
                        exporter,
                        rx,
                        returned,
                        wake,
                        ready_rx,
                        thread_stats,
                        thread_env,
                    )
                    .await;
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
        built_rx
            .recv()
            .map_err(|_| "the trace export thread stopped".to_owned())??;
        // The environment's sampler (OTEL_TRACES_SAMPLER), unless a
        // MeshConfig gives a ratio and the environment none.
        let sampler: Box<dyn ShouldSample> = match s.ratio {
            Some(r) => Box::new(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                r,
            )))),
            None => opentelemetry_sdk::trace::Config::default().sampler,
        };
        Ok(Sink {
            sampler,
            ids: RandomIdGenerator::default(),
            tx,
            buffers,
            ready,
            ready_at: env.queue_size - env.max_batch,
            dropped: stats.dropped_queue_full.clone(),
            closing,
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Exports what is queued, then ends the export thread.
    pub(super) async fn close(&self) {
        // Spans of requests still in flight go into the queue while it is
        // drained; later ones find it closed and are counted as dropped.
        self.closing.notify_one();
        let task = weft_mesh::process::lock(&self.done).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}
