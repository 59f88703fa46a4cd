//! The export side: the OTLP exporter (gRPC or HTTP/protobuf) and the loop
//! that drains the span queue into it, on the export thread.

use super::settings::{Env, Protocol, Settings};
use super::Stats;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// The OTLP exporter for `s`, built on the export thread's runtime.
pub(super) fn exporter(
    s: &Settings,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
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

/// Every `schedule_delay`, or as soon as a batch's worth is queued (the
/// request side rings `ready`), drains the queue in batches of up to
/// `max_batch` to the exporter, one export at a time; a failed or timed-out
/// export drops its batch. The queue is read without waiting on it, so
/// queuing a span never wakes this thread.
pub(super) async fn export_loop(
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
