//! The admin endpoint: liveness, readiness, metrics, the config in force,
//! every endpoint's state, the recent failures, and the log level — what an
//! operator needs to understand a sidecar without attaching a debugger.

use crate::body::ResponseBody;
use crate::drain::Drain;
use crate::proxy::Proxy;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_mesh::process::LogLevelSetter;

pub(crate) struct Admin {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) set_log_level: LogLevelSetter,
    pub(crate) log_level: std::sync::Mutex<String>,
}

pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>, drain: &Drain) {
    let mut stop = drain.watch();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.signalled() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(&admin, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(v: serde_json::Value) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(format!("{v:#}\n")));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<ResponseBody> {
    let proxy = &admin.proxy;
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (Method::GET, "/ready") => match readiness(proxy) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (Method::GET, "/metrics") => {
            refresh_scrape_gauges(proxy);
            proxy.metrics.refresh_process();
            let mut r = text(StatusCode::OK, proxy.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (Method::GET, "/config") => text(StatusCode::OK, config_text(proxy)),
        (Method::GET, "/endpoints") => json(endpoints_json(proxy)),
        (Method::GET, "/failures") => {
            use crate::telemetry::failures::Filter;
            match Filter::parse(req.uri().query()) {
                Ok(f) => json(proxy.failures.json(&f)),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (Method::GET, "/log-level") => text(
            StatusCode::OK,
            format!(
                "{}\n",
                admin
                    .log_level
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_default()
            ),
        ),
        (Method::PUT, "/log-level") | (Method::POST, "/log-level") => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body\n"),
            };
            let wanted = String::from_utf8_lossy(&body).trim().to_owned();
            match (admin.set_log_level)(&wanted) {
                Ok(now) => {
                    if let Ok(mut l) = admin.log_level.lock() {
                        *l = now.clone();
                    }
                    text(StatusCode::OK, format!("{now}\n"))
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (
            _,
            "/live" | "/ready" | "/metrics" | "/config" | "/endpoints" | "/failures" | "/log-level",
        ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "weft-proxy admin: /live /ready /metrics /config /endpoints /failures /log-level\n",
        ),
    }
}

/// Whether the proxy can serve: a config applied and, in mesh mode, a
/// certificate in hand; else why not. The admin `/ready` and the probe
/// listener's answer the same.
pub(crate) fn readiness(proxy: &Proxy) -> Result<(), &'static str> {
    if proxy.mesh_mode && proxy.mesh.load().is_none() {
        Err("no mesh certificate yet")
    } else if proxy.snapshot.load().version > 0 {
        Ok(())
    } else {
        Err("no config applied yet")
    }
}

/// Values read from live state when scraped, so the request path pays nothing.
fn refresh_scrape_gauges(proxy: &Proxy) {
    use crate::resilience::limits::Kind;
    use crate::telemetry::metrics::{
        BackendLabels, BackendReasonLabels, BackendResultLabels, LimitLabels, OverflowLabels,
    };
    let snap = proxy.snapshot.load();
    let m = &proxy.metrics;
    for b in snap.backends.values() {
        let limits = &b.resilience.limits;
        for kind in [
            Kind::Connections,
            Kind::Pending,
            Kind::Requests,
            Kind::Retries,
        ] {
            let labels = LimitLabels {
                backend: b.key.to_string(),
                limit: kind.label(),
            };
            m.limit_active
                .get_or_create(&labels)
                .set(limits.active(kind) as i64);
            m.limit_max
                .get_or_create(&labels)
                .set(limits.max(kind) as i64);
        }
        let labels = BackendLabels {
            backend: b.key.to_string(),
        };
        m.ejected_endpoints
            .get_or_create(&labels)
            .set(b.unavailable() as i64);
        // Every backend's resilience series exist from the first scrape, at
        // zero, so dashboards and rate() see 0 rather than "no data".
        for reason in crate::telemetry::metrics::EJECTION_REASONS {
            drop(m.ejections.get_or_create(&BackendReasonLabels {
                backend: b.key.to_string(),
                reason,
            }));
        }
        for result in ["pass", "fail"] {
            drop(m.health_checks.get_or_create(&BackendResultLabels {
                backend: b.key.to_string(),
                result,
            }));
        }
        drop(m.panic_mode.get_or_create(&labels));
        for result in ["sent", "succeeded", "budget_exhausted", "limit"] {
            drop(m.retries.get_or_create(&BackendResultLabels {
                backend: b.key.to_string(),
                result,
            }));
        }
        for kind in [
            Kind::Connections,
            Kind::Pending,
            Kind::Requests,
            Kind::Retries,
        ] {
            drop(m.overflows.get_or_create(&OverflowLabels {
                backend: b.key.to_string(),
                limit: kind.label(),
            }));
        }
    }
}

fn config_text(proxy: &Proxy) -> String {
    let snap = proxy.snapshot.load();
    let mut out = String::new();
    let applied = crate::telemetry::timestamp::rfc3339(snap.applied_at);
    let _ = writeln!(out, "# version: {}", snap.version);
    if let Ok(st) = proxy.status.lock() {
        let _ = writeln!(out, "# source: {}", st.source);
        let _ = writeln!(out, "# applied: {applied}");
        let _ = writeln!(out, "# rejected reloads: {}", st.rejected);
        if let Some(e) = &st.last_error {
            let _ = writeln!(
                out,
                "# last reload REJECTED (the config below is still in force):"
            );
            for line in e.lines() {
                let _ = writeln!(out, "#   {line}");
            }
        }
    }
    for (file, text) in &snap.config.sources {
        let _ = writeln!(out, "---\n# file: {file}");
        out.push_str(text.trim_start_matches("---\n"));
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn endpoints_json(proxy: &Proxy) -> serde_json::Value {
    let snap = proxy.snapshot.load();
    let mut backends: Vec<_> = snap.backends.values().collect();
    backends.sort_by(|a, b| a.key.cmp(&b.key));
    let list: Vec<serde_json::Value> = backends
        .iter()
        .map(|b| {
            let set = b.endpoints.load();
            let eps: Vec<serde_json::Value> = set
                .endpoints
                .iter()
                .map(|e| {
                    use crate::resilience::outlier::Admission;
                    let (ejection, remaining) = match e.outlier.admission() {
                        Admission::Open => ("none", None),
                        Admission::Ejected(d) => ("ejected", Some(d.as_secs_f64())),
                        Admission::ProbeDue => ("probe-due", Some(0.0)),
                        Admission::Probing => ("probing", Some(0.0)),
                    };
                    let last_check_error = e.health.last_error.lock().ok().and_then(|l| l.clone());
                    let reason = (ejection != "none").then(|| e.outlier.reason().label());
                    let last = e.outlier.window.last();
                    let success_rate = b.resilience.outlier.success_rate.as_ref().map(|_| {
                        serde_json::json!({"lastTries": last.total, "lastSuccesses": last.successes})
                    });
                    serde_json::json!({
                        "address": e.addr.to_string(),
                        "weight": e.weight,
                        "identity": e.identity.as_deref(),
                        "health": e.health.label(),
                        "healthCheckFailures": e.health.failed_total.load(std::sync::atomic::Ordering::Relaxed),
                        "lastHealthCheckError": last_check_error,
                        "ejection": ejection,
                        "ejectionRemainingSeconds": remaining,
                        "ejectionReason": reason,
                        "successRate": success_rate,
                        "timesEjected": e.outlier.times_ejected(),
                        "consecutiveFailures": e.outlier.consecutive_failures(),
                        "activeRequests": e.load.active(),
                        "ewmaLatencyMs": e.load.ewma().as_secs_f64() * 1000.0,
                        "idleConnections": e.pool.idle(),
                        "http2Connected": e.pool.h2_open(),
                    })
                })
                .collect();
            let dns = b.dns_status.lock().ok().map(|d| d.clone());
            serde_json::json!({
                "backend": &*b.key,
                "protocol": format!("{:?}", b.protocol).to_lowercase(),
                "loadBalancer": format!("{:?}", b.policy),
                "discovery": match &b.discovery {
                    crate::backend::Discovery::Static(_) => serde_json::json!("static"),
                    crate::backend::Discovery::Dns(d) => serde_json::json!({
                        "dns": d.name, "port": d.port,
                        "lastError": dns.as_ref().and_then(|d| d.last_error.clone()),
                        "ttlSeconds": dns.as_ref().map(|d| d.ttl_secs),
                    }),
                },
                "endpoints": eps,
                "panicMode": b.panic.load(std::sync::atomic::Ordering::Relaxed),
                "successRate": b.resilience.outlier.success_rate.as_ref().map(|_| {
                    let s = &b.resilience.sweeps;
                    serde_json::json!({
                        "sweeps": s.count.load(std::sync::atomic::Ordering::Relaxed),
                        "lastQualifying": s.last_qualifying.load(std::sync::atomic::Ordering::Relaxed),
                        "lastThreshold": s.last_threshold(),
                    })
                }),
                "limits": {
                    "activeRequests": b.resilience.limits.active(crate::resilience::limits::Kind::Requests),
                    "maxRequests": b.resilience.limits.max(crate::resilience::limits::Kind::Requests),
                    "connections": b.resilience.limits.active(crate::resilience::limits::Kind::Connections),
                    "maxConnections": b.resilience.limits.max(crate::resilience::limits::Kind::Connections),
                    "pendingRequests": b.resilience.limits.active(crate::resilience::limits::Kind::Pending),
                    "activeRetries": b.resilience.limits.active(crate::resilience::limits::Kind::Retries),
                },
                "retryBudget": {
                    "windowRequests": b.resilience.budget.window().0,
                    "windowRetries": b.resilience.budget.window().1,
                },
            })
        })
        .collect();
    serde_json::json!({ "version": snap.version, "backends": list })
}
