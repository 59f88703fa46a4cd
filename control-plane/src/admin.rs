//! The control plane's admin endpoint (plain HTTP, loopback by default):
//! `/live`, `/ready` (503 until the cluster, with `--kubernetes`, has been
//! listed once), `/proxies` (every connected proxy, its version and
//! last NACK), `/config`, `/metrics`, and `/resources?namespace=NS&service=S`
//! (every resource the proxy of that service could see, as multi-document
//! YAML, for `weft-proxy explain`).

use crate::body::{json, text, CpBody};
use crate::state::{ControlPlane, KubernetesStatus, ProxyStatus};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_mesh::process::lock;

/// Serves a stand-in admin endpoint on a copy of `listener` until the
/// returned task is aborted, for the time before the control plane exists
/// (Kubernetes mode, while its CA Secret is fetched): `/live`, `/ready`
/// (503), `/config` (the Kubernetes status: what is missing, and why).
/// Returns the listener for [`serve`] to take over.
pub(crate) fn serve_starting(
    listener: TcpListener,
    status: Arc<KubernetesStatus>,
) -> std::io::Result<(TcpListener, tokio::task::JoinHandle<()>)> {
    let std = listener.into_std()?;
    let early = TcpListener::from_std(std.try_clone()?)?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = early.accept().await else {
                continue;
            };
            let status = status.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let status = status.clone();
                    async move { Ok::<_, Infallible>(handle_starting(&status, &req)) }
                });
                // One request a connection: the next may find the real one.
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(false)
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((TcpListener::from_std(std)?, task))
}

fn handle_starting(status: &KubernetesStatus, req: &Request<Incoming>) -> Response<CpBody> {
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "ok\n"),
        "/config" => json(
            StatusCode::OK,
            &serde_json::json!({"starting": "waiting for the CA Secret", "kubernetes": status.json()}),
        ),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: waiting for the CA Secret (see /config)\n",
        ),
    }
}

/// Serves the admin endpoint on `listener`.
pub(crate) async fn serve(cp: Arc<ControlPlane>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cp = cp.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let cp = cp.clone();
                async move { Ok::<_, Infallible>(handle_admin(&cp, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn handle_admin(cp: &ControlPlane, req: &Request<Incoming>) -> Response<CpBody> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/ready"
            if cp
                .kubernetes
                .as_ref()
                .is_some_and(|k| !k.synced.load(Ordering::Relaxed)) =>
        {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting for the first list of the cluster (see /config)\n",
            )
        }
        "/live" | "/ready" => text(StatusCode::OK, "ok\n"),
        "/proxies" => {
            let proxies: Vec<ProxyStatus> = lock(&cp.proxies).values().cloned().collect();
            json(StatusCode::OK, &proxies)
        }
        "/config" => {
            let r = cp.resources.borrow().clone();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "version": r.version,
                    "files": r.files,
                    "services": r.services,
                    "kubernetes": cp.kubernetes.as_ref().map(|k| k.json()),
                    "last_error": *lock(&cp.last_error),
                    "trust_domain": cp.trust_domain,
                }),
            )
        }
        "/metrics" => text(StatusCode::OK, metrics(cp)),
        "/resources" => resources(cp, req.uri().query()),
        _ => text(
            StatusCode::NOT_FOUND,
            "weft-control-plane admin: /live /ready /proxies /config /metrics /resources\n",
        ),
    }
}

/// `GET /resources?namespace=NS&service=SVC`: what a proxy in NS fronting
/// SVC could see — every name of its namespace's table, not only those it
/// asked for — as the YAML documents a snapshot carries.
fn resources(cp: &ControlPlane, query: Option<&str>) -> Response<CpBody> {
    let mut namespace = None;
    let mut service = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("namespace", v)) => namespace = Some(v),
            Some(("service", v)) => service = Some(v).filter(|v| !v.is_empty()),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter {pair:?}: namespace=NS&service=SVC\n"),
                )
            }
        }
    }
    let valid = |v: &str| {
        v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let Some(namespace) = namespace.filter(|n| !n.is_empty() && valid(n)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "namespace=NS is required (a lower-case name): /resources?namespace=NS&service=SVC\n",
        );
    };
    if service.is_some_and(|s| !valid(s)) {
        return text(StatusCode::BAD_REQUEST, "service=SVC: a lower-case name\n");
    }
    let r = cp.resources.borrow().clone();
    let scoped = r.catalog.visible(namespace, service);
    let mut resp = text(StatusCode::OK, scoped.yaml);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/yaml"),
    );
    resp
}

fn metrics(cp: &ControlPlane) -> String {
    use std::fmt::Write;
    let proxies = lock(&cp.proxies);
    let current = cp.resources.borrow().version.clone();
    let up_to_date = proxies
        .values()
        .filter(|p| p.resources.as_deref() == Some(current.as_str()) && p.acked == p.current)
        .count();
    let c = &cp.counters;
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    put(
        "weft_cp_connected_proxies",
        "gauge",
        "Proxies with an open watch.",
        proxies.len() as u64,
    );
    put(
        "weft_cp_proxies_up_to_date",
        "gauge",
        "Connected proxies that acknowledged the current version.",
        up_to_date as u64,
    );
    put(
        "weft_cp_pushes_total",
        "counter",
        "Snapshots sent to proxies.",
        c.pushes.load(Ordering::Relaxed),
    );
    put(
        "weft_cp_acks_total",
        "counter",
        "Snapshots proxies applied.",
        c.acks.load(Ordering::Relaxed),
    );
    put(
        "weft_cp_nacks_total",
        "counter",
        "Snapshots proxies rejected.",
        c.nacks.load(Ordering::Relaxed),
    );
    put(
        "weft_cp_certificates_issued_total",
        "counter",
        "Workload certificates signed.",
        c.certificates.load(Ordering::Relaxed),
    );
    put(
        "weft_cp_certificate_denials_total",
        "counter",
        "Certificate requests refused.",
        c.certificate_denials.load(Ordering::Relaxed),
    );
    put(
        "weft_cp_config_rejected_total",
        "counter",
        "File changes rejected as invalid.",
        c.rejected_reloads.load(Ordering::Relaxed),
    );
    for (name, help, v) in [
        ("weft_cp_injections_total", "Pods the injection webhook patched.", &c.injections),
        ("weft_cp_injection_skips_total", "Pods the injection webhook admitted unchanged (opted out, host network, already injected).", &c.injection_skips),
        ("weft_cp_injection_denials_total", "Pods the injection webhook refused (an invalid annotation).", &c.injection_denials),
        ("weft_cp_injection_bad_reviews_total", "Requests to the injection webhook that were no AdmissionReview (400).", &c.injection_bad_reviews),
    ] {
        put(name, "counter", help, v.load(Ordering::Relaxed));
    }
    out
}
