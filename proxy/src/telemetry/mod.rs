//! Metrics, logs and traces.
pub mod access_log;
pub mod histogram;
pub mod metrics;
pub mod propagation;
pub mod trace;
