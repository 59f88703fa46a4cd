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

/// Why a try failed, for deciding on a retry.
pub(crate) struct Failure {
    pub condition: u32,
    /// The upstream certainly did not process the request.
    pub unprocessed: bool,
    /// Counts against the endpoint for outlier detection.
    pub endpoint_fault: bool,
    pub retry_after: Option<Duration>,
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
    let f = |condition, unprocessed, endpoint_fault| Failure {
        condition,
        unprocessed,
        endpoint_fault,
        retry_after: None,
    };
    match e {
        ProxyError::Connect(ConnectError::Overloaded(_)) => None,
        ProxyError::Connect(_) => Some(f(RetryOn::CONNECT_FAILURE, true, true)),
        // Canceled: the pooled connection closed before the request was written.
        ProxyError::Upstream(h) if is_refused_stream(h) || h.is_canceled() => {
            Some(f(RetryOn::REFUSED_STREAM, true, false))
        }
        ProxyError::StaleConnection => Some(f(RetryOn::REFUSED_STREAM, true, false)),
        ProxyError::Upstream(_) | ProxyError::UpstreamIo(_) => Some(f(RetryOn::RESET, false, true)),
        ProxyError::Timeout(_) => Some(f(
            RetryOn::GATEWAY_ERROR | RetryOn::FIVE_XX | RetryOn::RESET,
            false,
            true,
        )),
        _ => None,
    }
}

fn grpc_condition(code: &str) -> u32 {
    match code {
        "14" => RetryOn::GRPC_UNAVAILABLE,
        "1" => RetryOn::GRPC_CANCELLED,
        "4" => RetryOn::GRPC_DEADLINE,
        "8" => RetryOn::GRPC_EXHAUSTED,
        _ => 0,
    }
}

/// What a response says of a try: `None` when its status is no failure.
pub(crate) fn status_failure(
    status: StatusCode,
    headers: &http::HeaderMap,
    policy: &RetryPolicy,
) -> Option<Failure> {
    let code = status.as_u16();
    let mut condition = 0;
    if (500..600).contains(&code) {
        condition |= RetryOn::FIVE_XX;
    }
    if (502..=504).contains(&code) {
        condition |= RetryOn::GATEWAY_ERROR;
    }
    if policy.codes.contains(&code) {
        condition |= RetryOn::RETRIABLE_CODES;
    }
    let grpc = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(grpc_condition)
        .unwrap_or(0);
    condition |= grpc;
    if condition == 0 {
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
        condition,
        // gRPC UNAVAILABLE says the server did not act on the call.
        unprocessed: grpc == RetryOn::GRPC_UNAVAILABLE,
        endpoint_fault: (500..600).contains(&code),
        retry_after,
    })
}
