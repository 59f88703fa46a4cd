//! Weft's data plane: the sidecar proxy.
//!
//! A request flows listener → detect → route → backend → balancer → pool →
//! upstream; every piece reads the immutable [`snapshot::Snapshot`] in force
//! through `arc-swap`, so a config reload is one pointer swap.

pub mod admin;
pub mod authz;
pub mod backend;
pub mod balance;
pub mod body;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod http;
pub mod iptables;
pub mod listen;
pub mod mesh_api;
pub mod proxy;
pub mod reload;
pub mod resilience;
pub mod run;
pub mod snapshot;
pub mod tcp;
pub mod telemetry;
pub mod tls;

/// Locks a mutex, carrying on if a panicking holder poisoned it: the state
/// behind these locks (the proxy's and the control plane's) is plain bookkeeping that stays valid.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
