//! Reading resources: YAML documents to typed resources (each keeping where
//! it was written), then the checks serde cannot make.

use super::{
    validate, yaml, ConfigError, ConfigErrors, ConfigSet, Envelope, Origin, Resource, GATEWAY_API,
    WEFT_API,
};
use std::sync::Arc;

/// Parses and validates resources from `(file name, text)` pairs.
pub fn load_sources(sources: Vec<(String, String)>) -> Result<ConfigSet, ConfigErrors> {
    let mut set = ConfigSet::default();
    let mut errors = Vec::new();
    for (file, text) in &sources {
        let file: Arc<str> = Arc::from(file.as_str());
        let docs = match yaml::documents(text) {
            Ok(d) => d,
            Err(e) => {
                errors.push(ConfigError {
                    file: file.to_string(),
                    line: e.pos.line,
                    column: e.pos.column,
                    path: String::new(),
                    message: e.message,
                });
                continue;
            }
        };
        for doc in docs {
            if let Err(e) = add_document(&mut set, &file, doc) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        errors = validate::validate(&set);
    }
    set.sources = sources;
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn add_document(
    set: &mut ConfigSet,
    file: &Arc<str>,
    doc: yaml::Document,
) -> Result<(), ConfigError> {
    let doc = Arc::new(doc);
    let origin = Origin {
        file: file.clone(),
        doc: doc.clone(),
    };
    let api = doc.tree.str_at(&["apiVersion"]).unwrap_or("");
    let kind = doc.tree.str_at(&["kind"]).unwrap_or("");
    if kind.is_empty() {
        return Err(origin.error("kind", "every resource needs a kind"));
    }
    let want_api = match kind {
        "HTTPRoute" | "GRPCRoute" => GATEWAY_API,
        "Backend" | "TrafficPolicy" | "AuthorizationPolicy" | "MeshConfig" => WEFT_API,
        other => {
            return Err(origin.error(
                "kind",
                format!(
                    "unknown kind {other:?}; expected HTTPRoute, GRPCRoute, Backend, TrafficPolicy, AuthorizationPolicy or MeshConfig"
                ),
            ))
        }
    };
    let api_ok =
        api == want_api || (kind == "HTTPRoute" && api == "gateway.networking.k8s.io/v1beta1");
    if !api_ok {
        return Err(origin.error(
            "apiVersion",
            format!("{kind} is served as apiVersion {want_api:?}, not {api:?}"),
        ));
    }
    fn typed<S: serde::de::DeserializeOwned>(origin: &Origin) -> Result<Resource<S>, ConfigError> {
        let env: Envelope<S> = yaml::parse(&origin.doc).map_err(|e| ConfigError {
            file: origin.file.to_string(),
            line: e.pos.line,
            column: e.pos.column,
            path: origin.doc.tree.path_at(e.pos),
            message: e.message,
        })?;
        Ok(Resource {
            meta: env.metadata,
            spec: env.spec,
            origin: origin.clone(),
        })
    }
    match kind {
        "HTTPRoute" => set.http_routes.push(typed(&origin)?),
        "GRPCRoute" => set.grpc_routes.push(typed(&origin)?),
        "Backend" => set.backends.push(typed(&origin)?),
        "TrafficPolicy" => set.traffic_policies.push(typed(&origin)?),
        "AuthorizationPolicy" => set.authorization_policies.push(typed(&origin)?),
        _ => set.mesh_configs.push(typed(&origin)?),
    }
    Ok(())
}
