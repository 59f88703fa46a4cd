//! Making a flaky backend invisible and a dead one cheap: retries with
//! jittered backoff under a budget, concurrency limits (bulkheads), passive
//! outlier ejection and active health checks.
pub mod backoff;
pub mod budget;
pub mod health;
pub mod limits;
pub mod outlier;
pub mod policy;
