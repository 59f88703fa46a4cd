//! Metrics and logs.
pub mod histogram;
pub mod metrics;
