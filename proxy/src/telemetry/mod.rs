//! Metrics, logs and traces.
pub(crate) mod access_log;
pub(crate) mod failures;
pub(crate) mod histogram;
pub(crate) mod metrics;
pub(crate) mod propagation;
pub(crate) mod timestamp;
pub(crate) mod trace;
