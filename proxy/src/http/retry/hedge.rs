//! Hedged requests (`TrafficPolicy.spec.hedge`): when a try has no
//! response headers after the hedge delay, a copy of the request goes to
//! another endpoint, and the first answer wins.
//!
//! Only idempotent requests whose body can be kept whole (within
//! `retry.maxBufferedBody`) are hedged; `retry::call` sends every other
//! request its usual way. A request with a body is hedged only once the
//! client's body has been read to its end (the first try has sent it). The
//! rules:
//! - the delay is fixed, or a percentile of the backend's recent
//!   response-header latency (`resilience::latency`); while that has too
//!   few samples, no hedge is sent, but the tries feed it;
//! - a hedge goes to an endpoint no try of this request went to, takes the
//!   request's retry slot (`maxRetries`) and one unit of the retry budget,
//!   like a retry; without them no hedge is sent (`no-budget`), nor when no
//!   other endpoint or no copy of the request is left;
//! - the first try whose response headers arrive, and do not fail per the
//!   retry policy (`retryOn`), wins; the tries still in flight are dropped:
//!   HTTP/2 cancels their stream (RST_STREAM CANCEL), HTTP/1 closes their
//!   connection (it is never pooled again);
//! - a try that fails while another is in flight is set aside and the
//!   others are awaited; when all failed, the last failure goes to the
//!   retry policy as any failed try does: the hedges count as attempts
//!   made (`attempts` minus the hedges remain), and the retries wait their
//!   backoff.
//!
//! A separate future from `call_retrying`, so a request that is not hedged
//! pays nothing for it.

use super::decision;
use super::resend::Resend;
use super::stop;
use crate::backend::{Backend, Endpoint};
use crate::body::{RequestBody, ResponseBody};
use crate::h1::idempotent;
use crate::http::errors::ProxyError;
use crate::http::failure::{error_failure, status_failure};
use crate::http::forward::{Outgoing, Shape, Unsent};
use crate::http::observe::Observer;
use crate::resilience::limits::{Kind, Permit};
use crate::resilience::policy::{HedgePolicy, RetryPolicy};
use crate::telemetry::metrics::RetryResult;
use crate::tls::mesh::MeshTls;
use http::uri::Authority;
use http::{Request, Response};
use http_body::Body as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::time::{Instant, Sleep};

/// Indexes of `BackendMetrics::hedges` (`HEDGE_RESULTS`).
const SENT: usize = 0;
const WON: usize = 1;
const NO_BUDGET: usize = 2;

/// Whether `req` may be hedged: an idempotent method, and a body small
/// enough to keep a copy of (`cap`), or none.
pub(super) fn eligible(req: &Request<RequestBody>, cap: u64) -> bool {
    idempotent(req.method()) && req.body().size_hint().exact().is_some_and(|n| n <= cap)
}

/// What the hedging loop needs of the retry engine (its request context
/// implements it; a trait, so this module does not reach back into its
/// parent).
pub(super) trait Engine: Sync {
    fn backend(&self) -> &Backend;
    fn policy(&self) -> &RetryPolicy;
    fn deadline(&self) -> Option<Instant>;
    fn mesh(&self) -> Option<Arc<MeshTls>>;
    /// An endpoint not in `tried` if there is one.
    fn pick(&self, tried: &[SocketAddr]) -> Result<Arc<Endpoint>, ProxyError>;
    /// One try of `out` at `ep`, under the per-try and request deadlines.
    fn send<'a>(
        &'a self,
        ep: &'a Arc<Endpoint>,
        mesh: Option<&'a MeshTls>,
        shape: Shape,
        out: Outgoing,
    ) -> SendFuture<'a>;
    /// Feeds a try's result to outlier detection (and tells `obs`).
    fn outcome(
        &self,
        ep: &Arc<Endpoint>,
        result: &Result<Response<ResponseBody>, ProxyError>,
        obs: &mut Observer<'_>,
    );
}

/// What one try came to.
struct Tried {
    ep: Arc<Endpoint>,
    /// When it was started (connecting included).
    sent: Instant,
    result: Result<Response<ResponseBody>, Unsent>,
}

pub(super) type SendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Unsent>> + Send + 'a>>;

type TryFuture<'a> = Pin<Box<dyn Future<Output = Tried> + Send + 'a>>;

/// What every try of the request shares.
struct Tries<'a, E> {
    engine: &'a E,
    mesh: Option<Arc<MeshTls>>,
    authority: Option<Authority>,
    shape: Shape,
}

impl<'a, E: Engine> Tries<'a, E> {
    /// One try of `req` at `ep`.
    fn start(&'a self, ep: Arc<Endpoint>, req: Request<RequestBody>) -> TryFuture<'a> {
        Box::pin(async move {
            let sent = Instant::now();
            let out = Outgoing {
                req,
                authority: self.authority.clone(),
                upgrade: None,
                started: self.shape.started,
            };
            let result = self
                .engine
                .send(&ep, self.mesh.as_deref(), self.shape, out)
                .await;
            Tried { ep, sent, result }
        })
    }
}

/// Sends `out` (see [`eligible`]) to the backend, hedging per `hedge`,
/// then retrying per the policy.
pub(super) async fn call<E: Engine>(
    ctx: &E,
    hedge: &HedgePolicy,
    out: Outgoing,
    obs: &mut Observer<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (backend, policy) = (ctx.backend(), ctx.policy());
    let Outgoing {
        req,
        authority,
        started,
        ..
    } = out;
    let (first, mut request) = Resend::new(req, true, policy.max_buffered_body);
    let one = Tries {
        engine: ctx,
        mesh: ctx.mesh(),
        authority,
        shape: Shape {
            started,
            upgrade: false,
            bodiless: request.bodiless(),
        },
    };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_permit = None;
    let ep = ctx.pick(&tried)?;
    tried.push(ep.addr);
    obs.trying(0, &ep);
    let mut racing: Vec<TryFuture<'_>> = vec![one.start(ep, first)];
    // Tries made so far (the first, the hedges, the retries).
    let mut made: u32 = 1;
    let mut hedges: u32 = 0;
    let delay = hedge.delay();
    let mut timer: Option<Pin<Box<Sleep>>> = delay.map(|d| Box::pin(tokio::time::sleep(d)));
    // The race: the first good answer wins; failures wait for the others.
    let last = loop {
        let event = std::future::poll_fn(|cx| {
            for (i, f) in racing.iter_mut().enumerate() {
                if let Poll::Ready(t) = f.as_mut().poll(cx) {
                    return Poll::Ready(Some((i, t)));
                }
            }
            match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        let Some((i, t)) = event else {
            timer = None;
            let mut allowance = Pay {
                backend,
                permit: &mut retry_permit,
            };
            let Some(ep) = hedge_endpoint(ctx, &tried, &request, &mut allowance, obs) else {
                continue;
            };
            let Some(req) = request.next() else {
                continue;
            };
            hedges += 1;
            made += 1;
            tried.push(ep.addr);
            obs.hedging(hedges, ep.addr);
            backend.metrics.hedges[SENT].inc();
            tracing::debug!(backend = %backend.key, endpoint = %ep.addr, hedge = hedges, "hedging");
            racing.push(one.start(ep, req));
            if hedges < hedge.max_hedges {
                timer = delay.map(|d| Box::pin(tokio::time::sleep(d)));
            }
            continue;
        };
        // Dropping the future leaves its connection alone: it finished.
        drop(racing.swap_remove(i));
        let result = settle(t.result, &mut request);
        ctx.outcome(&t.ep, &result, obs);
        let failure = match &result {
            Ok(r) => status_failure(r.status(), r.headers(), policy),
            Err(e) => error_failure(e),
        };
        if failure.is_none() {
            hedge.latency.record(t.sent.elapsed());
            if t.ep.addr != tried[0] {
                backend.metrics.hedges[WON].inc();
            }
            obs.trying(made - 1, &t.ep);
            // The losers still in flight are dropped with `racing`.
            return result;
        }
        if !racing.is_empty() {
            continue;
        }
        break (t.ep, result, failure);
    };
    drop(timer);
    // Every try failed: the retry policy decides on the last failure.
    let (mut ep, mut result, mut failure) = last;
    loop {
        let t = decision::Try {
            attempt: made - 1,
            failure: failure.as_ref(),
            method_safe: true,
            resendable: request.resendable(),
        };
        let mut allowance = Pay {
            backend,
            permit: &mut retry_permit,
        };
        let left = ctx
            .deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        let Some(wait) = stop::wait_or_answer(
            decision::decide(&t, policy, &mut allowance, left, rand::random()),
            backend,
            obs,
        ) else {
            return result;
        };
        let Some(req) = request.next() else {
            obs.retries_exhausted(false);
            return result;
        };
        obs.retrying(made, ep.addr, stop::retry_reason(&result), wait);
        drop(result);
        backend.metrics.retry(RetryResult::Sent);
        tokio::time::sleep(wait).await;
        let next = ctx.pick(&tried)?;
        tried.push(next.addr);
        obs.trying(made, &next);
        made += 1;
        let t = one.start(next, req).await;
        result = settle(t.result, &mut request);
        ctx.outcome(&t.ep, &result, obs);
        failure = match &result {
            Ok(r) => status_failure(r.status(), r.headers(), policy),
            Err(e) => error_failure(e),
        };
        if failure.is_none() {
            backend.metrics.retry(RetryResult::Succeeded);
            return result;
        }
        ep = t.ep;
    }
}

/// The endpoint for the next hedge, paid for with a retry slot and a unit
/// of the retry budget; `None` when there is no other endpoint, no copy of
/// the request to send, or nothing to pay with (counted `no-budget`).
fn hedge_endpoint(
    ctx: &impl Engine,
    tried: &[SocketAddr],
    request: &Resend,
    allowance: &mut Pay<'_>,
    obs: &mut Observer<'_>,
) -> Option<Arc<Endpoint>> {
    use decision::Allowance as _;
    // A copy supersedes the body of the try it copies: only a body read
    // to its end (sent whole) can go twice at once.
    if !request.whole() {
        return None;
    }
    // Only an endpoint this request has not been to: with one endpoint
    // (or all of them tried) there is nothing to hedge to.
    let ep = ctx.pick(tried).ok()?;
    if tried.contains(&ep.addr) {
        return None;
    }
    let metrics = &ctx.backend().metrics;
    if !allowance.retry_slot() {
        obs.overflow(Kind::Retries.label());
        metrics.overflow(Kind::Retries.label());
        metrics.hedges[NO_BUDGET].inc();
        return None;
    }
    if !allowance.budget() {
        metrics.hedges[NO_BUDGET].inc();
        return None;
    }
    Some(ep)
}

/// A try's result as the client would see it; a request that came back
/// unsent is kept for the next try.
fn settle(
    r: Result<Response<ResponseBody>, Unsent>,
    request: &mut Resend,
) -> Result<Response<ResponseBody>, ProxyError> {
    r.map_err(|u| {
        if let Some(req) = u.request {
            request.unsent(req);
        }
        u.error
    })
}

/// What a hedge or a retry is paid with: the request's retry slot, taken
/// once and held until it ends, and the backend's retry budget.
struct Pay<'a> {
    backend: &'a Backend,
    permit: &'a mut Option<Permit>,
}

impl decision::Allowance for Pay<'_> {
    fn retry_slot(&mut self) -> bool {
        if self.permit.is_none() {
            *self.permit = self.backend.resilience.limits.try_acquire(Kind::Retries);
        }
        self.permit.is_some()
    }

    fn budget(&mut self) -> bool {
        self.backend.resilience.budget.try_retry()
    }
}
