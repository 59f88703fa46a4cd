//! `TrafficPolicy.spec.fault`: faults the caller's sidecar injects into
//! requests to the policy's target, so a team can see how its service
//! behaves when a dependency answers late or fails — an abort (HTTP or gRPC
//! status) and/or a fixed delay, each for a share of requests, optionally
//! only for requests carrying given headers (so one test targets itself).

use super::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fault {
    /// Answer at once with a status, without sending the request on.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    /// Wait this long before sending the request on (drawn before abort).
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Inject only into requests carrying every one of these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<FaultHeader>,
}

/// Exactly one of `httpStatus` and `grpcStatus`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbort {
    /// 200-599.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 200, max = 599)))]
    pub http_status: Option<u16>,
    /// A gRPC status code, 1-16.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 16)))]
    pub grpc_status: Option<u16>,
    /// Share of requests aborted, 0-100 (decimals allowed); default 100.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub percent: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelay {
    pub fixed_delay: Dur,
    /// Share of requests delayed, 0-100 (decimals allowed); default 100.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 100)))]
    pub percent: Option<f64>,
}

/// A header the request must carry: with `value`, exactly that value;
/// without, any value.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultHeader {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
}
