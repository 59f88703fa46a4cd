//! What both Weft binaries agree on, so they cannot drift apart:
//!
//! - [`config`]: the resource model (`HTTPRoute`, `Backend`, `TrafficPolicy`,
//!   `AuthorizationPolicy`, `MeshConfig`), YAML loading that keeps positions,
//!   validation whose errors name `file:line:column` and the field path, and
//!   the files a config is read from.
//! - [`names`]: the name table, which authority (`reviews`, `reviews.shop:8080`,
//!   a route hostname) leads to which route rules and Backend. The proxy
//!   routes with it; the control plane scopes snapshots with it.
//! - [`api`]: the messages between the control plane and proxies.
//! - [`identity`]: SPIFFE IDs, workload keys and CSRs, the CA, bootstrap
//!   tokens, and the mTLS configs built from them.
//! - [`process`]: logging, the shutdown signal and a lock helper, which both
//!   binaries set up the same way.
//!
//! Nothing here touches the data path: no sockets, no request handling.

pub mod api;
pub mod config;
pub mod identity;
pub mod names;
pub mod process;
