//! The injection webhook's HTTPS endpoint: `POST /inject` takes an
//! `admission.k8s.io/v1` AdmissionReview and answers one with the same
//! uid, allowed with a base64 JSON Patch (`patchType: JSONPatch`), allowed
//! unchanged (skipped Pods, other kinds or operations), or refused with a
//! message ([`patch::decide`]). A body that is not an AdmissionReview with
//! a uid gets a 400 with the reason: without a uid there is no review to
//! answer.

use super::patch::{self, Decision};
use super::settings::Settings;
use crate::body::{json, text, CpBody};
use crate::state::Counters;
use arc_swap::ArcSwap;
use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json as value, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The path the webhook configuration names.
pub(crate) const PATH: &str = "/inject";
/// Largest review read (the API server caps objects near 3 MiB).
const MAX_REVIEW: usize = 8 * 1024 * 1024;
/// A caller must finish its TLS handshake, and each request head, within
/// this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const API_VERSION: &str = "admission.k8s.io/v1";

/// Serves the webhook on `listener` with the certificate `acceptor` holds
/// at each handshake (it is renewed in place), for ever; each answer is
/// counted in `counters`' `injection*` (for `/metrics`).
pub(crate) async fn serve<C>(
    listener: TcpListener,
    acceptor: Arc<ArcSwap<TlsAcceptor>>,
    settings: Arc<Settings>,
    counters: C,
) where
    C: std::ops::Deref<Target = Counters> + Clone + Send + Sync + 'static,
{
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.load_full();
        let settings = settings.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = service_fn(move |req| {
                let settings = settings.clone();
                let counters = counters.clone();
                async move { Ok::<_, Infallible>(handle(&settings, &counters, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        });
    }
}

async fn handle(
    settings: &Settings,
    counters: &Counters,
    req: Request<Incoming>,
) -> Response<CpBody> {
    if req.uri().path() != PATH {
        return text(
            StatusCode::NOT_FOUND,
            "weft-control-plane webhook: POST /inject\n",
        );
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let answered = match Limited::new(req.into_body(), MAX_REVIEW).collect().await {
        Ok(body) => answer(&body.to_bytes(), settings),
        Err(e) => Err(format!("cannot read the AdmissionReview: {e}")),
    };
    match answered {
        Ok(review) => {
            let response = &review["response"];
            let counter = match (response["allowed"].as_bool(), response.get("patch")) {
                (Some(true), Some(_)) => &counters.injections,
                (Some(true), None) => &counters.injection_skips,
                _ => &counters.injection_denials,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            json(StatusCode::OK, &review)
        }
        Err(why) => {
            counters
                .injection_bad_reviews
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook: 400: {why}");
            text(StatusCode::BAD_REQUEST, format!("{why}\n"))
        }
    }
}

/// The AdmissionReview answering `body`, or why `body` is not one.
pub(crate) fn answer(body: &[u8], settings: &Settings) -> Result<Value, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review["kind"] != "AdmissionReview" || review["apiVersion"] != API_VERSION {
        return Err(format!(
            "not an {API_VERSION} AdmissionReview (kind {}, apiVersion {})",
            review["kind"], review["apiVersion"]
        ));
    }
    let request = &review["request"];
    let uid = match request["uid"].as_str() {
        Some(uid) if !uid.is_empty() => uid,
        _ => return Err("the AdmissionReview has no request.uid".into()),
    };
    let response = match decide(request, settings) {
        Decision::Skip(why) => {
            tracing::debug!(pod = %describe(request), "not injected: {why}");
            value!({"uid": uid, "allowed": true})
        }
        Decision::Inject(ops) => {
            tracing::info!(pod = %describe(request), "injected");
            let patch = serde_json::to_vec(&ops).unwrap_or_default();
            value!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            })
        }
        Decision::Deny(message) => {
            tracing::warn!(pod = %describe(request), "refused: {message}");
            value!({
                "uid": uid,
                "allowed": false,
                "status": {
                    "code": 400,
                    "reason": "BadRequest",
                    "message": format!("weft sidecar injection: {message}"),
                },
            })
        }
    };
    Ok(value!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}))
}

/// The decision for one review's request: only Pod CREATEs are injected.
fn decide(request: &Value, settings: &Settings) -> Decision {
    let kind = &request["kind"];
    if kind["group"] != "" || kind["kind"] != "Pod" {
        return Decision::Skip(format!("not a Pod ({kind})"));
    }
    if request["operation"] != "CREATE" {
        return Decision::Skip(format!("operation {} is not CREATE", request["operation"]));
    }
    if !request["object"].is_object() {
        return Decision::Deny("the AdmissionReview carries no Pod (request.object)".into());
    }
    patch::decide(&request["object"], settings)
}

/// `namespace/name` of the reviewed Pod, for logs.
fn describe(request: &Value) -> String {
    let meta = &request["object"]["metadata"];
    let ns = request["namespace"]
        .as_str()
        .or_else(|| meta["namespace"].as_str())
        .unwrap_or("");
    let name = meta["name"]
        .as_str()
        .or_else(|| request["name"].as_str())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| meta["generateName"].as_str().map(|g| format!("{g}*")))
        .unwrap_or_default();
    format!("{ns}/{name}")
}
