//! `TrafficPolicy.spec.hedge`: after a delay with no response headers, a
//! second copy of an idempotent request goes to another endpoint and the
//! first answer wins. Defaults live in `config/defaults.rs`; the checks in
//! `validate/hedge.rs`.

use super::duration::Dur;
use serde::{Deserialize, Serialize};

/// When and how often a request is hedged: exactly one of `delay` /
/// `percentile`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Hedge {
    /// A fixed wait for response headers before the next hedge.
    #[serde(default)]
    pub delay: Option<Dur>,
    /// Wait this percentile (above 0, below 100) of the backend's recent
    /// response-header latency; no hedge until enough samples exist.
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Hedges per request, 1 to 3 (default 1).
    #[serde(default)]
    pub max_hedges: Option<u32>,
}
