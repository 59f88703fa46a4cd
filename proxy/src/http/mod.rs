//! HTTP proxying: matching, filters, forwarding, retries, error answers.
pub mod errors;
pub mod failure;
pub mod forward;
pub mod handler;
pub mod headers;
pub mod retry;
pub mod within;

/// The old home of the pool's settings, still named by `proxy.rs`; the
/// type lives in `crate::transport`.
pub mod pool {
    pub(crate) use crate::transport::PoolSettings;
}
