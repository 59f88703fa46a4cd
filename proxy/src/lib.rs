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
pub mod discovery;
pub mod drain;
pub(crate) mod h1;
pub mod http;
pub mod iptables;
pub mod listen;
pub mod proxy;
pub mod reload;
pub mod resilience;
pub mod run;
pub mod snapshot;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub(crate) mod transport;
