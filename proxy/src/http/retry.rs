//! One request to a backend, tried as many times as is safe and useful.
//!
//! Safe: a connect failure or a refused stream means the upstream never saw
//! the request, so it is always retried (even a streamed body: nothing was
//! consumed). A status or reset is retried only for idempotent methods,
//! unless the policy opts in. Useful: a retry goes to another endpoint when
//! there is one, waits a full-jitter backoff (or `Retry-After`), stays inside
//! the request timeout, holds a retry slot, and is paid from the retry budget
//! — over budget, the original failure is returned.

use crate::backend::{Backend, Endpoint};
use crate::body::{RequestBody, ResponseBody};
use crate::h1::idempotent;
use crate::http::errors::ProxyError;
use crate::http::failure::{error_failure, status_failure};
use crate::http::forward::{self, Outgoing, Unsent, Wire};
use crate::http::within::within;
use crate::proxy::Proxy;
use crate::resilience::limits::Kind;
use crate::resilience::outlier::Transition;
use crate::resilience::policy::{RetryOn, RetryPolicy};
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::access_log::{EventKind, UpstreamInfo};
use crate::telemetry::metrics::{BackendLabels, BackendResultLabels, OverflowLabels};
use crate::transport::ConnectError;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weft_mesh::config::policy::RetryCondition;
use weft_mesh::config::Protocol;

/// The request, kept so each try can be rebuilt.
struct Template {
    parts: http::request::Parts,
    body: Option<Bytes>,
    /// A streamed body, handed to the first try that gets a connection.
    streaming: Option<RequestBody>,
    /// The body is streamed: once handed out it cannot be sent again.
    streamed: bool,
}

impl Template {
    /// The request itself, for a single send (no copy).
    fn take(&mut self) -> Option<Request<RequestBody>> {
        let body = match self.streaming.take() {
            Some(b) => b,
            None => match self.body.take() {
                Some(b) => RequestBody::Full(Some(b)),
                None => RequestBody::Empty,
            },
        };
        let parts = std::mem::replace(&mut self.parts, http::Request::new(()).into_parts().0);
        Some(Request::from_parts(parts, body))
    }

    fn replayable(&self) -> bool {
        !self.streamed
    }

    fn next(&mut self) -> Option<Request<RequestBody>> {
        let body = match self.streaming.take() {
            Some(b) => b,
            None if self.body.is_some() => RequestBody::Full(self.body.clone()),
            None => RequestBody::Empty,
        };
        let mut b = Request::builder()
            .method(self.parts.method.clone())
            .uri(self.parts.uri.clone())
            .version(self.parts.version);
        if let Some(h) = b.headers_mut() {
            *h = self.parts.headers.clone();
        }
        b.body(body).ok()
    }
}

/// What every try of one request shares.
struct Ctx<'a> {
    proxy: &'a Arc<Proxy>,
    backend: &'a Arc<Backend>,
    rule: &'a Rule,
    wire: Wire,
    deadline: Option<Instant>,
    per_try: Option<Duration>,
    hash: Option<u64>,
}

/// Sends `out` to `backend`, retrying per policy. `out.upgrade` requests are
/// tried once. With `info` (the access log is on), notes the last try's
/// endpoint, the retries sent and whether retries ran out.
///
/// The two paths are separate futures so that neither makes the other (and
/// every request's future, which is moved as it is built) larger.
pub async fn call(
    proxy: &Arc<Proxy>,
    wb: &WeightedBackend,
    rule: &Rule,
    out: Outgoing,
    hash: Option<u64>,
    info: Option<&mut UpstreamInfo>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let backend = &wb.backend;
    let res = &backend.resilience;
    let Some(request_permit) = res.limits.try_acquire(Kind::Requests) else {
        if let Some(i) = info {
            i.event(EventKind::Overflow {
                limit: Kind::Requests.label(),
            });
        }
        return Err(overflow(proxy, backend, Kind::Requests));
    };
    res.budget.record_request_at(Instant::from_std(out.started));
    let policy = &*wb.retry;
    let ctx = Ctx {
        proxy,
        backend,
        rule,
        wire: Wire::for_protocol(backend.protocol),
        deadline: rule.request_timeout.map(|t| Instant::now() + t),
        per_try: wb.per_try_timeout,
        hash,
    };
    // Upgrades and requests that cannot be retried go once, without copies.
    let result = if out.upgrade.is_some() || policy.attempts == 0 {
        call_once(&ctx, out, info).await
    } else {
        call_retrying(&ctx, policy, out, info).await
    };
    result.map(|r| r.map(|b| b.with_permit(request_permit)))
}

async fn call_once(
    ctx: &Ctx<'_>,
    out: Outgoing,
    info: Option<&mut UpstreamInfo>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Ctx {
        proxy,
        backend,
        rule,
        ..
    } = *ctx;
    let mesh = proxy.mesh.load_full();
    let pick = backend
        .pick(ctx.hash, &[], &proxy.metrics)
        .ok_or_else(|| ProxyError::NoEndpoints(backend.key.to_string()))?;
    let ep = pick.endpoint;
    let mut info = info;
    if let Some(i) = info.as_deref_mut() {
        i.endpoint = Some(ep.addr);
        i.identity.clone_from(&ep.identity);
    }
    let result = within(ctx.deadline, ctx.per_try, rule.request_timeout, async {
        let up = forward::connect(
            &ep,
            ctx.wire,
            &backend.settings,
            &proxy.metrics,
            Some(&backend.resilience.limits),
            out.started,
            mesh.as_deref(),
            out.upgrade.is_some(),
            out.upgrade.is_none() && out.req.body().is_end_stream(),
        )
        .await?;
        forward::send(&ep, up, &backend.settings, &proxy.metrics, out).await
    })
    .await;
    let ejected = report(proxy, backend, &ep, &result);
    if let Some(i) = info {
        note(i, &ep, &result, ejected);
    }
    result
}

async fn call_retrying(
    ctx: &Ctx<'_>,
    policy: &RetryPolicy,
    out: Outgoing,
    mut info: Option<&mut UpstreamInfo>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Ctx {
        proxy,
        backend,
        rule,
        wire,
        deadline,
        per_try,
        hash,
    } = *ctx;
    let res = &backend.resilience;
    let mesh = proxy.mesh.load_full();
    let Outgoing {
        req,
        authority,
        started,
        ..
    } = out;
    let (parts, body) = req.into_parts();
    let mut template = Template {
        parts,
        body: None,
        streaming: None,
        streamed: false,
    };
    match body {
        RequestBody::Incoming(b) if !b.is_end_stream() => {
            let fits = b
                .size_hint()
                .exact()
                .is_some_and(|n| n <= policy.max_buffered_body);
            if fits {
                // Small and of known size: keep a copy to replay.
                let bytes = b
                    .collect()
                    .await
                    .map_err(|_| ProxyError::BadRequest("the request body could not be read"))?
                    .to_bytes();
                template.body = Some(bytes);
            } else {
                template.streaming = Some(RequestBody::Incoming(b));
                template.streamed = true;
            }
        }
        RequestBody::Full(b) => template.body = b,
        _ => {}
    }
    // Only a policy that may resend a request the upstream already received
    // (status, reset, gRPC status, HTTP/2 refused stream) needs a copy kept:
    // a request that never left comes back from the connection unsent.
    let keep_copy = policy.retry_on.meets(RetryOn::RESEND)
        || (backend.protocol == Protocol::Grpc && policy.retry_on.meets(RetryOn::GRPC))
        || (wire == Wire::Http2 && policy.retry_on.has(RetryCondition::RefusedStream));
    let method_safe = idempotent(&template.parts.method) || policy.non_idempotent;
    let bodiless = template.body.is_none() && template.streaming.is_none();
    let mut pending: Option<Request<RequestBody>> = if keep_copy { None } else { template.take() };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_permit = None;
    for attempt in 0..=policy.attempts {
        let pick = backend
            .pick(hash, &tried, &proxy.metrics)
            .ok_or_else(|| ProxyError::NoEndpoints(backend.key.to_string()))?;
        let ep = pick.endpoint;
        tried.push(ep.addr);
        if let Some(i) = info.as_deref_mut() {
            i.endpoint = Some(ep.addr);
            i.identity.clone_from(&ep.identity);
            i.retries = attempt;
        }
        let settings = &backend.settings;
        let outcome = within(deadline, per_try, rule.request_timeout, async {
            let up = forward::connect(
                &ep,
                wire,
                settings,
                &proxy.metrics,
                Some(&res.limits),
                started,
                mesh.as_deref(),
                false,
                bodiless,
            )
            .await?;
            let req = match pending.take() {
                Some(r) => r,
                None if keep_copy => template
                    .next()
                    .ok_or(ProxyError::BadRequest("invalid request"))?,
                // The request went out and no copy was kept: nothing to send.
                None => return Err(Unsent::from(ProxyError::NoBackend)),
            };
            let out = Outgoing {
                req,
                authority: authority.clone(),
                upgrade: None,
                started,
            };
            let resp = forward::send_or_unsent(&ep, up, settings, &proxy.metrics, out).await?;
            Ok(match wants_grpc_peek(&resp, backend, policy, attempt) {
                true => Box::pin(peek_grpc_trailers(resp, policy)).await,
                false => resp,
            })
        })
        .await;
        let result = match outcome {
            Ok(r) => Ok(r),
            Err(u) => {
                if u.request.is_some() {
                    pending = u.request;
                }
                Err(u.error)
            }
        };
        let ejected = report(proxy, backend, &ep, &result);
        if let Some(i) = info.as_deref_mut() {
            note(i, &ep, &result, ejected);
        }
        let failure = match &result {
            Ok(r) => status_failure(r.status(), r.headers(), policy),
            Err(e) => error_failure(e),
        };
        if failure.is_none() {
            if attempt > 0 {
                retry_metric(proxy, backend, "succeeded");
            }
            return result;
        }
        let t = decision::Try {
            attempt,
            failure: failure.as_ref(),
            method_safe,
            resendable: pending.is_some() || (keep_copy && template.replayable()),
        };
        let mut allowance = Allowance {
            limits: &res.limits,
            budget: &res.budget,
            permit: &mut retry_permit,
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let wait = match decision::decide(&t, policy, &mut allowance, left, rand::random()) {
            Decision::Retry(wait) => wait,
            Decision::Answer | Decision::OutOfTime => {
                if let Some(i) = info.as_deref_mut() {
                    i.retries_exhausted = false;
                }
                return result;
            }
            Decision::GiveUp(spent) => {
                if let Some(i) = info.as_deref_mut() {
                    i.retries_exhausted = true;
                    if spent == Spent::RetrySlots {
                        i.event(EventKind::Overflow {
                            limit: Kind::Retries.label(),
                        });
                    }
                }
                match spent {
                    Spent::Attempts => {}
                    Spent::RetrySlots => {
                        retry_metric(proxy, backend, "limit");
                        proxy
                            .metrics
                            .overflows
                            .get_or_create(&OverflowLabels {
                                backend: backend.key.to_string(),
                                limit: Kind::Retries.label(),
                            })
                            .inc();
                    }
                    Spent::Budget => retry_metric(proxy, backend, "budget_exhausted"),
                }
                return result;
            }
        };
        if let Some(i) = info.as_deref_mut() {
            i.event(EventKind::Retry {
                attempt: attempt + 1,
                endpoint: ep.addr,
                reason: retry_reason(&result),
            });
        }
        drop(result);
        retry_metric(proxy, backend, "sent");
        tracing::debug!(backend = %backend.key, endpoint = %ep.addr, attempt = attempt + 1, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }
    Err(ProxyError::NoBackend)
}

/// For gRPC, the status often arrives in trailers: read a small response
/// ahead (up to the buffer cap) to see it, and hand on what was read.
fn wants_grpc_peek(
    resp: &Response<ResponseBody>,
    backend: &Backend,
    policy: &RetryPolicy,
    attempt: u32,
) -> bool {
    backend.protocol == Protocol::Grpc
        && attempt < policy.attempts
        && policy.retry_on.meets(RetryOn::GRPC)
        && !resp.headers().contains_key("grpc-status")
        && resp.status() == StatusCode::OK
}

/// Reads ahead of a gRPC response (see [`wants_grpc_peek`]).
async fn peek_grpc_trailers(
    resp: Response<ResponseBody>,
    policy: &RetryPolicy,
) -> Response<ResponseBody> {
    let (mut parts, mut body) = resp.into_parts();
    let mut frames = VecDeque::new();
    let mut seen = 0u64;
    while seen <= policy.max_buffered_body {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(t) = f.trailers_ref() {
                    // Lift the status into the headers the retry logic reads.
                    if let Some(s) = t.get("grpc-status") {
                        parts.headers.insert("grpc-status", s.clone());
                    }
                }
                seen += f.data_ref().map_or(0, |d| d.len() as u64);
                frames.push_back(f);
            }
            Some(Err(_)) | None => break,
        }
    }
    Response::from_parts(parts, ResponseBody::peeked_from(frames, body))
}

/// What a try's result says of its endpoint, for a span's events: an
/// ejection it caused, a limit it ran into.
fn note(
    i: &mut UpstreamInfo,
    ep: &Endpoint,
    result: &Result<Response<ResponseBody>, ProxyError>,
    ejected: bool,
) {
    if let Err(ProxyError::Connect(ConnectError::Overloaded(limit))) = result {
        i.event(EventKind::Overflow { limit });
    }
    if ejected {
        i.event(EventKind::Ejected { endpoint: ep.addr });
    }
}

/// Why a try is retried: its error's cause, or its status.
fn retry_reason(result: &Result<Response<ResponseBody>, ProxyError>) -> &'static str {
    match result {
        Err(e) => e.kind().1,
        Ok(r) if r.status().is_server_error() => "5xx",
        Ok(_) => "retriable-status",
    }
}

/// Feeds a try's result to outlier detection; true when it ejected `ep`.
fn report(
    proxy: &Proxy,
    backend: &Backend,
    ep: &Arc<Endpoint>,
    result: &Result<Response<ResponseBody>, ProxyError>,
) -> bool {
    let cfg = &backend.resilience.outlier;
    let fault = match result {
        Ok(r) => r.status().is_server_error(),
        Err(e) => error_failure(e).is_some_and(|f| f.endpoint_fault),
    };
    let t = if fault {
        let total = backend.endpoints.load().endpoints.len().max(1);
        ep.outlier.on_failure(cfg, || {
            (backend.unavailable() + 1) * 100 <= cfg.max_ejection_percent as usize * total
        })
    } else {
        ep.outlier.on_success(cfg)
    };
    let labels = || BackendLabels {
        backend: backend.key.to_string(),
    };
    match t {
        Transition::Ejected(d) => {
            tracing::warn!(backend = %backend.key, endpoint = %ep.addr, ejected_for = ?d, "endpoint ejected after consecutive failures");
            proxy.metrics.ejections.get_or_create(&labels()).inc();
            proxy
                .metrics
                .ejected_endpoints
                .get_or_create(&labels())
                .set(backend.unavailable() as i64);
            true
        }
        Transition::Restored => {
            tracing::info!(backend = %backend.key, endpoint = %ep.addr, "ejected endpoint answered its probe; back in the balancer");
            proxy
                .metrics
                .ejected_endpoints
                .get_or_create(&labels())
                .set(backend.unavailable() as i64);
            false
        }
        Transition::None => false,
    }
}

fn retry_metric(proxy: &Proxy, backend: &Backend, result: &'static str) {
    proxy
        .metrics
        .retries
        .get_or_create(&BackendResultLabels {
            backend: backend.key.to_string(),
            result,
        })
        .inc();
}

fn overflow(proxy: &Proxy, backend: &Backend, kind: Kind) -> ProxyError {
    proxy
        .metrics
        .overflows
        .get_or_create(&OverflowLabels {
            backend: backend.key.to_string(),
            limit: kind.label(),
        })
        .inc();
    ProxyError::Overloaded(backend.key.to_string(), kind.label())
}

/// Whether a failed try is tried again (a pure function, tested over its table).
mod decision;

use decision::{Decision, Spent};

/// The backend's limits as a retry sees them: a retry slot, taken once
/// per request and held until it ends, and the retry budget.
struct Allowance<'a> {
    limits: &'a crate::resilience::limits::Limits,
    budget: &'a crate::resilience::budget::RetryBudget,
    permit: &'a mut Option<crate::resilience::limits::Permit>,
}

impl decision::Allowance for Allowance<'_> {
    fn retry_slot(&mut self) -> bool {
        if self.permit.is_none() {
            *self.permit = self.limits.try_acquire(Kind::Retries);
        }
        self.permit.is_some()
    }

    fn budget(&mut self) -> bool {
        self.budget.try_retry()
    }
}
