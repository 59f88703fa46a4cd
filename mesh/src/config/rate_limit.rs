//! `TrafficPolicy.spec.rateLimit`: local rate limits the inbound sidecar of
//! the policy's target service enforces for its own replica — a total
//! limit, a limit per verified caller identity, and overrides for named
//! identities (callers without a verified identity share one bucket).
//!
//! Rates are whole requests per second; `burst` is how many may come at
//! once after a quiet spell (default: one second's worth, see
//! `defaults::rate_limit_burst`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimit {
    /// Every request to this replica, whoever sends it.
    #[serde(default)]
    pub total: Option<Limit>,
    /// Each verified caller identity (SPIFFE ID) on its own; callers
    /// without a verified identity share one bucket of this size.
    #[serde(default)]
    pub identity: Option<Limit>,
    /// Named identities with a limit of their own instead of `identity`.
    #[serde(default)]
    pub overrides: Vec<Override>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limit {
    pub requests_per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Override {
    /// `spiffe://` URIs, matched exactly.
    pub identities: Vec<String>,
    pub requests_per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}
