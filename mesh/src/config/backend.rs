//! `weft.dev/v1alpha1` `Backend`: where a service's endpoints come from.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 to the endpoints (requests arriving over HTTP/2 are translated).
    #[default]
    Http,
    /// HTTP/2 with prior knowledge to the endpoints.
    Http2,
    /// gRPC: HTTP/2 to the endpoints, trailers carried through.
    Grpc,
    /// Opaque TCP: bytes are forwarded, nothing is parsed.
    Tcp,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSpec {
    #[serde(default)]
    pub protocol: Protocol,
    /// The port clients address (`name:port`); informational when absent.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub dns: Option<DnsSpec>,
    /// Protocols besides WebSocket a client may switch to (`Upgrade:`) on
    /// this Backend; a switched connection is a tunnel no later request of
    /// it is routed or authorized through, so each is opted in here. Other
    /// upgrade offers (h2c among them) are removed and the request goes on
    /// as the plain request it also is.
    #[serde(default)]
    pub upgrades: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSpec {
    pub address: String,
    #[serde(default)]
    pub weight: Option<u32>,
    #[serde(default)]
    pub identity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsSpec {
    pub name: String,
    pub port: u16,
}
