//! Active health checks: each endpoint of a backend with a `healthCheck` is
//! probed every interval (± jitter) over HTTP, TCP or gRPC
//! (`grpc.health.v1.Health/Check`), and the verdicts kept in its
//! [`Health`](crate::resilience::health::Health). The task holds its
//! backend weakly and ends when a config change drops it.

use super::endpoint::Endpoint;
use super::Backend;
use crate::transport::connect_tcp;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Weak};
use weft_mesh::config::defaults as d;
use weft_mesh::config::policy::HealthCheck;

/// Runs the backend's checks until the backend is dropped (replaced by a reload).
pub(crate) fn spawn(backend: &Arc<Backend>) {
    let Some(hc) = backend.health_check.clone() else {
        return;
    };
    let weak: Weak<Backend> = Arc::downgrade(backend);
    tokio::spawn(async move {
        let interval = hc.interval.map(|d| d.0).unwrap_or(d::HEALTH_INTERVAL);
        let jitter = hc
            .jitter_percent
            .unwrap_or(d::HEALTH_JITTER_PERCENT)
            .min(100) as f64
            / 100.0;
        loop {
            let Some(backend) = weak.upgrade() else {
                return;
            };
            let endpoints = backend.endpoints.load().endpoints.clone();
            let mut set = tokio::task::JoinSet::new();
            for ep in endpoints {
                let hc = hc.clone();
                let host = backend.name.clone();
                set.spawn(async move {
                    let r = check(&hc, &ep, &host).await;
                    (ep, r)
                });
            }
            let key = backend.key.clone();
            let backend_metrics = backend.metrics.clone();
            drop(backend);
            while let Some(Ok((ep, r))) = set.join_next().await {
                backend_metrics.health_check(r.is_ok());
                let healthy = hc.healthy_threshold.unwrap_or(d::HEALTH_HEALTHY_THRESHOLD);
                let unhealthy = hc
                    .unhealthy_threshold
                    .unwrap_or(d::HEALTH_UNHEALTHY_THRESHOLD);
                let err = r.as_ref().err().cloned();
                match ep.health.record(r, healthy, unhealthy) {
                    Some(true) => {
                        tracing::warn!(backend = %key, endpoint = %ep.addr, reason = err.as_deref().unwrap_or(""), "endpoint failed its health checks; out of the balancer")
                    }
                    Some(false) => {
                        tracing::info!(backend = %key, endpoint = %ep.addr, "endpoint passes its health checks again")
                    }
                    None => {}
                }
            }
            let spread = 1.0 + jitter * (2.0 * rand::random::<f64>() - 1.0);
            tokio::time::sleep(interval.mul_f64(spread.max(0.0))).await;
        }
    });
}

async fn check(hc: &HealthCheck, ep: &Endpoint, host: &str) -> Result<(), String> {
    let timeout = hc.timeout.map(|d| d.0).unwrap_or(d::HEALTH_TIMEOUT);
    let work = async {
        let stream = connect_tcp(ep.addr, timeout)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(h) = &hc.http {
            let (mut tx, conn) = http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = http::Request::get(h.path.as_str())
                .header(http::header::HOST, host)
                .header(http::header::USER_AGENT, "weft-health-check")
                .header(http::header::CONNECTION, "close")
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let ok = if h.expected_statuses.is_empty() {
                (200..300).contains(&status)
            } else {
                h.expected_statuses.contains(&status)
            };
            return if ok {
                Ok(())
            } else {
                Err(format!("HTTP status {status}"))
            };
        }
        if let Some(g) = &hc.grpc {
            return grpc_check(stream, host, g.service.as_deref().unwrap_or("")).await;
        }
        Ok(()) // tcp: connecting was the check
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `grpc.health.v1.Health/Check`, encoded by hand (one string field out,
/// one enum field back), so the proxy needs no protobuf toolchain.
async fn grpc_check(
    stream: tokio::net::TcpStream,
    host: &str,
    service: &str,
) -> Result<(), String> {
    let (mut tx, conn) =
        http2::handshake::<_, _, Full<Bytes>>(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        push_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{host}/grpc.health.v1.Health/Check"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Full::new(Bytes::from(frame)))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", resp.status()));
    }
    let header_status = resp.headers().get("grpc-status").cloned();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(header_status);
    match grpc_status.as_ref().and_then(|v| v.to_str().ok()) {
        Some("0") => {}
        Some(code) => return Err(format!("grpc-status {code}")),
        None => return Err("no grpc-status".into()),
    }
    let body = collected.to_bytes();
    let status = body.get(5..).map(serving_status).unwrap_or(0);
    if status == 1 {
        Ok(())
    } else {
        Err(format!("health status {status} (1 = SERVING)"))
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Field 1 (varint) of a HealthCheckResponse; 0 (UNKNOWN) if absent.
fn serving_status(msg: &[u8]) -> u64 {
    let mut i = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let (v, n) = read_varint(&msg[i..]);
        i += n;
        match key {
            0x08 => return v,
            k if k & 7 == 2 => i += v as usize,
            _ => {}
        }
    }
    0
}

fn read_varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_bits() {
        assert_eq!(serving_status(&[0x08, 0x01]), 1);
        assert_eq!(serving_status(&[]), 0);
        let mut v = Vec::new();
        push_varint(&mut v, 300);
        assert_eq!(read_varint(&v), (300, 2));
    }
}
