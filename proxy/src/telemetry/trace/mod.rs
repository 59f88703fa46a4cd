//! OpenTelemetry traces, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! The SDK (`opentelemetry_sdk`) supplies the sampler, the ids, the W3C
//! propagator and the resource (with its environment detectors); spans are
//! encoded to OTLP by [`otlp`] and sent by [`export`], which is much cheaper
//! per span than going through `SpanData` (see [`otlp`]).
//!
//! Configured the OpenTelemetry way, from the environment:
//! `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `..._PROTOCOL` (`grpc` or
//! `http/protobuf`, the default), `..._HEADERS`, `..._TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `_ARG`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`,
//! `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT`,
//! `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER=none`. A MeshConfig's
//! `tracing` (`otlpEndpoint`, `protocol`, `samplingPercent`) supplies what
//! the environment leaves unset, and can change at run time; the
//! environment, being this sidecar's own, wins. Without an endpoint from
//! either, tracing is off and the request path pays one relaxed load.
//!
//! Each request gets a span (client on the outbound side, server on the
//! inbound side) whose parent is the caller's context (W3C or B3, see
//! [`super::propagation`]); its context goes on to the next hop. The span
//! ends with the response body (see [`Pending`]). Finished
//! spans go into a bounded queue that a thread of its own (with its own
//! runtime) drains in batches to the exporter: a request never waits on
//! export or on encoding a batch, and when the queue is full (the collector
//! is down or slow) spans are dropped and counted in
//! `weft_trace_spans_dropped_total`.

mod connect;
mod export;
mod otlp;
mod settings;
mod span;

pub use settings::{resolve, Env, Protocol, Settings};
pub use span::{Pending, Span};

use super::propagation;
use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};
use weft_mesh::config::policy::MeshTracing;

/// Export counters, shared by successive pipelines.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub exported: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_export_failed: Counter,
}

/// Tracing for the whole proxy: off, or one export pipeline.
pub struct Tracing {
    on: AtomicBool,
    current: ArcSwapOption<Pipeline>,
    env: Env,
    /// Names this proxy in the trace (`service.name` when the environment
    /// gives none; `service.namespace`).
    service: String,
    namespace: String,
    /// `service.instance.id`: the sidecar's name.
    instance: String,
    applied: Mutex<Option<Settings>>,
    pub stats: Stats,
}

/// One export pipeline: the sampler and ids for new spans, and the queue
/// that the export task drains.
struct Pipeline {
    sampler: Box<dyn ShouldSample>,
    ids: RandomIdGenerator,
    /// Encoded spans (OTLP `Span` messages).
    tx: mpsc::Sender<Vec<u8>>,
    /// Span buffers the export thread is done with, for new spans to reuse:
    /// a buffer allocated on a worker and freed on the export thread would
    /// cost the allocator's slow path on both.
    buffers: Arc<ArrayQueue<Vec<u8>>>,
    /// Rung when a batch's worth is queued.
    ready: Arc<Notify>,
    /// Queue free space at or under which a batch's worth is waiting.
    ready_at: usize,
    dropped: Counter,
    closing: Arc<Notify>,
    /// Fires when the export thread has finished.
    done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Tracing {
    pub fn new(
        env: Env,
        instance: String,
        service: String,
        namespace: String,
        stats: Stats,
    ) -> Tracing {
        Tracing {
            on: AtomicBool::new(false),
            current: ArcSwapOption::empty(),
            env,
            instance,
            service,
            namespace,
            applied: Mutex::new(None),
            stats,
        }
    }

    /// Puts in force the tracing that the environment and `mesh` (a
    /// MeshConfig's `tracing`) call for, rebuilding the pipeline only when
    /// that changed. Must run on the proxy's runtime (the export task is
    /// spawned on it).
    pub fn configure(&self, mesh: Option<&MeshTracing>) {
        let want = resolve(&self.env, mesh);
        let mut applied = weft_mesh::process::lock(&self.applied);
        if *applied == want && (want.is_none() || self.current.load().is_some()) {
            return;
        }
        let next = match &want {
            None => None,
            Some(s) => match self.build(s) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    tracing::error!(error = %e, "OpenTelemetry exporter could not be built; tracing stays as it was");
                    return;
                }
            },
        };
        match &want {
            Some(s) => tracing::info!(
                protocol = ?s.protocol,
                endpoint = s.endpoint.as_deref().unwrap_or("(from the environment)"),
                sampling = ?s.ratio,
                "tracing on"
            ),
            None if applied.is_some() => tracing::info!("tracing off"),
            None => {}
        }
        self.on.store(next.is_some(), Ordering::Relaxed);
        if let Some(old) = self.current.swap(next) {
            tokio::spawn(async move { old.close().await });
        }
        *applied = want;
    }

    fn build(&self, s: &Settings) -> Result<Pipeline, String> {
        let mut resource = Resource::builder();
        if !self.env.service_name_set {
            resource = resource.with_service_name(self.service.clone());
        }
        let mut resource =
            resource.with_attribute(KeyValue::new("service.namespace", self.namespace.clone()));
        if !self.instance.is_empty() {
            resource = resource
                .with_attribute(KeyValue::new("service.instance.id", self.instance.clone()));
        }
        let resource = resource.build();
        let frame = otlp::Frame::new(
            resource.iter().map(|(k, v)| (k.as_str(), v)),
            "weft-proxy",
            env!("CARGO_PKG_VERSION"),
        );
        let (tx, rx) = mpsc::channel(self.env.queue_size);
        let buffers = Arc::new(ArrayQueue::new(self.env.max_batch));
        let returned = buffers.clone();
        let closing = Arc::new(Notify::new());
        let ready = Arc::new(Notify::new());
        let ready_rx = ready.clone();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (settings, stats, env, wake) = (
            s.clone(),
            self.stats.clone(),
            self.env.clone(),
            closing.clone(),
        );
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
                    let exporter = match export::Exporter::new(&settings, &env, frame) {
                        Ok(x) => {
                            let _ = built_tx.send(Ok(()));
                            x
                        }
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    };
                    export::export_loop(exporter, rx, returned, wake, ready_rx, stats, env).await;
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
        Ok(Pipeline {
            sampler,
            ids: RandomIdGenerator::default(),
            tx,
            buffers,
            ready,
            ready_at: self.env.queue_size - self.env.max_batch,
            dropped: self.stats.dropped_queue_full.clone(),
            closing,
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Starts the span for a request whose headers are `headers`: a child
    /// of the caller's context when it sent one, else a new trace if the
    /// sampler takes it. `None` when tracing is off.
    #[inline]
    pub fn start(&self, kind: SpanKind, method: &Method, headers: &HeaderMap) -> Option<Span> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        self.start_slow(kind, method, headers)
    }

    fn start_slow(&self, kind: SpanKind, method: &Method, headers: &HeaderMap) -> Option<Span> {
        let p = self.current.load_full()?;
        let name = span::span_name(method);
        let parent = propagation::extract(headers);
        let (trace_id, parent_cx) = match &parent {
            Some((sc, _)) => (
                sc.trace_id(),
                Some(Context::new().with_remote_span_context(sc.clone())),
            ),
            None => (p.ids.new_trace_id(), None),
        };
        let r = p
            .sampler
            .should_sample(parent_cx.as_ref(), trace_id, name, &kind, &[], &[]);
        let flags = match r.decision {
            SamplingDecision::RecordAndSample => TraceFlags::SAMPLED,
            _ => TraceFlags::default(),
        };
        let cx = SpanContext::new(trace_id, p.ids.new_span_id(), flags, false, r.trace_state);
        let (parent_id, parent_remote, style) = match parent {
            Some((sc, style)) => (sc.span_id(), true, Some(style)),
            None => (SpanId::INVALID, false, None),
        };
        Some(Span {
            cx,
            parent: parent_id,
            parent_remote,
            kind,
            name,
            start: SystemTime::now(),
            style,
            sink: (r.decision != SamplingDecision::Drop).then_some(p),
        })
    }

    /// Exports what is queued and stops (at shutdown), within `limit`.
    pub async fn close(&self, limit: Duration) {
        self.on.store(false, Ordering::Relaxed);
        if let Some(p) = self.current.swap(None) {
            let _ = tokio::time::timeout(limit, p.close()).await;
        }
    }
}

impl Pipeline {
    async fn close(&self) {
        // Spans of requests still in flight go into the queue while it is
        // drained; later ones find it closed and are counted as dropped.
        self.closing.notify_one();
        let task = weft_mesh::process::lock(&self.done).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}
