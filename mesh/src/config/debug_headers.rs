//! `MeshConfig.spec.debugHeaders`: whether outbound sidecars tell the app,
//! on every response, which route and rule, backend and endpoint served it
//! and in how many tries (`x-weft-route`, `x-weft-backend`,
//! `x-weft-endpoint`, `x-weft-tries`). Off by default: the headers name
//! internal addresses, so a mesh opts in (typically while debugging).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DebugHeaders {
    #[serde(default)]
    pub enabled: bool,
}
