//! OpenTelemetry traces, exported over OTLP (gRPC or HTTP/protobuf).
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

use super::access_log::{EventKind, Line};
use super::propagation::{self, Style};
use crate::config::policy::MeshTracing;
use arc_swap::ArcSwapOption;
use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanExporter as _, SpanLinks,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, Notify};

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.trim() {
            "grpc" => Some(Protocol::Grpc),
            "http/protobuf" => Some(Protocol::HttpProtobuf),
            _ => None,
        }
    }
}

/// What the environment says, read once at start.
#[derive(Clone, Debug)]
pub struct Env {
    pub disabled: bool,
    /// An endpoint is set: the exporter reads it (and its path rules) itself.
    pub endpoint_set: bool,
    pub protocol: Option<Protocol>,
    /// `OTEL_TRACES_SAMPLER` is set: the SDK reads it itself.
    pub sampler_set: bool,
    pub service_name_set: bool,
    pub queue_size: usize,
    pub max_batch: usize,
    pub schedule_delay: Duration,
    pub export_timeout: Duration,
}

/// The specification's defaults, with nothing set.
impl Default for Env {
    fn default() -> Env {
        Env {
            disabled: false,
            endpoint_set: false,
            protocol: None,
            sampler_set: false,
            service_name_set: false,
            queue_size: 2048,
            max_batch: 512,
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(30_000),
        }
    }
}

impl Env {
    pub fn read() -> Env {
        let d = Env::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let ms = |k: &str, d: u64| {
            Duration::from_millis(var(k).and_then(|v| v.trim().parse().ok()).unwrap_or(d))
        };
        let n = |k: &str, d: usize| {
            var(k)
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(d)
        };
        let queue_size = n("OTEL_BSP_MAX_QUEUE_SIZE", d.queue_size);
        Env {
            disabled: var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none"),
            endpoint_set: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some(),
            protocol: var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
                .and_then(|p| Protocol::parse(&p)),
            sampler_set: var("OTEL_TRACES_SAMPLER").is_some(),
            service_name_set: var("OTEL_SERVICE_NAME").is_some()
                || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                    a.split(',')
                        .any(|kv| kv.trim_start().starts_with("service.name="))
                }),
            queue_size,
            max_batch: n("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.max_batch).min(queue_size),
            schedule_delay: ms("OTEL_BSP_SCHEDULE_DELAY", 5000),
            export_timeout: ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000),
        }
    }
}

/// The settings a pipeline was built from; a change rebuilds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// From a MeshConfig; `None` when the environment gives the endpoint.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
    /// From a MeshConfig's `samplingPercent` (root spans; a caller's
    /// decision is followed); `None` for the environment's or the default
    /// (parent-based, always on).
    pub ratio: Option<f64>,
}

/// The settings in force for this environment and MeshConfig; `None` when
/// tracing is off.
pub fn resolve(env: &Env, mesh: Option<&MeshTracing>) -> Option<Settings> {
    if env.disabled {
        return None;
    }
    let mesh_endpoint = mesh
        .and_then(|m| m.otlp_endpoint.clone())
        .filter(|e| !e.trim().is_empty());
    if !env.endpoint_set && mesh_endpoint.is_none() {
        return None;
    }
    let protocol = env
        .protocol
        .or_else(|| {
            mesh.and_then(|m| m.protocol.as_deref())
                .and_then(Protocol::parse)
        })
        .unwrap_or(Protocol::HttpProtobuf);
    Some(Settings {
        endpoint: if env.endpoint_set {
            None
        } else {
            mesh_endpoint
        },
        protocol,
        ratio: match env.sampler_set {
            true => None,
            false => mesh
                .and_then(|m| m.sampling_percent)
                .map(|p| (p / 100.0).clamp(0.0, 1.0)),
        },
    })
}

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
    scope: InstrumentationScope,
    tx: mpsc::Sender<SpanData>,
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
        let mut applied = crate::lock(&self.applied);
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
        let (tx, rx) = mpsc::channel(self.env.queue_size);
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
        // own runtime, as the SDK's batch processor does: converting and
        // encoding a batch (milliseconds for 512 spans) then never holds up
        // the request workers.
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
                    let exporter = match exporter(&settings, &resource) {
                        Ok(x) => {
                            let _ = built_tx.send(Ok(()));
                            x
                        }
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    };
                    export_loop(exporter, rx, wake, ready_rx, stats, env).await;
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
            scope: InstrumentationScope::builder("weft-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            tx,
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
        let name = span_name(method);
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
        let task = crate::lock(&self.done).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// The OTLP exporter for `s`, built on the export thread's runtime.
fn exporter(s: &Settings, resource: &Resource) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let mut exporter = match s.protocol {
        Protocol::Grpc => {
            let b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            match &s.endpoint {
                Some(e) => b.with_endpoint(e.clone()).build(),
                None => b.build(),
            }
        }
        Protocol::HttpProtobuf => {
            let b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(http_client());
            match &s.endpoint {
                // Like OTEL_EXPORTER_OTLP_ENDPOINT: a base to add the path to.
                Some(e) => b
                    .with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')))
                    .build(),
                None => b.build(),
            }
        }
    }
    .map_err(|e| e.to_string())?;
    exporter.set_resource(resource);
    Ok(exporter)
}

/// The client for HTTP/protobuf export: hyper on the export thread's
/// runtime, plaintext.
fn http_client() -> opentelemetry_http::hyper::HyperClient {
    opentelemetry_http::hyper::HyperClient::with_default_connector(Duration::from_secs(10), None)
}

/// Method names for span names without an allocation; others are `HTTP`,
/// as the semantic conventions ask.
fn span_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

/// A request's span. [`Span::finish`] records the exchange when the
/// response head is ready and hands back a [`Pending`] span that ends when
/// the response body does; a request abandoned before its response (the
/// client went away) ends its span when dropped, as `error.type=cancelled`.
pub struct Span {
    cx: SpanContext,
    parent: SpanId,
    parent_remote: bool,
    kind: SpanKind,
    name: &'static str,
    start: SystemTime,
    style: Option<Style>,
    /// Where the finished span goes; `None` when sampled out.
    sink: Option<Arc<Pipeline>>,
}

impl Span {
    /// Hands this span's context to the next hop in `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        propagation::inject(headers, &self.cx, self.style);
    }

    pub fn context(&self) -> &SpanContext {
        &self.cx
    }

    /// Records the exchange (HTTP semantic-convention attributes, retry,
    /// ejection and overflow events); the span ends when the returned
    /// [`Pending`] is dropped (with the response body). `None` when sampled out.
    pub fn finish(
        mut self,
        line: &Line<'_>,
        identity: Option<Arc<str>>,
        http2: bool,
    ) -> Option<Box<Pending>> {
        let sink = self.sink.take()?;
        let client = line.direction == "outbound";
        let rec = line.record;
        let mut a = Vec::with_capacity(12);
        a.push(KeyValue::new(
            "http.request.method",
            method_attr(line.method),
        ));
        a.push(KeyValue::new(
            "http.response.status_code",
            line.status as i64,
        ));
        // Only when it is not HTTP/1.1, the default.
        if http2 {
            a.push(KeyValue::new("network.protocol.version", "2"));
        }
        let (host, port) = split_authority(line.authority);
        if !host.is_empty() {
            a.push(KeyValue::new("server.address", host.to_owned()));
            a.push(KeyValue::new("server.port", port as i64));
        }
        if client {
            // The query is left out: it may carry secrets.
            a.push(KeyValue::new(
                "url.full",
                format!("http://{}{}", line.authority, line.path),
            ));
            if let Some(ep) = rec.upstream.endpoint {
                a.push(KeyValue::new("network.peer.address", ep.ip().to_string()));
                a.push(KeyValue::new("network.peer.port", ep.port() as i64));
            }
            if rec.upstream.retries > 0 {
                a.push(KeyValue::new(
                    "http.request.resend_count",
                    rec.upstream.retries as i64,
                ));
            }
        } else {
            a.push(KeyValue::new("url.path", line.path.to_owned()));
            a.push(KeyValue::new("url.scheme", "http"));
            a.push(KeyValue::new("client.address", line.peer.ip().to_string()));
            a.push(KeyValue::new(
                "network.peer.address",
                line.peer.ip().to_string(),
            ));
            a.push(KeyValue::new("network.peer.port", line.peer.port() as i64));
        }
        if let Some(id) = identity {
            a.push(KeyValue::new("weft.peer.identity", id));
        }
        if let Some(r) = &rec.route {
            a.push(KeyValue::new("weft.route", r.clone()));
        }
        if let Some(b) = &rec.backend {
            a.push(KeyValue::new("weft.backend", b.clone()));
        }
        let flags = super::access_log::flags(rec.cause, &rec.upstream);
        if flags != "-" {
            a.push(KeyValue::new("weft.response_flags", flags));
        }
        // Client spans fail on 4xx and 5xx; server spans on 5xx only.
        let failed = line.status >= 500 || (client && line.status >= 400);
        if failed {
            let kind = match rec.cause {
                Some(c) => c.to_owned(),
                None => line.status.to_string(),
            };
            a.push(KeyValue::new("error.type", kind));
        }
        let mut events = SpanEvents::default();
        for e in &rec.upstream.events {
            let (name, attrs) = match &e.kind {
                EventKind::Retry {
                    attempt,
                    endpoint,
                    reason,
                } => (
                    "retry",
                    vec![
                        KeyValue::new("http.request.resend_count", *attempt as i64),
                        KeyValue::new("weft.retry.reason", *reason),
                        KeyValue::new("network.peer.address", endpoint.ip().to_string()),
                        KeyValue::new("network.peer.port", endpoint.port() as i64),
                    ],
                ),
                EventKind::Ejected { endpoint } => (
                    "endpoint ejected",
                    vec![
                        KeyValue::new("network.peer.address", endpoint.ip().to_string()),
                        KeyValue::new("network.peer.port", endpoint.port() as i64),
                    ],
                ),
                EventKind::Overflow { limit } => (
                    "circuit overflow",
                    vec![KeyValue::new("weft.limit", *limit)],
                ),
            };
            events
                .events
                .push(opentelemetry::trace::Event::new(name, e.at, attrs, 0));
        }
        let status = if failed {
            Status::error("")
        } else {
            Status::Unset
        };
        let data = self.data(&sink, a, events, status);
        Some(Box::new(Pending::new(data, sink)))
    }

    fn data(
        &self,
        sink: &Pipeline,
        attributes: Vec<KeyValue>,
        events: SpanEvents,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: self.cx.clone(),
            parent_span_id: self.parent,
            parent_span_is_remote: self.parent_remote,
            span_kind: self.kind.clone(),
            name: self.name.into(),
            start_time: self.start,
            end_time: self.start,
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: sink.scope.clone(),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        // Not finished: the request was abandoned before its response.
        if let Some(sink) = self.sink.take() {
            let attrs = vec![
                KeyValue::new("http.request.method", self.name),
                KeyValue::new("error.type", "cancelled"),
            ];
            let data = self.data(&sink, attrs, SpanEvents::default(), Status::Unset);
            drop(Pending::new(data, sink));
        }
    }
}

/// A span whose response head has gone out; it ends (and is queued for
/// export) when dropped, which the response body does when it has been sent
/// or abandoned.
pub struct Pending {
    /// Taken when the span is queued.
    data: Option<SpanData>,
    sink: Arc<Pipeline>,
}

impl Pending {
    fn new(data: SpanData, sink: Arc<Pipeline>) -> Pending {
        Pending {
            data: Some(data),
            sink,
        }
    }

    /// The response body failed part way (the upstream reset it).
    pub fn body_failed(&mut self) {
        if let Some(d) = &mut self.data {
            d.attributes.retain(|kv| kv.key.as_str() != "error.type");
            d.attributes
                .push(KeyValue::new("error.type", "response-body-failed"));
            d.status = Status::error("");
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut data) = self.data.take() {
            data.end_time = SystemTime::now();
            let sink = &self.sink;
            match sink.tx.try_send(data) {
                Ok(()) if sink.tx.capacity() <= sink.ready_at => sink.ready.notify_one(),
                Ok(()) => {}
                Err(_) => {
                    sink.dropped.inc();
                }
            }
        }
    }
}

/// `http.request.method`: the known methods as they are, others `_OTHER`.
fn method_attr(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "_OTHER",
    }
}

/// Host and port of an authority (port 80 when it has none).
fn split_authority(a: &str) -> (&str, u16) {
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            let port = p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(80);
            return (h, port);
        }
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().unwrap_or(80)),
        _ => (a, 80),
    }
}

/// Every `schedule_delay`, or as soon as a batch's worth is queued (the
/// request side rings `ready`), drains the queue in batches of up to
/// `max_batch` to the exporter, one export at a time; a failed or timed-out
/// export drops its batch. The queue is read without waiting on it, so
/// queuing a span never wakes this thread.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanData>,
    closing: Arc<Notify>,
    ready: Arc<Notify>,
    stats: Stats,
    env: Env,
) {
    let mut batch = Vec::with_capacity(env.max_batch);
    let mut failing = false;
    let mut closed = false;
    while !closed {
        tokio::select! {
            _ = tokio::time::sleep(env.schedule_delay) => {}
            _ = ready.notified() => {}
            _ = closing.notified() => closed = true,
        }
        loop {
            while batch.len() < env.max_batch {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let full = batch.len() == env.max_batch;
            let chunk = std::mem::replace(&mut batch, Vec::with_capacity(env.max_batch));
            let n = chunk.len() as u64;
            match tokio::time::timeout(env.export_timeout, exporter.export(chunk)).await {
                Ok(Ok(())) => {
                    stats.exported.inc_by(n);
                    if failing {
                        failing = false;
                        tracing::info!("trace export works again");
                    }
                }
                Ok(Err(e)) => {
                    stats.dropped_export_failed.inc_by(n);
                    if !failing {
                        failing = true;
                        tracing::warn!(error = %e, "trace export failed; spans are dropped (and counted) until it works again");
                    }
                }
                Err(_) => {
                    stats.dropped_export_failed.inc_by(n);
                    if !failing {
                        failing = true;
                        tracing::warn!(timeout = ?env.export_timeout, "trace export timed out; spans are dropped (and counted) until it works again");
                    }
                }
            }
            if !full {
                break;
            }
        }
    }
    let _ = exporter.shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            queue_size: 8,
            max_batch: 4,
            schedule_delay: Duration::from_millis(10),
            export_timeout: Duration::from_secs(1),
            ..Env::default()
        }
    }

    fn mesh(endpoint: Option<&str>, protocol: Option<&str>, pct: Option<f64>) -> MeshTracing {
        MeshTracing {
            otlp_endpoint: endpoint.map(str::to_owned),
            protocol: protocol.map(str::to_owned),
            sampling_percent: pct,
        }
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        assert_eq!(resolve(&env(), None), None);
        assert_eq!(resolve(&env(), Some(&mesh(None, None, Some(5.0)))), None);
        let e = Env {
            disabled: true,
            endpoint_set: true,
            ..env()
        };
        assert_eq!(
            resolve(&e, Some(&mesh(Some("http://c:4318"), None, None))),
            None
        );
    }

    #[test]
    fn environment_wins_over_mesh_config() {
        let m = mesh(Some("http://mesh:4317"), Some("grpc"), Some(25.0));
        let s = resolve(&env(), Some(&m)).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://mesh:4317"));
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.ratio, Some(0.25));
        let e = Env {
            endpoint_set: true,
            protocol: Some(Protocol::HttpProtobuf),
            sampler_set: true,
            ..env()
        };
        let s = resolve(&e, Some(&m)).unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.ratio, None);
        // The default protocol is the specification's: HTTP/protobuf.
        let s = resolve(&env(), Some(&mesh(Some("http://c:4318"), None, None))).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
    }

    #[test]
    fn authorities_split() {
        assert_eq!(split_authority("reviews:9080"), ("reviews", 9080));
        assert_eq!(split_authority("reviews"), ("reviews", 80));
        assert_eq!(split_authority("[::1]:8080"), ("::1", 8080));
    }
}
