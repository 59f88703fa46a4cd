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
//!
//! Routes and Weft resources read from the cluster ([`ClusterObject`]s)
//! are each judged on their own, against everything else: an object the
//! loader refuses is left out with its errors (kept for its status, see
//! [`Inputs::rejected`]) and the rest is served. Leaving one out can make
//! another refer to nothing, so the set is loaded again until it holds.

use crate::scope::Catalog;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use weft_mesh::config::ConfigErrors;
use weft_mesh::process::lock;

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

/// Sources named so are routes and Weft resources read from Kubernetes.
pub(crate) const OBJECT_SOURCE: &str = "kubernetes-object:";

/// One route or Weft resource read from the cluster, as a document.
pub(crate) struct ClusterObject {
    /// `Kind namespace/name`.
    pub(crate) key: String,
    pub(crate) text: String,
}

/// Why the loader left a cluster object out: `(field path, message)`s.
pub(crate) type Rejections = BTreeMap<String, Vec<(String, String)>>;

/// The last accepted input of each source.
#[derive(Default)]
pub(crate) struct Inputs {
    files: Vec<(String, String)>,
    /// `namespace/name` of the files' Backends.
    file_backends: HashSet<String>,
    kubernetes: Vec<Generated>,
    objects: Vec<ClusterObject>,
    /// The cluster objects the last accepted resources left out.
    rejected: Mutex<Rejections>,
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

    pub(crate) fn set_objects(&mut self, objects: Vec<ClusterObject>) {
        self.objects = objects;
    }

    /// The cluster objects the last accepted resources left out, by key.
    pub(crate) fn rejected(&self) -> Rejections {
        lock(&self.rejected).clone()
    }

    /// The files, then the Services no file Backend overrides, then the
    /// cluster objects the loader accepts (each judged on its own).
    pub(crate) fn resources(&self) -> Result<Resources, String> {
        let mut sources = self.files.clone();
        for g in &self.kubernetes {
            if self.file_backends.contains(&g.service) {
                continue;
            }
            sources.push((format!("{KUBERNETES_SOURCE}{}", g.service), g.text.clone()));
        }
        let named: BTreeMap<String, &ClusterObject> = self
            .objects
            .iter()
            .map(|o| (format!("{OBJECT_SOURCE}{}", o.key), o))
            .collect();
        let mut rejected = Rejections::new();
        // Each round leaves out at least one more object, or ends.
        loop {
            let mut all = sources.clone();
            for (name, o) in &named {
                if !rejected.contains_key(&o.key) {
                    all.push((name.clone(), o.text.clone()));
                }
            }
            match build(all) {
                Ok(r) => {
                    *lock(&self.rejected) = rejected;
                    return Ok(r);
                }
                Err(errors) => {
                    let mut blamed = false;
                    for e in &errors.0 {
                        if let Some(o) = named.get(&e.file) {
                            blamed = true;
                            rejected
                                .entry(o.key.clone())
                                .or_default()
                                .push((e.path.clone(), e.message.clone()));
                        }
                    }
                    if !blamed {
                        return Err(errors.to_string());
                    }
                }
            }
        }
    }
}

/// Loads and validates `(name, text)` sources. The version is a hash of
/// their text (the first 16 hex digits of SHA-256), in order.
fn build(sources: Vec<(String, String)>) -> Result<Resources, ConfigErrors> {
    let set = weft_mesh::config::load_sources(sources)?;
    let mut all = String::new();
    let mut files = Vec::new();
    let mut services = 0;
    for (name, text) in &set.sources {
        if name.starts_with(KUBERNETES_SOURCE) {
            services += 1;
        } else if !name.starts_with(OBJECT_SOURCE) {
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

    #[test]
    fn a_traffic_policy_reaches_the_proxies_of_its_service_whichever_kind_it_targets() {
        let policy = |name: &str, kind: &str, target: &str| {
            ClusterObject {
                key: format!("TrafficPolicy shop/{name}"),
                text: format!("apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{targetRef: {{kind: {kind}, name: {target}}}, loadBalancer: {{policy: RoundRobin}}}}\n"),
            }
        };
        let mut inputs = Inputs::default();
        inputs.set_kubernetes(vec![
            Generated {
                service: "shop/ratings".into(),
                text: backend("ratings", "10.1.0.2:80"),
            },
            Generated {
                service: "shop/reviews".into(),
                text: backend("reviews", "10.1.0.3:80"),
            },
        ]);
        inputs.set_objects(vec![
            policy("by-service", "Service", "ratings"),
            policy("by-backend", "Backend", "reviews"),
        ]);
        let r = inputs.resources().unwrap();
        assert!(inputs.rejected().is_empty(), "{:?}", inputs.rejected());
        let scoped = |want: &str| r.catalog.scope("shop", None, &[want.into()].into()).yaml;
        let ratings = scoped("ratings");
        assert!(ratings.contains("name: by-service"), "{ratings}");
        assert!(!ratings.contains("name: by-backend"), "{ratings}");
        let reviews = scoped("reviews");
        assert!(reviews.contains("name: by-backend"), "{reviews}");
        assert!(!reviews.contains("name: by-service"), "{reviews}");
    }

    fn route(name: &str, backend: &str, weight: u32) -> String {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{parentRefs: [{{kind: Service, name: ratings}}], rules: [{{backendRefs: [{{name: {backend}, weight: {weight}}}]}}]}}\n")
    }

    #[test]
    fn a_bad_cluster_object_is_left_out_and_the_rest_is_served() {
        let mut inputs = Inputs::default();
        inputs.set_kubernetes(vec![Generated {
            service: "shop/ratings".into(),
            text: backend("ratings", "10.1.0.2:80"),
        }]);
        let object = |key: &str, text: String| ClusterObject {
            key: key.into(),
            text,
        };
        inputs.set_objects(vec![
            object("HTTPRoute shop/good", route("good", "ratings", 1)),
            object("HTTPRoute shop/heavy", route("heavy", "ratings", 5_000_000)),
            object("Backend shop/broken", backend("broken", "not-an-address")),
            // Refers to the Backend left out: left out in the next round.
            object("HTTPRoute shop/to-broken", route("to-broken", "broken", 1)),
        ]);
        let r = inputs.resources().unwrap();
        let rejected = inputs.rejected();
        assert_eq!(
            rejected.keys().collect::<Vec<_>>(),
            [
                "Backend shop/broken",
                "HTTPRoute shop/heavy",
                "HTTPRoute shop/to-broken"
            ]
        );
        assert_eq!(
            rejected["HTTPRoute shop/heavy"][0].0,
            "spec.rules[0].backendRefs[0].weight"
        );
        assert_eq!(
            rejected["HTTPRoute shop/to-broken"][0].0,
            "spec.rules[0].backendRefs[0].name"
        );
        assert!(r.files.is_empty(), "objects are not files: {:?}", r.files);
        let yaml = r
            .catalog
            .scope("shop", None, &["ratings".into()].into())
            .yaml;
        assert!(yaml.contains("name: good"), "{yaml}");
        assert!(!yaml.contains("heavy"), "{yaml}");
    }

    #[test]
    fn a_proxy_gets_producer_routes_and_only_its_own_namespaces_consumer_routes() {
        let mut inputs = Inputs::default();
        inputs.set_kubernetes(vec![Generated {
            service: "shop/ratings".into(),
            text: backend("ratings", "10.1.0.2:80"),
        }]);
        let consumer = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: mine, namespace: web}\nspec: {parentRefs: [{kind: Service, name: ratings, namespace: shop}], rules: [{backendRefs: [{name: ratings, namespace: shop}]}]}\n";
        inputs.set_objects(vec![
            ClusterObject {
                key: "HTTPRoute shop/producer".into(),
                text: route("producer", "ratings", 1),
            },
            ClusterObject {
                key: "HTTPRoute web/mine".into(),
                text: consumer.into(),
            },
        ]);
        let r = inputs.resources().unwrap();
        let sent = |ns: &str| {
            r.catalog
                .scope(ns, None, &["ratings.shop".into()].into())
                .yaml
        };
        let web = sent("web");
        assert!(
            web.contains("name: mine") && !web.contains("name: producer"),
            "{web}"
        );
        let other = sent("other");
        assert!(
            other.contains("name: producer") && !other.contains("name: mine"),
            "{other}"
        );
    }
}
