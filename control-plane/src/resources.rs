//! The resources in force: what the sources (files, Kubernetes) gave,
//! validated together with the proxy's own loader, the version derived
//! from their text, and the catalog each proxy's scoped snapshot is cut
//! from.
//!
//! With both sources, a file's Backend wins over the Service of the same
//! namespace and name (the Service's Backends are left out), so a file can
//! pin or override what the cluster says. Files are checked on their own
//! first: a bad edit is rejected and the previous files stay in force
//! while cluster changes keep flowing.

use crate::scope::Catalog;
use std::collections::HashSet;
use std::path::PathBuf;

/// The resources in force.
pub(crate) struct Resources {
    pub(crate) version: String,
    /// The files among the sources (Kubernetes sources are counted apart).
    pub(crate) files: Vec<String>,
    /// How many Kubernetes Services are among them.
    pub(crate) services: usize,
    pub(crate) catalog: Catalog,
}

/// Sources named so are Services read from Kubernetes, not files.
pub(crate) const KUBERNETES_SOURCE: &str = "kubernetes:";

/// The Backend documents of one Kubernetes Service.
pub(crate) struct Generated {
    /// `namespace/name` of the Service.
    pub(crate) service: String,
    pub(crate) text: String,
}

/// The last accepted input of each source.
#[derive(Default)]
pub(crate) struct Inputs {
    files: Vec<(String, String)>,
    /// `namespace/name` of the files' Backends.
    file_backends: HashSet<String>,
    kubernetes: Vec<Generated>,
}

impl Inputs {
    /// Reads and validates the files on their own; they become this
    /// input's files.
    pub(crate) fn load_files(&mut self, paths: &[PathBuf]) -> Result<(), String> {
        if paths.is_empty() {
            return Ok(());
        }
        let set = weft_mesh::config::load_paths(paths).map_err(|e| e.to_string())?;
        self.file_backends = set.backends.iter().map(|b| b.key()).collect();
        self.files = set.sources;
        Ok(())
    }

    pub(crate) fn set_kubernetes(&mut self, docs: Vec<Generated>) {
        self.kubernetes = docs;
    }

    /// The files, then the Services no file Backend overrides.
    pub(crate) fn resources(&self) -> Result<Resources, String> {
        let mut sources = self.files.clone();
        for g in &self.kubernetes {
            if self.file_backends.contains(&g.service) {
                continue;
            }
            sources.push((format!("{KUBERNETES_SOURCE}{}", g.service), g.text.clone()));
        }
        build(sources)
    }
}

/// Loads and validates `(name, text)` sources. The version is a hash of
/// their text (the first 16 hex digits of SHA-256), in order.
fn build(sources: Vec<(String, String)>) -> Result<Resources, String> {
    let set = weft_mesh::config::load_sources(sources).map_err(|e| e.to_string())?;
    let mut all = String::new();
    let mut files = Vec::new();
    let mut services = 0;
    for (name, text) in &set.sources {
        if name.starts_with(KUBERNETES_SOURCE) {
            services += 1;
        } else {
            files.push(name.clone());
        }
        all.push_str(text);
        all.push('\0');
    }
    Ok(Resources {
        version: crate::scope::version_of(&all),
        files,
        services,
        catalog: Catalog::new(set),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, address: &str) -> String {
        format!("apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{port: 80, endpoints: [{{address: \"{address}\"}}]}}\n")
    }

    #[test]
    fn a_file_backend_overrides_the_service_of_its_name() {
        let dir = std::env::temp_dir().join(format!("weft-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mesh.yaml");
        std::fs::write(&file, backend("reviews", "10.2.0.1:80")).unwrap();
        let mut inputs = Inputs::default();
        inputs.load_files(&[file]).unwrap();
        inputs.set_kubernetes(vec![
            Generated {
                service: "shop/reviews".into(),
                text: backend("reviews", "10.1.0.1:80"),
            },
            Generated {
                service: "shop/ratings".into(),
                text: backend("ratings", "10.1.0.2:80"),
            },
        ]);
        let r = inputs.resources().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r.services, 1, "only ratings comes from the cluster");
        assert_eq!(r.files.len(), 1);
        let yaml = r
            .catalog
            .scope("shop", None, &["reviews".into(), "ratings".into()].into())
            .yaml;
        assert!(
            yaml.contains("10.2.0.1:80") && yaml.contains("10.1.0.2:80"),
            "{yaml}"
        );
        assert!(!yaml.contains("10.1.0.1"), "{yaml}");
    }
}
