//! How a retry loop ends and why, told once to metrics and the observer:
//! the sequential loop (`retry`) and the hedged one (`retry::hedge`) share
//! this bookkeeping so `/failures`, the access log and the metrics say the
//! same thing whichever loop served the request.

use super::decision::{Decision, Spent};
use crate::backend::Backend;
use crate::body::ResponseBody;
use crate::http::errors::ProxyError;
use crate::http::observe::Observer;
use crate::resilience::limits::Kind;
use crate::telemetry::failures::Stop;
use crate::telemetry::metrics::RetryResult;
use http::Response;
use std::time::Duration;

/// The wait before the retry `d` decides, or `None` when the last try's
/// result is the answer (why is told to `obs` and the metrics).
pub(super) fn wait_or_answer(
    d: Decision,
    backend: &Backend,
    obs: &mut Observer<'_>,
) -> Option<Duration> {
    match d {
        Decision::Retry(wait) => return Some(wait),
        Decision::Answer => obs.retries_exhausted(false),
        Decision::OutOfTime => out_of_time(obs),
        Decision::GiveUp(spent) => gave_up(spent, backend, obs),
    }
    None
}

/// The policy would retry but nothing is left to pay with (`spent`).
fn gave_up(spent: Spent, backend: &Backend, obs: &mut Observer<'_>) {
    obs.retries_exhausted(true);
    let metrics = &backend.metrics;
    match spent {
        Spent::Attempts => obs.stopped(Stop::Attempts),
        Spent::RetrySlots => {
            obs.stopped(Stop::RetryLimit);
            obs.overflow(Kind::Retries.label());
            metrics.retry(RetryResult::Limit);
            metrics.overflow(Kind::Retries.label());
        }
        Spent::Budget => {
            obs.stopped(Stop::Budget);
            metrics.retry(RetryResult::BudgetExhausted);
        }
    }
}

/// Too little of the request timeout is left to wait and try again.
fn out_of_time(obs: &mut Observer<'_>) {
    obs.stopped(Stop::OutOfTime);
    obs.retries_exhausted(false);
}

/// Why a try is retried: its error's cause, or its status.
pub(super) fn retry_reason(result: &Result<Response<ResponseBody>, ProxyError>) -> &'static str {
    match result {
        Err(e) => e.kind().1,
        Ok(r) if r.status().is_server_error() => "5xx",
        Ok(_) => "retriable-status",
    }
}
