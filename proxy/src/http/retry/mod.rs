//! One request to a backend, tried as many times as is safe and useful.
//!
//! Safe: a connect failure or a refused stream means the upstream never saw
//! the request, so it is always retried (even a streamed body: nothing was
//! consumed). A status or reset is retried only for idempotent methods,
//! unless the policy opts in. Useful: a retry goes to another endpoint when
//! there is one, waits a full-jitter backoff (or `Retry-After`), stays inside
//! the request timeout, holds a retry slot, and is paid from the retry budget
//! — over budget, the original failure is returned.

mod decision;
mod hedge;
mod resend;
mod stop;

use crate::backend::{Backend, Endpoint};
use crate::body::peek::Peeked;
use crate::body::ResponseBody;
use crate::h1::idempotent;
use crate::http::errors::ProxyError;
use crate::http::failure::{error_failure, status_failure};
use crate::http::forward::{Outgoing, Shape, Target, Unsent, Wire};
use crate::http::observe::Observer;
use crate::http::within::within;
use crate::proxy::Proxy;
use crate::resilience::limits::Kind;
use crate::resilience::outlier::Transition;
use crate::resilience::policy::{RetryOn, RetryPolicy};
use crate::snapshot::{Rule, WeightedBackend};
use crate::telemetry::metrics::RetryResult;
use crate::transport::ConnectError;
use http::{Response, StatusCode};
use resend::Resend;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use weft_mesh::config::policy::RetryCondition;
use weft_mesh::config::Protocol;

/// What every try of one request shares.
struct Ctx<'a> {
    proxy: &'a Arc<Proxy>,
    backend: &'a Arc<Backend>,
    rule: &'a Rule,
    policy: &'a RetryPolicy,
    wire: Wire,
    deadline: Option<Instant>,
    per_try: Option<Duration>,
    hash: Option<u64>,
}

impl<'a> Ctx<'a> {
    fn target(
        &self,
        endpoint: &'a Arc<Endpoint>,
        mesh: Option<&'a crate::tls::mesh::MeshTls>,
    ) -> Target<'a> {
        Target {
            endpoint,
            wire: self.wire,
            settings: &self.backend.settings,
            limits: Some(&self.backend.resilience.limits),
            mesh,
            metrics: &self.proxy.metrics,
        }
    }

    fn pick(&self, tried: &[SocketAddr]) -> Result<Arc<Endpoint>, ProxyError> {
        self.backend
            .pick(self.hash, tried)
            .ok_or_else(|| ProxyError::NoEndpoints(self.backend.key.to_string()))
    }
}

impl hedge::Engine for Ctx<'_> {
    fn backend(&self) -> &Backend {
        self.backend
    }
    fn policy(&self) -> &RetryPolicy {
        self.policy
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    fn mesh(&self) -> Option<Arc<crate::tls::mesh::MeshTls>> {
        self.proxy.mesh.load_full()
    }
    fn pick(&self, tried: &[SocketAddr]) -> Result<Arc<Endpoint>, ProxyError> {
        Ctx::pick(self, tried)
    }
    fn send<'a>(
        &'a self,
        ep: &'a Arc<Endpoint>,
        mesh: Option<&'a crate::tls::mesh::MeshTls>,
        shape: Shape,
        out: Outgoing,
    ) -> hedge::SendFuture<'a> {
        let target = self.target(ep, mesh);
        Box::pin(within(
            self.deadline,
            self.per_try,
            self.rule.request_timeout,
            async move {
                let up = target.connect(shape).await?;
                target.send(up, out).await
            },
        ))
    }
    fn outcome(
        &self,
        ep: &Arc<Endpoint>,
        result: &Result<Response<ResponseBody>, ProxyError>,
        obs: &mut Observer<'_>,
    ) {
        outcome(self.backend, ep, result, obs)
    }
}

/// Sends `out` to `wb`'s backend, retrying per its policy; `out.upgrade`
/// requests are tried once. Tells `obs` each try's endpoint, the retries
/// sent and why they stopped.
///
/// The two paths are separate futures so that neither makes the other (and
/// every request's future, which is moved as it is built) larger.
pub(crate) async fn call(
    proxy: &Arc<Proxy>,
    wb: &WeightedBackend,
    rule: &Rule,
    out: Outgoing,
    hash: Option<u64>,
    obs: &mut Observer<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let backend = &wb.backend;
    let res = &backend.resilience;
    let Some(request_permit) = res.limits.try_acquire(Kind::Requests) else {
        obs.overflow(Kind::Requests.label());
        backend.metrics.overflow(Kind::Requests.label());
        return Err(ProxyError::Overloaded(
            backend.key.to_string(),
            Kind::Requests.label(),
        ));
    };
    res.budget.record_request_at(Instant::from_std(out.started));
    let ctx = Ctx {
        proxy,
        backend,
        rule,
        policy: &wb.retry,
        wire: Wire::for_protocol(backend.protocol),
        deadline: rule.request_timeout.map(|t| Instant::now() + t),
        per_try: wb.per_try_timeout,
        hash,
    };
    let hedged = res.hedge.as_ref().filter(|_| {
        out.upgrade.is_none() && hedge::eligible(&out.req, ctx.policy.max_buffered_body)
    });
    // Upgrades and requests that cannot be retried go once, without copies.
    let result = if let Some(h) = hedged {
        Box::pin(hedge::call(&ctx, h, out, obs)).await
    } else if out.upgrade.is_some() || ctx.policy.attempts == 0 {
        call_once(&ctx, out, obs).await
    } else {
        call_retrying(&ctx, out, obs).await
    };
    result.map(|r| r.map(|b| b.with_permit(request_permit)))
}

async fn call_once(
    ctx: &Ctx<'_>,
    out: Outgoing,
    obs: &mut Observer<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mesh = ctx.proxy.mesh.load_full();
    let ep = ctx.pick(&[])?;
    obs.trying(0, &ep);
    let target = ctx.target(&ep, mesh.as_deref());
    let result = within(ctx.deadline, ctx.per_try, ctx.rule.request_timeout, async {
        let up = target.connect(out.shape()).await?;
        target.send(up, out).await.map_err(|u| u.error)
    })
    .await;
    outcome(ctx.backend, &ep, &result, obs);
    result
}

async fn call_retrying(
    ctx: &Ctx<'_>,
    out: Outgoing,
    obs: &mut Observer<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (backend, policy) = (ctx.backend, ctx.policy);
    let res = &backend.resilience;
    let mesh = ctx.proxy.mesh.load_full();
    let Outgoing {
        req,
        authority,
        started,
        ..
    } = out;
    let method_safe = idempotent(req.method()) || policy.non_idempotent;
    let (first, mut request) = Resend::new(req, keep_copy(ctx), policy.max_buffered_body);
    let shape = Shape {
        started,
        upgrade: false,
        bodiless: request.bodiless(),
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_permit = None;
    // The request the next try sends: taken (a copy made) before the wait
    // that precedes a retry, so a retry is only decided on with a request
    // in hand. A try takes it only once it has a connection, so a failure
    // to connect leaves it here.
    let mut next = Some(first);
    for attempt in 0..=policy.attempts {
        let ep = ctx.pick(&tried)?;
        tried.push(ep.addr);
        obs.trying(attempt, &ep);
        let target = ctx.target(&ep, mesh.as_deref());
        let next = &mut next;
        let tried_once = within(ctx.deadline, ctx.per_try, ctx.rule.request_timeout, async {
            let up = target.connect(shape).await?;
            let Some(req) = next.take() else {
                return Err(Unsent::from(ProxyError::NoBackend));
            };
            let out = Outgoing {
                req,
                authority: authority.clone(),
                upgrade: None,
                started,
            };
            let resp = target.send(up, out).await?;
            Ok(match wants_grpc_peek(&resp, backend, policy, attempt) {
                true => Box::pin(peek_grpc_status(resp, policy)).await,
                false => resp,
            })
        })
        .await;
        let result = tried_once.map_err(|u| {
            if let Some(req) = u.request {
                request.unsent(req);
            }
            u.error
        });
        outcome(backend, &ep, &result, obs);
        let failure = match &result {
            Ok(r) => status_failure(r.status(), r.headers(), policy),
            Err(e) => error_failure(e),
        };
        if failure.is_none() {
            if attempt > 0 {
                backend.metrics.retry(RetryResult::Succeeded);
            }
            return result;
        }
        let t = decision::Try {
            attempt,
            failure: failure.as_ref(),
            method_safe,
            resendable: next.is_some() || request.resendable(),
        };
        let mut allowance = Allowance {
            limits: &res.limits,
            budget: &res.budget,
            permit: &mut retry_permit,
        };
        let left = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let Some(wait) = stop::wait_or_answer(
            decision::decide(&t, policy, &mut allowance, left, rand::random()),
            backend,
            obs,
        ) else {
            return result;
        };
        // The request for the retry: still here (the try never connected),
        // handed back unsent, or a copy; if none can be had (the client's
        // body failed meanwhile), the failure is the answer.
        if next.is_none() {
            *next = request.next();
        }
        if next.is_none() {
            obs.retries_exhausted(false);
            return result;
        }
        obs.retrying(attempt + 1, ep.addr, stop::retry_reason(&result), wait);
        drop(result);
        backend.metrics.retry(RetryResult::Sent);
        tracing::debug!(backend = %backend.key, endpoint = %ep.addr, attempt = attempt + 1, ?wait, "retrying");
        tokio::time::sleep(wait).await;
    }
    Err(ProxyError::NoBackend)
}

/// Whether the policy may resend a request an upstream already received
/// (a status, a reset, a gRPC status, an HTTP/2 refused stream), so a copy
/// must be kept: a request that never left comes back from the connection
/// unsent and needs none.
fn keep_copy(ctx: &Ctx<'_>) -> bool {
    let on = ctx.policy.retry_on;
    on.meets(RetryOn::RESEND)
        || (ctx.backend.protocol == Protocol::Grpc && on.meets(RetryOn::GRPC))
        || (ctx.wire == Wire::Http2 && on.has(RetryCondition::RefusedStream))
}

/// For gRPC, the status often arrives in trailers: a small response is
/// read ahead (up to the buffer cap) to see it.
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

/// Reads ahead of a gRPC response and lifts the status from its trailers
/// into the headers the retry decision reads; the client gets every frame.
async fn peek_grpc_status(
    resp: Response<ResponseBody>,
    policy: &RetryPolicy,
) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let (peeked, trailers) = Peeked::read(body, policy.max_buffered_body).await;
    if let Some(s) = trailers.as_ref().and_then(|t| t.get("grpc-status")) {
        parts.headers.insert("grpc-status", s.clone());
    }
    Response::from_parts(parts, ResponseBody::peeked(peeked))
}

/// Feeds a try's result to outlier detection and tells `obs` what it says
/// of the endpoint: a limit it ran into, an ejection it caused.
fn outcome(
    backend: &Backend,
    ep: &Arc<Endpoint>,
    result: &Result<Response<ResponseBody>, ProxyError>,
    obs: &mut Observer<'_>,
) {
    obs.tried(ep, result);
    if let Err(ProxyError::Connect(ConnectError::Overloaded(limit))) = result {
        obs.overflow(limit);
    }
    let cfg = &backend.resilience.outlier;
    let fault = match result {
        Ok(r) => r.status().is_server_error(),
        Err(e) => error_failure(e).is_some_and(|f| f.endpoint_fault),
    };
    if cfg.success_rate.is_some() && (fault || result.is_ok()) {
        // Success-rate counts (see resilience::success_rate for what counts).
        ep.outlier.window.record(!fault);
    }
    let t = if fault {
        let total = backend.endpoints.load().endpoints.len().max(1);
        ep.outlier.on_failure(cfg, || {
            (backend.unavailable() + 1) * 100 <= cfg.max_ejection_percent as usize * total
        })
    } else {
        ep.outlier.on_success(cfg)
    };
    match t {
        Transition::Ejected(d) => {
            let reason = ep.outlier.reason().label();
            tracing::warn!(backend = %backend.key, endpoint = %ep.addr, ejected_for = ?d, reason, "endpoint ejected (consecutive failures, or its probe failed)");
            backend.metrics.ejection(reason);
            backend
                .metrics
                .ejected_endpoints
                .set(backend.unavailable() as i64);
            obs.ejected(ep.addr);
        }
        Transition::Restored => {
            tracing::info!(backend = %backend.key, endpoint = %ep.addr, "ejected endpoint answered its probe; back in the balancer");
            backend
                .metrics
                .ejected_endpoints
                .set(backend.unavailable() as i64);
        }
        Transition::EarlyProbeFailed => {
            tracing::debug!(backend = %backend.key, endpoint = %ep.addr, "ejected endpoint failed an early probe; stays ejected");
        }
        Transition::None => {}
    }
}

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
