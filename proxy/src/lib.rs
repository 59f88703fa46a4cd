//! Weft's data plane: the sidecar proxy.
//!
//! The library exists for the `weft-proxy` binary: its public surface is
//! [`run`] (the `run` command), [`iptables`] (the `iptables` command),
//! [`explain`] (the `explain` command) and [`check`] (the warnings of the
//! `check` command);
//! everything else is the crate's own.
//!
//! A request flows listener → detect → route → backend → balancer → pool →
//! upstream; every piece reads the immutable [`snapshot::Snapshot`] in force
//! through `arc-swap`, so a config reload is one pointer swap.

#![warn(unreachable_pub)]

pub(crate) mod admin;
pub(crate) mod authz;
pub(crate) mod backend;
pub(crate) mod balance;
pub(crate) mod body;
pub mod check;
pub(crate) mod control_plane;
pub(crate) mod drain;
pub mod explain;
pub(crate) mod file_watch;
#[cfg(fuzzing)]
pub mod fuzz_surface;
pub(crate) mod h1;
pub(crate) mod http;
pub(crate) mod identity;
pub mod iptables;
pub(crate) mod listen;
pub(crate) mod memory;
pub(crate) mod pipeline;
pub(crate) mod probes;
pub(crate) mod proxy;
pub(crate) mod resilience;
pub(crate) mod route;
pub mod run;
pub(crate) mod snapshot;
pub(crate) mod tcp;
pub(crate) mod telemetry;
pub(crate) mod tls;
pub(crate) mod transport;
