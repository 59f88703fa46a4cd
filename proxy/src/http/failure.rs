//! What a try's result says for retries and outlier detection: which
//! `retryOn` conditions it meets, whether the upstream certainly did not
//! process the request, whether it counts against the endpoint, and any
//! `Retry-After` the upstream asked for.

use crate::http::errors::ProxyError;
use crate::resilience::backoff;
use crate::resilience::policy::{RetryOn, RetryPolicy};
use crate::transport::ConnectError;
use http::StatusCode;
use std::time::Duration;
use weft_mesh::config::policy::RetryCondition as C;

/// Why a try failed, for deciding on a retry.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// The `retryOn` conditions this failure meets.
    pub(crate) conditions: RetryOn,
    /// The upstream certainly did not process the request.
    pub(crate) unprocessed: bool,
    /// Counts against the endpoint for outlier detection.
    pub(crate) endpoint_fault: bool,
    pub(crate) retry_after: Option<Duration>,
}

fn is_refused_stream(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            return h2e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

/// What an error says of a try: `None` when it is no failure to retry.
pub(crate) fn error_failure(e: &ProxyError) -> Option<Failure> {
    let f = |conditions, unprocessed, endpoint_fault| Failure {
        conditions,
        unprocessed,
        endpoint_fault,
        retry_after: None,
    };
    match e {
        ProxyError::Connect(ConnectError::Overloaded(_)) => None,
        ProxyError::Connect(_) => Some(f(C::ConnectFailure.into(), true, true)),
        // Canceled: the pooled connection closed before the request was written.
        ProxyError::Upstream(h) if is_refused_stream(h) || h.is_canceled() => {
            Some(f(C::RefusedStream.into(), true, false))
        }
        ProxyError::StaleConnection => Some(f(C::RefusedStream.into(), true, false)),
        // A malformed answer is the endpoint's fault, like a reset.
        ProxyError::Upstream(_) | ProxyError::UpstreamIo(_) | ProxyError::UpstreamProtocol(_) => {
            Some(f(C::Reset.into(), false, true))
        }
        ProxyError::Timeout(_) => Some(f(
            RetryOn::all_of(&[C::GatewayError, C::FiveXx, C::Reset]),
            false,
            true,
        )),
        _ => None,
    }
}

fn grpc_condition(code: &str) -> Option<C> {
    match code {
        "14" => Some(C::Unavailable),
        "1" => Some(C::Cancelled),
        "4" => Some(C::DeadlineExceeded),
        "8" => Some(C::ResourceExhausted),
        _ => None,
    }
}

/// What a response says of a try: `None` when its status is no failure.
#[inline(always)]
pub(crate) fn status_failure(
    status: StatusCode,
    headers: &http::HeaderMap,
    policy: &RetryPolicy,
) -> Option<Failure> {
    let code = status.as_u16();
    let mut conditions = RetryOn::NONE;
    if (500..600).contains(&code) {
        conditions = conditions.with(C::FiveXx);
    }
    if (502..=504).contains(&code) {
        conditions = conditions.with(C::GatewayError);
    }
    if policy.codes.contains(&code) {
        conditions = conditions.with(C::RetriableStatusCodes);
    }
    let grpc = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_condition);
    if let Some(g) = grpc {
        conditions = conditions.with(g);
    }
    if conditions.is_empty() {
        return None;
    }
    let retry_after = match code {
        429 | 503 => headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::retry_after(v, policy.max)),
        _ => None,
    };
    Some(Failure {
        conditions,
        // gRPC UNAVAILABLE says the server did not act on the call.
        unprocessed: grpc == Some(C::Unavailable),
        endpoint_fault: (500..600).contains(&code),
        retry_after,
    })
}
