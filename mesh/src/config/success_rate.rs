//! `TrafficPolicy.spec.outlierDetection.successRate`: eject an endpoint whose
//! success rate over one `interval` is far below its peers' (the mean minus
//! `stdevFactor` standard deviations), beside the consecutive-failure rule.
//!
//! Present (even `{}`) turns it on; absent leaves it off. It is opt-in
//! because it needs steady traffic to say anything (`requestVolume`
//! requests on each of `minimumHosts` endpoints per interval) and costs a
//! counter per try and a sweep per backend; a backend with few endpoints
//! or little traffic would carry the cost for nothing.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SuccessRate {
    /// Fewer endpoints than this with `requestVolume` requests in an
    /// interval: no success-rate ejection in that interval.
    #[serde(default)]
    pub minimum_hosts: Option<u32>,
    /// Requests an endpoint must have seen in the interval to be judged.
    #[serde(default)]
    pub request_volume: Option<u32>,
    /// Ejected when its rate is below mean − stdevFactor × standard deviation.
    #[serde(default)]
    pub stdev_factor: Option<f64>,
}
