//! Whether a failed try is tried again, and after how long: a pure
//! function of the try's outcome, the request, the policy and what the
//! limits allow, so every rule is tested over its whole table.
//!
//! The rules, in the order they apply:
//! 1. a try that did not fail, or failed in a way the policy does not name
//!    (`retryOn`), is the answer;
//! 2. after the last attempt it is the answer, and the retries count as
//!    exhausted;
//! 3. a request the upstream may have processed is sent again only when
//!    its method is idempotent or the policy says `nonIdempotent`, and only
//!    when there is a request to send (a copy was kept, or it came back
//!    unsent);
//! 4. a retry takes a retry slot (`maxRetries`) and then one unit of the
//!    retry budget; without either, the failure is the answer and the
//!    retries count as exhausted. Neither is taken unless rules 1–3 allow
//!    the retry;
//! 5. it waits `Retry-After` when the upstream sent one, else a full-jitter
//!    backoff; a wait that would end past the request's deadline is not
//!    taken and the failure is the answer.

use crate::http::failure::Failure;
use crate::resilience::backoff;
use crate::resilience::policy::RetryPolicy;
use std::time::Duration;

/// What one try came to, and what is known of the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Try<'a> {
    /// 0 for the first try.
    pub(crate) attempt: u32,
    /// Why it failed; `None` when it did not.
    pub(crate) failure: Option<&'a Failure>,
    /// The method is idempotent (or the policy allows retrying others).
    pub(crate) method_safe: bool,
    /// The request can be sent again: a copy is kept, or it came back
    /// unsent.
    pub(crate) resendable: bool,
}

/// The limits a retry must fit in, taken in order and only when needed.
pub(crate) trait Allowance {
    /// A retry slot (the backend's `maxRetries`), held until the request ends.
    fn retry_slot(&mut self) -> bool;
    /// One retry's worth of the retry budget.
    fn budget(&mut self) -> bool;
}

/// Which limit ended the retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spent {
    /// Every attempt the policy allows was made.
    Attempts,
    /// The backend's concurrent retries (`maxRetries`) are all in use.
    RetrySlots,
    /// The retry budget is used up.
    Budget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The try is the answer.
    Answer,
    /// The try is the answer: retrying was wanted, but `Spent` ran out.
    GiveUp(Spent),
    /// The try is the answer: waiting for another would outlast the
    /// request's deadline.
    OutOfTime,
    /// Wait this long, then try again.
    Retry(Duration),
}

/// Decides what follows `t`. `left`: what remains of the request's
/// deadline, if it has one; `jitter`: a uniform draw in `[0, 1)` for the
/// backoff.
pub(crate) fn decide(
    t: &Try,
    policy: &RetryPolicy,
    allowance: &mut impl Allowance,
    left: Option<Duration>,
    jitter: f64,
) -> Decision {
    let Some(failure) = t.failure else {
        return Decision::Answer;
    };
    if !policy.retry_on.meets(failure.conditions) {
        return Decision::Answer;
    }
    if t.attempt >= policy.attempts {
        return Decision::GiveUp(Spent::Attempts);
    }
    if !(failure.unprocessed || t.method_safe) || !t.resendable {
        return Decision::Answer;
    }
    if !allowance.retry_slot() {
        return Decision::GiveUp(Spent::RetrySlots);
    }
    if !allowance.budget() {
        return Decision::GiveUp(Spent::Budget);
    }
    let wait = failure
        .retry_after
        .unwrap_or_else(|| backoff::wait(t.attempt, policy.base, policy.max, jitter));
    if left.is_some_and(|left| wait >= left) {
        return Decision::OutOfTime;
    }
    Decision::Retry(wait)
}

#[cfg(test)]
mod tests;
