//! The resource model: typed YAML resources, their defaults, and validation
//! whose every error names file, line, column and field path.
//!
//! The same loader serves `weft-proxy run`, `weft-proxy check` and the
//! control plane, so a file accepted by one is accepted by all.

pub mod backend;
pub mod debug_headers;
pub mod defaults;
pub mod duration;
pub mod fault;
pub mod files;
pub mod grpc_route;
pub mod hedge;
mod load;
pub mod policy;
pub mod rate_limit;
pub mod route;
#[cfg(feature = "schema")]
pub mod schema;
pub mod success_rate;
mod validate;
pub use validate::parse_size;
pub mod yaml;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

pub use backend::{BackendSpec, Protocol};
pub use duration::Dur;
pub use files::load_paths;
pub use grpc_route::GrpcRouteSpec;
pub use load::load_sources;
pub use policy::{AuthorizationPolicySpec, MeshConfigSpec, TrafficPolicySpec};
pub use route::HttpRouteSpec;

pub(crate) const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";
pub(crate) const WEFT_API: &str = "weft.dev/v1alpha1";

/// Kubernetes object metadata, the part we read.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    // Present in objects read back from a cluster; accepted and ignored.
    #[serde(default, skip_serializing)]
    pub uid: Option<String>,
    #[serde(default, skip_serializing)]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing)]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing)]
    pub creation_timestamp: Option<String>,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Envelope<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: Metadata,
    spec: S,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

/// Where a resource was written, kept so later checks can point at it.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: Arc<str>,
    doc: Arc<yaml::Document>,
}

impl Origin {
    /// An error at a field path of this resource.
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let pos = self.doc.tree.pos_of_path(self.doc.pos, path);
        ConfigError {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// One typed resource with its metadata and origin.
#[derive(Clone, Debug)]
pub struct Resource<S> {
    pub meta: Metadata,
    pub spec: S,
    pub origin: Origin,
}

impl<S> Resource<S> {
    /// `namespace/name`, the key resources are looked up by.
    pub fn key(&self) -> String {
        format!("{}/{}", self.meta.namespace, self.meta.name)
    }
}

/// Everything loaded from a set of files, validated.
#[derive(Clone, Debug, Default)]
pub struct ConfigSet {
    pub http_routes: Vec<Resource<HttpRouteSpec>>,
    pub grpc_routes: Vec<Resource<GrpcRouteSpec>>,
    pub backends: Vec<Resource<BackendSpec>>,
    pub traffic_policies: Vec<Resource<TrafficPolicySpec>>,
    pub authorization_policies: Vec<Resource<AuthorizationPolicySpec>>,
    pub mesh_configs: Vec<Resource<MeshConfigSpec>>,
    /// The source files and their text, as read (for `/config`).
    pub sources: Vec<(String, String)>,
}

/// A config problem a user can act on: `file:line:column: path: message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A list of errors, displayed one per line.
#[derive(Clone, Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests;
