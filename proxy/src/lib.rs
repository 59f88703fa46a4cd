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
pub mod control_plane;
pub mod drain;
pub mod file_watch;
pub(crate) mod h1;
pub mod http;
pub mod identity;
pub mod iptables;
pub mod listen;
pub mod pipeline;
pub mod proxy;
pub mod resilience;
pub mod route;
pub mod run;
pub mod snapshot;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub(crate) mod transport;
