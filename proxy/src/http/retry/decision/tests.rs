//! The retry decision over its whole table: every failure kind × policy ×
//! attempt × method × whether the request can be resent × retry slot ×
//! budget × deadline, checked against the rules stated as one formula.
//! (This file is the #[cfg(test)] mod tests of `decision.rs`.)

use super::*;
use crate::resilience::policy::{Resilience, RetryOn};
use weft_mesh::config::policy::RetryCondition as C;

/// An allowance that answers from the table and counts what was asked.
struct Table {
    slot: bool,
    budget: bool,
    slots_asked: u32,
    budget_asked: u32,
}

impl Allowance for Table {
    fn retry_slot(&mut self) -> bool {
        self.slots_asked += 1;
        self.slot
    }
    fn budget(&mut self) -> bool {
        self.budget_asked += 1;
        self.budget
    }
}

fn failure(conditions: RetryOn, unprocessed: bool, retry_after: Option<Duration>) -> Failure {
    Failure {
        conditions,
        unprocessed,
        endpoint_fault: !unprocessed,
        retry_after,
    }
}

/// The failure kinds a try can end with, as `failure.rs` classifies them.
fn failures() -> Vec<(&'static str, Failure)> {
    vec![
        (
            "connect failure",
            failure(C::ConnectFailure.into(), true, None),
        ),
        (
            "refused stream",
            failure(C::RefusedStream.into(), true, None),
        ),
        ("reset", failure(C::Reset.into(), false, None)),
        (
            "timeout",
            failure(
                RetryOn::all_of(&[C::GatewayError, C::FiveXx, C::Reset]),
                false,
                None,
            ),
        ),
        ("500", failure(C::FiveXx.into(), false, None)),
        (
            "503",
            failure(RetryOn::all_of(&[C::FiveXx, C::GatewayError]), false, None),
        ),
        (
            "503 retry-after 3ms",
            failure(
                RetryOn::all_of(&[C::FiveXx, C::GatewayError]),
                false,
                Some(Duration::from_millis(3)),
            ),
        ),
        (
            "listed 429",
            failure(C::RetriableStatusCodes.into(), false, None),
        ),
        (
            "grpc unavailable",
            failure(C::Unavailable.into(), true, None),
        ),
        ("grpc cancelled", failure(C::Cancelled.into(), false, None)),
    ]
}

fn policies() -> Vec<RetryOn> {
    let mut out = vec![
        RetryOn::NONE,
        Resilience::new(None).retry.retry_on,
        RetryOn::all_of(&C::ALL),
    ];
    out.extend(C::ALL.iter().map(|c| RetryOn::of(*c)));
    out
}

#[test]
fn every_combination_follows_the_rules() {
    let base = Resilience::new(None).retry.clone();
    let mut cases = 0u64;
    let mut retried = 0u64;
    for retry_on in policies() {
        for attempts in [0u32, 1, 3] {
            let policy = RetryPolicy {
                retry_on,
                attempts,
                base: Duration::from_millis(10),
                max: Duration::from_millis(40),
                ..(*base).clone()
            };
            let mut outcomes: Vec<(&str, Option<Failure>)> = vec![("success", None)];
            outcomes.extend(failures().into_iter().map(|(n, f)| (n, Some(f))));
            for (name, f) in &outcomes {
                for attempt in 0..=3u32 {
                    for method_safe in [false, true] {
                        for resendable in [false, true] {
                            for slot in [false, true] {
                                for budget in [false, true] {
                                    for left in [
                                        None,
                                        Some(Duration::from_millis(1)),
                                        Some(Duration::from_secs(5)),
                                    ] {
                                        for jitter in [0.0, 0.5, 0.999] {
                                            cases += 1;
                                            let t = Try {
                                                attempt,
                                                failure: f.as_ref(),
                                                method_safe,
                                                resendable,
                                            };
                                            let mut a = Table {
                                                slot,
                                                budget,
                                                slots_asked: 0,
                                                budget_asked: 0,
                                            };
                                            let d = decide(&t, &policy, &mut a, left, jitter);
                                            let ctx = format!("{name} attempt={attempt}/{attempts} safe={method_safe} resend={resendable} slot={slot} budget={budget} left={left:?} on={retry_on:?}: {d:?}");

                                            let wanted = f
                                                .as_ref()
                                                .is_some_and(|f| retry_on.meets(f.conditions));
                                            let more = attempt < attempts;
                                            let safe = f.as_ref().is_some_and(|f| f.unprocessed)
                                                || method_safe;
                                            let eligible = wanted && more && safe && resendable;
                                            // The limits are asked only for a retry every other rule allows,
                                            // the budget only once a slot is held.
                                            assert_eq!(a.slots_asked, eligible as u32, "{ctx}");
                                            assert_eq!(
                                                a.budget_asked,
                                                (eligible && slot) as u32,
                                                "{ctx}"
                                            );
                                            let expected = if !wanted {
                                                Some(Decision::Answer)
                                            } else if !more {
                                                Some(Decision::GiveUp(Spent::Attempts))
                                            } else if !safe || !resendable {
                                                Some(Decision::Answer)
                                            } else if !slot {
                                                Some(Decision::GiveUp(Spent::RetrySlots))
                                            } else if !budget {
                                                Some(Decision::GiveUp(Spent::Budget))
                                            } else {
                                                None
                                            };
                                            match (expected, d) {
                                                (Some(e), d) => assert_eq!(d, e, "{ctx}"),
                                                (None, Decision::Retry(wait)) => {
                                                    retried += 1;
                                                    let f = f.as_ref().unwrap();
                                                    match f.retry_after {
                                                        Some(ra) => assert_eq!(wait, ra, "{ctx}"),
                                                        None => assert!(
                                                            wait < backoff::ceiling(attempt, policy.base, policy.max),
                                                            "{ctx}"
                                                        ),
                                                    }
                                                    assert!(left.is_none_or(|l| wait < l), "{ctx}");
                                                }
                                                (None, Decision::OutOfTime) => {
                                                    let f = f.as_ref().unwrap();
                                                    let wait = f.retry_after.unwrap_or_else(|| {
                                                        backoff::wait(attempt, policy.base, policy.max, jitter)
                                                    });
                                                    assert!(left.is_some_and(|l| wait >= l), "{ctx}");
                                                }
                                                (None, d) => panic!("expected a retry or no time for one: {ctx} got {d:?}"),
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // The table is whole, and retries happen in a good share of it.
    assert_eq!(cases, 13 * 3 * 11 * 4 * 2 * 2 * 2 * 2 * 3 * 3);
    assert!(retried > 500, "{retried}");
}

#[test]
fn idempotency_only_matters_for_requests_the_upstream_may_have_processed() {
    let mut policy = (*Resilience::new(None).retry).clone();
    policy.retry_on = RetryOn::all_of(&C::ALL);
    let always = || Table {
        slot: true,
        budget: true,
        slots_asked: 0,
        budget_asked: 0,
    };
    fn post(f: &Failure) -> Try<'_> {
        Try {
            attempt: 0,
            failure: Some(f),
            method_safe: false,
            resendable: true,
        }
    }
    // A connect failure never reached the upstream: a POST goes again.
    let connect = failure(C::ConnectFailure.into(), true, None);
    assert!(matches!(
        decide(&post(&connect), &policy, &mut always(), None, 0.5),
        Decision::Retry(_)
    ));
    // A 503 did: not a POST, unless the policy allows non-idempotent retries.
    let status = failure(C::FiveXx.into(), false, None);
    assert_eq!(
        decide(&post(&status), &policy, &mut always(), None, 0.5),
        Decision::Answer
    );
    policy.non_idempotent = true;
    let method_safe = policy.non_idempotent;
    let t = Try {
        method_safe,
        ..post(&status)
    };
    assert!(matches!(
        decide(&t, &policy, &mut always(), None, 0.5),
        Decision::Retry(_)
    ));
}
