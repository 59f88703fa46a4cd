//! The export side: OTLP over gRPC or HTTP/protobuf, and the loop that
//! drains the span queue into it, on the export thread.

use super::connect::Connector;
use super::otlp::Frame;
use super::settings::{Env, Protocol, Settings};
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Export counters, shared by successive pipelines.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) exported: Counter,
    pub(crate) dropped_queue_full: Counter,
    pub(crate) dropped_export_failed: Counter,
}

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends encoded batches to the collector.
pub(super) struct Exporter {
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    protocol: Protocol,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    /// Batches go gzip-compressed (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
    gzip: bool,
    frame: Frame,
}

/// Where the spans go: the MeshConfig's endpoint, or the environment's
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is;
/// `OTEL_EXPORTER_OTLP_ENDPOINT` as a base, to which HTTP adds `/v1/traces`).
pub(super) fn endpoint(s: &Settings, env: &Env) -> Result<Uri, String> {
    let (url, base) = match (&s.endpoint, &env.traces_endpoint, &env.endpoint) {
        (Some(mesh), _, _) => (mesh.as_str(), true),
        (None, Some(e), _) => (e.as_str(), false),
        (None, None, Some(e)) => (e.as_str(), true),
        (None, None, None) => match s.protocol {
            Protocol::Grpc => ("http://localhost:4317", true),
            Protocol::HttpProtobuf => ("http://localhost:4318", true),
        },
    };
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("OTLP endpoint {url:?}: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => {
            return Err(format!(
                "OTLP endpoint {url:?}: must start with http:// or https://"
            ))
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("OTLP endpoint {url:?}: no host"));
    };
    let path = match s.protocol {
        Protocol::Grpc => GRPC_PATH.to_owned(),
        Protocol::HttpProtobuf if base => {
            format!("{}/v1/traces", uri.path().trim_end_matches('/'))
        }
        Protocol::HttpProtobuf => uri.path().to_owned(),
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| format!("OTLP endpoint {url:?}: {e}"))
}

impl Exporter {
    /// The exporter for `s`; must be built on the export thread's runtime.
    pub(super) fn new(s: &Settings, env: &Env, frame: Frame) -> Result<Exporter, String> {
        let uri = endpoint(s, env)?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(Duration::from_secs(90));
        if s.protocol == Protocol::Grpc {
            builder.http2_only(true);
        }
        let mut headers = Vec::new();
        for (k, v) in &env.headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("OTEL_EXPORTER_OTLP_HEADERS: bad header name {k:?}"))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| format!("OTEL_EXPORTER_OTLP_HEADERS: bad value for {k:?}"))?;
            headers.push((name, value));
        }
        let gzip = match env.compression.as_deref().map(str::trim) {
            None | Some("none") => false,
            Some("gzip") => true,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_COMPRESSION: {other:?} is not gzip or none"
                ))
            }
        };
        let connector = Connector::new(&uri, s.protocol, env)?;
        Ok(Exporter {
            client: builder.build(connector),
            uri,
            protocol: s.protocol,
            headers,
            timeout: env.otlp_timeout,
            gzip,
            frame,
        })
    }

    /// Sends one batch of encoded spans; waits for the collector's answer.
    async fn export(&self, spans: &[Vec<u8>]) -> Result<(), String> {
        let body = message(self.protocol, self.gzip, &self.frame.request(spans))?;
        let mut req = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        let gzip = HeaderValue::from_static("gzip");
        match self.protocol {
            Protocol::HttpProtobuf => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                if self.gzip {
                    h.insert(header::CONTENT_ENCODING, gzip);
                }
            }
            Protocol::Grpc => {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                h.insert(header::TE, HeaderValue::from_static("trailers"));
                if self.gzip {
                    h.insert("grpc-encoding", gzip);
                }
            }
        }
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let head_grpc = resp.headers().get("grpc-status").cloned();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("collector answered {status}"));
            }
            if self.protocol == Protocol::Grpc {
                // grpc-status is a trailer, or a header in a trailers-only answer.
                let code = body
                    .trailers()
                    .and_then(|t| t.get("grpc-status").cloned())
                    .or(head_grpc);
                match code.as_ref().map(HeaderValue::as_bytes) {
                    Some(b"0") => {}
                    Some(c) => {
                        return Err(format!(
                            "collector answered grpc-status {}",
                            String::from_utf8_lossy(c)
                        ))
                    }
                    None => return Err("collector answered without a grpc-status".to_owned()),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// The request body for one encoded `ExportTraceServiceRequest`: as it is
/// for HTTP, behind gRPC's 5-byte prefix (compressed flag, length) for gRPC;
/// gzip-compressed with `gzip`.
fn message(protocol: Protocol, gzip: bool, msg: &[u8]) -> Result<Bytes, String> {
    let prefix = match protocol {
        Protocol::HttpProtobuf => 0,
        Protocol::Grpc => 5,
    };
    let mut out = Vec::with_capacity(prefix + if gzip { msg.len() / 4 } else { msg.len() });
    out.resize(prefix, 0);
    if gzip {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
        enc.write_all(msg).map_err(|e| e.to_string())?;
        out = enc.finish().map_err(|e| e.to_string())?;
    } else {
        out.extend_from_slice(msg);
    }
    if prefix > 0 {
        let len = u32::try_from(out.len() - prefix).map_err(|_| "batch over 4 GiB".to_owned())?;
        out[0] = u8::from(gzip);
        out[1..5].copy_from_slice(&len.to_be_bytes());
    }
    Ok(Bytes::from(out))
}

/// Every `schedule_delay`, or as soon as a batch's worth is queued (the
/// request side rings `ready`), drains the queue in batches of up to
/// `max_batch` to the exporter, one export at a time; a failed or timed-out
/// export drops its batch. The queue is read without waiting on it, so
/// queuing a span never wakes this thread.
pub(super) async fn export_loop(
    exporter: Exporter,
    mut rx: mpsc::Receiver<Vec<u8>>,
    buffers: Arc<ArrayQueue<Vec<u8>>>,
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
            let n = batch.len() as u64;
            match tokio::time::timeout(env.export_timeout, exporter.export(&batch)).await {
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
            // Back to the workers for new spans (an unusually large one is freed).
            for mut b in batch.drain(..) {
                if b.capacity() <= 4096 {
                    b.clear();
                    let _ = buffers.push(b);
                }
            }
            if !full {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_compressed() {
        let msg = b"spans spans spans spans spans spans spans spans".repeat(20);
        assert_eq!(
            &message(Protocol::HttpProtobuf, false, &msg).unwrap()[..],
            &msg[..]
        );
        let grpc = message(Protocol::Grpc, false, &msg).unwrap();
        assert_eq!(grpc[0], 0);
        assert_eq!(
            u32::from_be_bytes(grpc[1..5].try_into().unwrap()) as usize,
            msg.len()
        );
        assert_eq!(&grpc[5..], &msg[..]);
        let gunzip = |b: &[u8]| {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(b)
                .read_to_end(&mut out)
                .unwrap();
            out
        };
        let http = message(Protocol::HttpProtobuf, true, &msg).unwrap();
        assert!(http.len() < msg.len() / 4, "{} bytes", http.len());
        assert_eq!(gunzip(&http), msg);
        let grpc = message(Protocol::Grpc, true, &msg).unwrap();
        assert_eq!(grpc[0], 1, "the compressed flag");
        assert_eq!(
            u32::from_be_bytes(grpc[1..5].try_into().unwrap()) as usize,
            grpc.len() - 5
        );
        assert_eq!(gunzip(&grpc[5..]), msg);
    }

    fn settings(endpoint: Option<&str>, protocol: Protocol) -> Settings {
        Settings {
            endpoint: endpoint.map(str::to_owned),
            protocol,
            ratio: None,
        }
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let env = Env::default();
        let http = |e| endpoint(&settings(Some(e), Protocol::HttpProtobuf), &env).unwrap();
        assert_eq!(http("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http("http://c:4318/base/"), "http://c:4318/base/v1/traces");
        let grpc = endpoint(&settings(Some("http://c:4317"), Protocol::Grpc), &env).unwrap();
        assert_eq!(grpc, format!("http://c:4317{GRPC_PATH}").as_str());
        // The signal's own endpoint is used as it is.
        let env = Env {
            traces_endpoint: Some("http://t:9/custom".into()),
            endpoint: Some("http://base:4318".into()),
            ..Env::default()
        };
        let u = endpoint(&settings(None, Protocol::HttpProtobuf), &env).unwrap();
        assert_eq!(u, "http://t:9/custom");
        let env = Env {
            endpoint: Some("http://base:4318".into()),
            ..Env::default()
        };
        let u = endpoint(&settings(None, Protocol::HttpProtobuf), &env).unwrap();
        assert_eq!(u, "http://base:4318/v1/traces");
        let tls = endpoint(
            &settings(Some("https://c:4318"), Protocol::HttpProtobuf),
            &env,
        );
        assert_eq!(tls.unwrap(), "https://c:4318/v1/traces");
        assert!(endpoint(&settings(Some("c:4318"), Protocol::Grpc), &env).is_err());
        assert!(endpoint(&settings(Some("ftp://c:4318"), Protocol::Grpc), &env).is_err());
    }
}
