//! The settings a backend ends up with under one rule, each with where it
//! came from (a default, the backend's TrafficPolicy, or the route), for
//! `weft-proxy explain`.
//!
//! This is the provenance-keeping twin of [`Resilience::new`],
//! [`RetryPolicy::with_route`](super::policy::RetryPolicy::with_route),
//! the per-try timeout `pipeline::compile` derives, and the pool settings
//! of `Backend::build`: the same fields, read in the same order, from the
//! same `config::defaults`. A test builds both from a table of policies
//! and routes and requires every value to agree, so the explanation cannot
//! drift from what the proxy does. Off the request path.

use super::policy::RetryOn;
use std::time::Duration;
use weft_mesh::config::defaults as d;
use weft_mesh::config::policy::{LbPolicy, TrafficPolicySpec};
use weft_mesh::config::route::{RouteRetry, Timeouts};

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    Default,
    /// `TrafficPolicy namespace/name`.
    Policy(String),
    /// `route namespace/name`.
    Route(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Policy(k) => write!(f, "TrafficPolicy {k}"),
            Origin::Route(k) => write!(f, "route {k}"),
        }
    }
}

/// A value and its origin.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sourced<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

/// The effective settings of one backend under one rule.
#[derive(Clone, Debug)]
pub(crate) struct Effective {
    /// Whole request, retries included (`timeouts.request`).
    pub(crate) request_timeout: Sourced<Option<Duration>>,
    /// Each try: the shorter of `timeouts.backendRequest` and `retry.perTryTimeout`.
    pub(crate) per_try_timeout: Sourced<Option<Duration>>,
    pub(crate) connect_timeout: Sourced<Duration>,
    pub(crate) idle_timeout: Sourced<Duration>,
    pub(crate) attempts: Sourced<u32>,
    pub(crate) retry_on: Sourced<RetryOn>,
    pub(crate) codes: Sourced<Vec<u16>>,
    pub(crate) non_idempotent: Sourced<bool>,
    pub(crate) backoff_base: Sourced<Duration>,
    pub(crate) backoff_max: Sourced<Duration>,
    pub(crate) max_buffered_body: Sourced<u64>,
    pub(crate) budget_percent: Sourced<u32>,
    pub(crate) budget_min_per_second: Sourced<u32>,
    pub(crate) max_connections: Sourced<u32>,
    pub(crate) max_pending_requests: Sourced<u32>,
    pub(crate) max_requests: Sourced<u32>,
    pub(crate) max_retries: Sourced<u32>,
    pub(crate) consecutive_failures: Sourced<u32>,
    pub(crate) interval: Sourced<Duration>,
    pub(crate) base_ejection: Sourced<Duration>,
    pub(crate) max_ejection: Sourced<Duration>,
    pub(crate) max_ejection_percent: Sourced<u32>,
    pub(crate) panic_threshold: Sourced<u32>,
    pub(crate) load_balancer: Sourced<LbPolicy>,
}

/// The rule's part: its route's key, timeouts and GEP-1731 retry.
#[derive(Clone, Copy, Default)]
pub(crate) struct RouteSide<'a> {
    pub(crate) key: &'a str,
    pub(crate) timeouts: Option<&'a Timeouts>,
    pub(crate) retry: Option<&'a RouteRetry>,
}

impl Effective {
    /// What `policy` (with its `namespace/name`) and the rule make of the
    /// defaults. `idle_default` is the proxy's `--pool-idle-timeout`.
    pub(crate) fn new(
        policy: Option<(&str, &TrafficPolicySpec)>,
        route: RouteSide<'_>,
        idle_default: Duration,
    ) -> Effective {
        let p = policy.map(|(_, p)| p);
        let from_policy = Origin::Policy(policy.map(|(k, _)| k).unwrap_or_default().to_owned());
        let from_route = Origin::Route(route.key.to_owned());
        macro_rules! pick {
            ($v:expr, $default:expr $(,)?) => {
                pick($v, $default, &from_policy)
            };
        }
        macro_rules! over {
            ($s:expr, $v:expr $(,)?) => {
                over($s, $v, &from_route)
            };
        }
        let nonzero = |d: Option<weft_mesh::config::Dur>| d.map(|d| d.0).filter(|d| !d.is_zero());
        let r = p.and_then(|p| p.retry.as_ref());
        let rr = route.retry;
        let backoff = r.and_then(|r| r.backoff.as_ref());
        let budget = r.and_then(|r| r.budget.as_ref());
        let cb = p.and_then(|p| p.circuit_breaker.as_ref());
        let od = p.and_then(|p| p.outlier_detection.as_ref());
        let pool = p.and_then(|p| p.connection_pool.as_ref());

        let policy_try = pick!(
            r.and_then(|r| r.per_try_timeout).map(|t| nonzero(Some(t))),
            None
        );
        let route_try = nonzero(route.timeouts.and_then(|t| t.backend_request));
        let per_try_timeout = match (route_try, policy_try.value) {
            (Some(rt), Some(pt)) if pt <= rt => policy_try,
            (Some(rt), _) => Sourced {
                value: Some(rt),
                origin: from_route.clone(),
            },
            (None, _) => policy_try,
        };
        let mut retry_on = pick!(r.and_then(|r| r.retry_on.as_ref()).map(RetryOn::all_of), {
            RetryOn::all_of(&d::RETRY_ON)
        });
        let route_codes = rr.map(|r| r.codes.clone()).filter(|c| !c.is_empty());
        if route_codes.is_some() {
            retry_on = Sourced {
                value: retry_on
                    .value
                    .with(weft_mesh::config::policy::RetryCondition::RetriableStatusCodes),
                origin: from_route.clone(),
            };
        }
        Effective {
            request_timeout: over!(
                pick!(None, None),
                nonzero(route.timeouts.and_then(|t| t.request)).map(Some),
            ),
            per_try_timeout,
            connect_timeout: pick!(
                p.and_then(|p| p.connect_timeout).map(|d| d.0),
                d::CONNECT_TIMEOUT,
            ),
            idle_timeout: pick!(pool.and_then(|c| c.idle_timeout).map(|d| d.0), idle_default),
            attempts: over!(
                pick!(r.and_then(|r| r.attempts), d::RETRY_ATTEMPTS),
                rr.and_then(|r| r.attempts),
            ),
            retry_on,
            codes: over!(
                pick!(
                    r.map(|r| r.codes.clone()).filter(|c| !c.is_empty()),
                    Vec::new()
                ),
                route_codes,
            ),
            non_idempotent: pick!(r.and_then(|r| r.non_idempotent), false),
            backoff_base: over!(
                pick!(
                    backoff.and_then(|b| b.base_interval).map(|d| d.0),
                    d::RETRY_BASE_INTERVAL
                ),
                rr.and_then(|r| r.backoff).map(|d| d.0),
            ),
            backoff_max: pick!(
                backoff.and_then(|b| b.max_interval).map(|d| d.0),
                d::RETRY_MAX_INTERVAL,
            ),
            max_buffered_body: pick!(
                r.and_then(|r| r.max_buffered_body.as_deref())
                    .and_then(weft_mesh::config::parse_size),
                d::RETRY_MAX_BUFFERED_BODY,
            ),
            budget_percent: pick!(budget.and_then(|b| b.percent), d::RETRY_BUDGET_PERCENT),
            budget_min_per_second: pick!(
                budget.and_then(|b| b.min_retries_per_second),
                d::RETRY_MIN_PER_SECOND,
            ),
            max_connections: pick!(cb.and_then(|c| c.max_connections), d::MAX_CONNECTIONS),
            max_pending_requests: pick!(
                cb.and_then(|c| c.max_pending_requests),
                d::MAX_PENDING_REQUESTS,
            ),
            max_requests: pick!(cb.and_then(|c| c.max_requests), d::MAX_REQUESTS),
            max_retries: pick!(cb.and_then(|c| c.max_retries), d::MAX_RETRIES),
            consecutive_failures: pick!(
                od.and_then(|o| o.consecutive_failures),
                d::OUTLIER_CONSECUTIVE_FAILURES,
            ),
            interval: pick!(
                od.and_then(|o| o.interval).map(|d| d.0),
                d::OUTLIER_INTERVAL
            ),
            base_ejection: pick!(
                od.and_then(|o| o.base_ejection_time).map(|d| d.0),
                d::OUTLIER_BASE_EJECTION,
            ),
            max_ejection: pick!(
                od.and_then(|o| o.max_ejection_time).map(|d| d.0),
                d::OUTLIER_MAX_EJECTION,
            ),
            max_ejection_percent: pick!(
                od.and_then(|o| o.max_ejection_percent),
                d::OUTLIER_MAX_EJECTION_PERCENT,
            ),
            panic_threshold: pick!(p.and_then(|p| p.panic_threshold), d::PANIC_THRESHOLD),
            load_balancer: pick!(
                p.and_then(|p| p.load_balancer.as_ref()).map(|l| l.policy),
                LbPolicy::default()
            ),
        }
    }
}

/// The policy's value (`origin`) if it sets one, else the default.
fn pick<T>(v: Option<T>, default: T, origin: &Origin) -> Sourced<T> {
    match v {
        Some(value) => Sourced {
            value,
            origin: origin.clone(),
        },
        None => Sourced {
            value: default,
            origin: Origin::Default,
        },
    }
}

/// The route's value (`origin`) over `s`, if it sets one.
fn over<T>(s: Sourced<T>, v: Option<T>, origin: &Origin) -> Sourced<T> {
    match v {
        Some(value) => Sourced {
            value,
            origin: origin.clone(),
        },
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::resilience::limits::Kind;
    use crate::resilience::policy::Resilience;
    use weft_mesh::config::Dur;

    fn ms(n: u64) -> Option<Dur> {
        Some(Dur(Duration::from_millis(n)))
    }

    fn policy(json: &str) -> TrafficPolicySpec {
        serde_json::from_str(json).expect("a TrafficPolicy spec")
    }

    fn empty_policy() -> TrafficPolicySpec {
        policy(r#"{"targetRef": {"kind": "Backend", "name": "b"}}"#)
    }

    fn full_policy() -> TrafficPolicySpec {
        policy(
            r#"{"targetRef": {"kind": "Backend", "name": "b"},
            "loadBalancer": {"policy": "RoundRobin"},
            "connectTimeout": "300ms",
            "retry": {"attempts": 4, "retryOn": ["5xx", "reset"], "codes": [418],
                "nonIdempotent": true, "perTryTimeout": "700ms",
                "backoff": {"baseInterval": "5ms", "maxInterval": "50ms"},
                "budget": {"percent": 30, "minRetriesPerSecond": 3},
                "maxBufferedBody": "1MiB"},
            "circuitBreaker": {"maxConnections": 1, "maxPendingRequests": 2,
                "maxRequests": 3, "maxRetries": 4},
            "outlierDetection": {"consecutiveFailures": 9, "interval": "1s",
                "baseEjectionTime": "2s", "maxEjectionTime": "3s", "maxEjectionPercent": 10},
            "panicThreshold": 20,
            "connectionPool": {"idleTimeout": "9s"}}"#,
        )
    }

    /// The proxy's own merge (Resilience::new, with_route, compile's
    /// per-try timeout, Backend::build) and this twin agree on every value.
    #[test]
    fn agrees_with_what_the_proxy_builds() {
        let partial = policy(
            r#"{"targetRef": {"kind": "Service", "name": "b"},
            "retry": {"perTryTimeout": "0s", "attempts": 1},
            "circuitBreaker": {"maxRequests": 7}}"#,
        );
        let route_retry = RouteRetry {
            attempts: Some(6),
            codes: vec![503],
            backoff: ms(11),
        };
        let timeouts = [
            Timeouts {
                request: ms(5000),
                backend_request: ms(500),
            },
            Timeouts {
                request: ms(0),
                backend_request: ms(900),
            },
        ];
        let policies = [
            None,
            Some(empty_policy()),
            Some(partial),
            Some(full_policy()),
        ];
        let routes = [
            RouteSide::default(),
            RouteSide {
                key: "shop/r",
                timeouts: Some(&timeouts[0]),
                retry: Some(&route_retry),
            },
            RouteSide {
                key: "shop/r",
                timeouts: Some(&timeouts[1]),
                retry: None,
            },
        ];
        let metrics = crate::telemetry::metrics::Metrics::new();
        let backend = weft_mesh::config::load_sources(vec![(
            "b.yaml".into(),
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: b}\nspec: {endpoints: [{address: \"127.0.0.1:1\"}]}\n".into(),
        )])
        .expect("backend")
        .backends
        .remove(0);
        let idle = Duration::from_secs(55);
        for p in &policies {
            for route in &routes {
                let e = Effective::new(p.as_ref().map(|p| ("shop/p", p)), *route, idle);
                let res = Resilience::new(p.as_ref());
                let retry = match route.retry {
                    Some(r) => res.retry.with_route(r),
                    None => (*res.retry).clone(),
                };
                let be = Backend::build(&backend, p.as_ref(), None, idle, &metrics);
                let backend_timeout = route
                    .timeouts
                    .and_then(|t| t.backend_request)
                    .map(|d| d.0)
                    .filter(|d| !d.is_zero());
                let per_try = match (backend_timeout, retry.per_try_timeout) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let ctx = format!("policy {:?}, route {:?}", p.is_some(), route.key);
                assert_eq!(e.per_try_timeout.value, per_try, "{ctx}");
                assert_eq!(e.attempts.value, retry.attempts, "{ctx}");
                assert_eq!(e.retry_on.value, retry.retry_on, "{ctx}");
                assert_eq!(e.codes.value, retry.codes, "{ctx}");
                assert_eq!(e.non_idempotent.value, retry.non_idempotent, "{ctx}");
                assert_eq!(e.backoff_base.value, retry.base, "{ctx}");
                assert_eq!(e.backoff_max.value, retry.max, "{ctx}");
                assert_eq!(e.max_buffered_body.value, retry.max_buffered_body, "{ctx}");
                let l = &res.limits;
                assert_eq!(e.max_connections.value as u64, l.max(Kind::Connections));
                assert_eq!(e.max_pending_requests.value as u64, l.max(Kind::Pending));
                assert_eq!(e.max_requests.value as u64, l.max(Kind::Requests));
                assert_eq!(e.max_retries.value as u64, l.max(Kind::Retries));
                let o = &res.outlier;
                assert_eq!(e.consecutive_failures.value, o.consecutive_failures);
                assert_eq!(e.interval.value, o.interval);
                assert_eq!(e.base_ejection.value, o.base_ejection);
                assert_eq!(e.max_ejection.value, o.max_ejection);
                assert_eq!(e.max_ejection_percent.value, o.max_ejection_percent);
                assert_eq!(e.panic_threshold.value, res.panic_threshold);
                assert_eq!(e.connect_timeout.value, be.settings.connect_timeout);
                assert_eq!(e.idle_timeout.value, be.settings.idle_timeout);
                assert_eq!(
                    crate::backend::lb_policy(e.load_balancer.value),
                    be.policy,
                    "{ctx}"
                );
            }
        }
    }

    #[test]
    fn origins() {
        let p = full_policy();
        let retry = RouteRetry {
            attempts: Some(1),
            codes: Vec::new(),
            backoff: None,
        };
        let t = Timeouts {
            request: ms(3000),
            backend_request: ms(900),
        };
        let route = RouteSide {
            key: "shop/r",
            timeouts: Some(&t),
            retry: Some(&retry),
        };
        let e = Effective::new(Some(("shop/p", &p)), route, Duration::from_secs(55));
        let policy = Origin::Policy("shop/p".into());
        let by_route = Origin::Route("shop/r".into());
        assert_eq!(e.attempts.origin, by_route);
        assert_eq!(e.request_timeout.origin, by_route);
        // The policy's 700ms per try is shorter than the route's 900ms.
        assert_eq!(e.per_try_timeout.origin, policy);
        assert_eq!(e.retry_on.origin, policy, "no route codes");
        assert_eq!(e.backoff_base.origin, policy);
        assert_eq!(e.budget_percent.value, 30);
        assert_eq!(e.budget_min_per_second.origin, policy);
        let none = Effective::new(None, RouteSide::default(), Duration::from_secs(55));
        assert_eq!(none.attempts.origin, Origin::Default);
        assert_eq!(none.request_timeout.value, None);
        assert_eq!(none.budget_percent.value, d::RETRY_BUDGET_PERCENT);
        assert_eq!(
            Origin::Policy("a/b".into()).to_string(),
            "TrafficPolicy a/b"
        );
    }
}
