//! Metrics and logs.
pub mod access_log;
pub mod histogram;
pub mod metrics;
