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
mod sink;
mod span;

pub(crate) use export::Stats;
pub(crate) use settings::{resolve, Env, Settings};
use sink::{Names, Sink};
pub(crate) use span::{Pending, Span};

use super::propagation;
use arc_swap::ArcSwapOption;
use http::{HeaderMap, Method};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{IdGenerator, SamplingDecision};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use weft_mesh::config::policy::MeshTracing;

/// Tracing for the whole proxy: off, or one export pipeline.
pub(crate) struct Tracing {
    on: AtomicBool,
    current: ArcSwapOption<Sink>,
    env: Env,
    /// Names this proxy in the trace (`service.name` when the environment
    /// gives none; `service.namespace`).
    service: String,
    namespace: String,
    /// `service.instance.id`: the sidecar's name.
    instance: String,
    applied: Mutex<Option<Settings>>,
    pub(crate) stats: Stats,
}

impl Tracing {
    pub(crate) fn new(
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
    pub(crate) fn configure(&self, mesh: Option<&MeshTracing>) {
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

    fn build(&self, s: &Settings) -> Result<Sink, String> {
        let names = Names {
            service: (!self.env.service_name_set).then_some(self.service.as_str()),
            namespace: &self.namespace,
            instance: &self.instance,
        };
        Sink::start(s, &self.env, &names, &self.stats)
    }

    /// Starts the span for a request whose headers are `headers`: a child
    /// of the caller's context when it sent one, else a new trace if the
    /// sampler takes it. `None` when tracing is off.
    #[inline]
    pub(crate) fn start(
        &self,
        kind: SpanKind,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Span> {
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
    pub(crate) async fn close(&self, limit: Duration) {
        self.on.store(false, Ordering::Relaxed);
        if let Some(p) = self.current.swap(None) {
            let _ = tokio::time::timeout(limit, p.close()).await;
        }
    }
}
