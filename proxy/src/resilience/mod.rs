//! Making a flaky backend invisible and a dead one cheap: retries with
//! jittered backoff under a budget, concurrency limits (bulkheads), passive
//! outlier ejection and active health checks.
pub(crate) mod backoff;
pub(crate) mod budget;
pub(crate) mod effective;
pub(crate) mod fault;
pub(crate) mod health;
pub(crate) mod latency;
pub(crate) mod limits;
pub(crate) mod outlier;
pub(crate) mod policy;
pub(crate) mod rate_limit;
pub(crate) mod success_rate;
