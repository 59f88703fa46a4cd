//! What each proxy is sent: only what it needs, so a sidecar's memory does
//! not grow with services it never calls.
//!
//! A proxy gets the mesh-wide settings (MeshConfig), the AuthorizationPolicies
//! of the service it fronts, and — for every name it has asked for (its
//! app called it and it had no route) — the routes that name reaches, the
//! Backends those routes and the name itself lead to, and their
//! TrafficPolicies (and, when one of them sets a `rateLimit` on the
//! service the proxy fronts, that service's Backend and policies, as the
//! limit is enforced on the way in). Names are resolved with the same name table the proxy
//! routes with (built for the proxy's namespace), so both sides agree on
//! what `reviews`, `reviews.shop` or `reviews:8080` means. The same table
//! applies GAMMA's consumer routes, so a proxy is sent the producer routes
//! plus the consumer routes of its own namespace (which shadow the
//! producer routes of their Service), never another namespace's.
//!
//! The scoped YAML is the selected documents' own text, in file order; its
//! version is a hash of that text, so two control planes give a proxy the
//! same version for the same files and wants.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use weft_mesh::config::route::{BackendRef, Filter};
use weft_mesh::config::{yaml, ConfigSet};
use weft_mesh::names::{Destination, NameTable};
use weft_mesh::process::lock;

/// One YAML document of the resources, with what scoping looks at.
#[derive(Debug, Clone)]
struct Doc {
    kind: String,
    /// `namespace/name`.
    key: String,
    namespace: String,
    /// `spec.targetRef` as (kind, name).
    target: Option<(String, String)>,
    text: String,
}

/// The resources split into documents, and per-namespace name tables to
/// resolve names with (built on first use).
pub(crate) struct Catalog {
    docs: Vec<Doc>,
    set: ConfigSet,
    names: Mutex<HashMap<String, Arc<NameTable<Destination>>>>,
}

/// The documents of all sources, in order.
fn split(set: &ConfigSet) -> Vec<Doc> {
    let mut out = Vec::new();
    for (_, text) in &set.sources {
        let Ok(docs) = yaml::documents(text) else {
            continue;
        };
        for d in docs {
            let t = &d.tree;
            let Some(kind) = t.str_at(&["kind"]) else {
                continue;
            };
            let name = t.str_at(&["metadata", "name"]).unwrap_or_default();
            let namespace = t.str_at(&["metadata", "namespace"]).unwrap_or("default");
            let target = match (
                t.str_at(&["spec", "targetRef", "kind"]),
                t.str_at(&["spec", "targetRef", "name"]),
            ) {
                (Some(k), Some(n)) => Some((k.to_string(), n.to_string())),
                _ => None,
            };
            out.push(Doc {
                kind: kind.to_string(),
                key: format!("{namespace}/{name}"),
                namespace: namespace.to_string(),
                target,
                text: d.text.trim_end().to_string(),
            });
        }
    }
    out
}

/// A proxy's scoped resources.
pub(crate) struct Scoped {
    pub(crate) version: String,
    pub(crate) yaml: String,
}

pub(crate) fn version_of(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Catalog {
    pub(crate) fn new(set: ConfigSet) -> Catalog {
        Catalog {
            docs: split(&set),
            set,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// `MeshConfig.spec.certificateLifetime`, if one sets it.
    pub(crate) fn certificate_lifetime(&self) -> Option<std::time::Duration> {
        self.set
            .mesh_configs
            .iter()
            .find_map(|m| m.spec.certificate_lifetime.map(|d| d.0))
    }

    /// The names a proxy in `namespace` knows from everything.
    fn names(&self, namespace: &str) -> Arc<NameTable<Destination>> {
        if let Some(t) = lock(&self.names).get(namespace) {
            return t.clone();
        }
        let table = Arc::new(NameTable::build(&self.set, namespace));
        let mut map = lock(&self.names);
        // Bounded by the namespaces proxies run in.
        if map.len() >= 256 {
            map.clear();
        }
        map.insert(namespace.to_string(), table.clone());
        table
    }

    /// Which of `wants` resolve to something (the rest are unknown names).
    pub(crate) fn scope(
        &self,
        namespace: &str,
        service: Option<&str>,
        wants: &BTreeSet<String>,
    ) -> Scoped {
        if wants.is_empty() {
            return self.cut(namespace, service, &[]);
        }
        let names = self.names(namespace);
        let reached: Vec<&Destination> = wants.iter().filter_map(|w| names.get(w)).collect();
        self.cut(namespace, service, &reached)
    }

    /// Everything a proxy in `namespace` fronting `service` could see:
    /// the scope of every name its namespace's table knows, not only the
    /// names it has asked for (`GET /resources`, for `weft-proxy explain`).
    pub(crate) fn visible(&self, namespace: &str, service: Option<&str>) -> Scoped {
        let names = self.names(namespace);
        let all: Vec<&Destination> = names.entries().iter().collect();
        self.cut(namespace, service, &all)
    }

    /// The documents that serve `reached` (and the proxy's own policies).
    fn cut(&self, namespace: &str, service: Option<&str>, reached: &[&Destination]) -> Scoped {
        let mut routes = BTreeSet::new();
        let mut backends = BTreeSet::new();
        for d in reached {
            for m in &d.matches {
                routes.insert(match m.grpc {
                    true => ("GRPCRoute", self.set.grpc_routes[m.route].key()),
                    false => ("HTTPRoute", self.set.http_routes[m.route].key()),
                });
            }
            if let Some(b) = d.backend {
                backends.insert(self.set.backends[b].key());
            }
        }
        // Every backend an included route names (mirrors too) must come
        // along, or the proxy's validation would (rightly) refuse the route.
        let mut refs = |ns: &'_ String, rules: Vec<(&'_ [Filter], &'_ [BackendRef])>| {
            for (filters, backend_refs) in rules {
                let mirrors = filters.iter().filter_map(|f| f.request_mirror.as_ref());
                for b in backend_refs.iter().chain(mirrors.map(|m| &m.backend_ref)) {
                    let ns = b.namespace.as_deref().unwrap_or(ns);
                    backends.insert(format!("{ns}/{}", b.name));
                }
            }
        };
        for r in &self.set.http_routes {
            if routes.contains(&("HTTPRoute", r.key())) {
                let rules = r
                    .spec
                    .rules
                    .iter()
                    .map(|x| (&x.filters[..], &x.backend_refs[..]));
                refs(&r.meta.namespace, rules.collect());
            }
        }
        for r in &self.set.grpc_routes {
            if routes.contains(&("GRPCRoute", r.key())) {
                let rules = r
                    .spec
                    .rules
                    .iter()
                    .map(|x| (&x.filters[..], &x.backend_refs[..]));
                refs(&r.meta.namespace, rules.collect());
            }
        }
        // The inbound sidecar enforces its own service's rate limit: a
        // TrafficPolicy with `rateLimit` on it brings the service's
        // Backend along (the proxy checks that a policy's target exists),
        // and with it that Backend's TrafficPolicies (the rule below).
        if let Some(own) = service {
            let limited = self.set.traffic_policies.iter().any(|p| {
                let t = &p.spec.target_ref;
                p.spec.rate_limit.is_some()
                    && p.meta.namespace == namespace
                    && matches!(t.kind.as_str(), "Service" | "Backend")
                    && t.name == own
            });
            if limited {
                backends.insert(format!("{namespace}/{own}"));
            }
        }
        let mut yaml = String::new();
        for d in &self.docs {
            let keep = match d.kind.as_str() {
                "MeshConfig" => true,
                "AuthorizationPolicy" => {
                    d.namespace == namespace
                        && matches!((&d.target, service), (Some((k, n)), Some(s)) if k == "Service" && n == s)
                }
                kind @ ("HTTPRoute" | "GRPCRoute") => routes.contains(&(kind, d.key.clone())),
                "Backend" => backends.contains(&d.key),
                // Service or Backend, as validation accepts and the proxy
                // applies both by name (a Service is a Backend of its name).
                "TrafficPolicy" => match &d.target {
                    Some((k, n)) if k == "Backend" || k == "Service" => {
                        backends.contains(&format!("{}/{n}", d.namespace))
                    }
                    _ => false,
                },
                _ => false,
            };
            if keep {
                if !yaml.is_empty() {
                    yaml.push_str("\n---\n");
                }
                yaml.push_str(&d.text);
                yaml.push('\n');
            }
        }
        Scoped {
            version: version_of(&yaml),
            yaml,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews, namespace: shop}
spec:
  endpoints: [{address: \"10.1.0.3:80\"}]
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: ratings, namespace: shop}
spec:
  endpoints: [{address: \"10.1.0.4:80\"}]
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: reviews-limit, namespace: shop}
spec:
  targetRef: {kind: Service, name: reviews}
  rateLimit:
    identity: {requestsPerSecond: 20}
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings-lb, namespace: shop}
spec:
  targetRef: {kind: Service, name: ratings}
  loadBalancer: {policy: RoundRobin}
";

    fn catalog() -> Catalog {
        let set = weft_mesh::config::load_sources(vec![("mesh.yaml".into(), YAML.into())]).unwrap();
        Catalog::new(set)
    }

    #[test]
    fn the_inbound_sidecar_gets_the_rate_limit_of_its_own_service() {
        let c = catalog();
        let none = BTreeSet::new();
        // The sidecar of `reviews`, which has called nothing yet.
        let own = c.scope("shop", Some("reviews"), &none).yaml;
        assert!(own.contains("name: reviews-limit"), "{own}");
        assert!(own.contains("name: reviews, namespace: shop"), "{own}");
        assert!(!own.contains("ratings"), "{own}");
        // What it is sent loads (its target Backend came along) and
        // compiles to the limit.
        let set = weft_mesh::config::load_sources(vec![("scoped.yaml".into(), own)]).unwrap();
        assert!(set.traffic_policies[0].spec.rate_limit.is_some());
        // Another service's sidecar, or the same name in another namespace,
        // gets nothing of it.
        let other = c.scope("shop", Some("ratings"), &none).yaml;
        assert!(!other.contains("reviews"), "{other}");
        assert!(!other.contains("ratings-lb"), "{other}");
        let elsewhere = c.scope("prod", Some("reviews"), &none).yaml;
        assert!(!elsewhere.contains("reviews-limit"), "{elsewhere}");
        // A caller of `reviews` still gets its policy as before.
        let caller = c
            .scope("shop", Some("ratings"), &["reviews".into()].into())
            .yaml;
        assert!(caller.contains("name: reviews-limit"), "{caller}");
    }

    /// The same from the Kubernetes source: the Service's generated Backend
    /// and a TrafficPolicy object.
    #[test]
    fn from_kubernetes_the_service_gets_its_own_limit() {
        use crate::resources::{ClusterObject, Generated, Inputs};
        let mut inputs = Inputs::default();
        inputs.set_kubernetes(vec![Generated {
            service: "shop/reviews".into(),
            text: "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: reviews, namespace: shop}\nspec: {port: 80, endpoints: [{address: \"10.1.0.3:80\"}]}\n".into(),
        }]);
        inputs.set_objects(vec![ClusterObject {
            key: "TrafficPolicy shop/reviews-limit".into(),
            text: "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: reviews-limit, namespace: shop}\nspec: {targetRef: {kind: Service, name: reviews}, rateLimit: {total: {requestsPerSecond: 5}}}\n".into(),
        }]);
        let r = inputs.resources().unwrap();
        assert!(inputs.rejected().is_empty(), "{:?}", inputs.rejected());
        let own = r
            .catalog
            .scope("shop", Some("reviews"), &BTreeSet::new())
            .yaml;
        assert!(own.contains("name: reviews-limit"), "{own}");
        let set = weft_mesh::config::load_sources(vec![("scoped.yaml".into(), own)]).unwrap();
        assert_eq!(set.backends.len(), 1);
    }
}

#[cfg(test)]
mod visible_tests {
    use super::*;

    const RESOURCES: &str = "\
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews, namespace: shop}
spec: {endpoints: [{address: \"10.0.0.1:80\"}]}
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: ratings, namespace: shop}
spec: {endpoints: [{address: \"10.0.0.2:80\"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: shop}
spec: {parentRefs: [{name: ratings}], rules: [{backendRefs: [{name: reviews}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: web}
spec: {parentRefs: [{name: ratings, namespace: shop}], rules: [{backendRefs: [{name: ratings, namespace: shop}]}]}
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ratings, namespace: shop}
spec: {targetRef: {kind: Service, name: ratings}, connectTimeout: 2s}
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: frontend-in, namespace: shop}
spec: {targetRef: {kind: Service, name: frontend}, action: Allow, rules: [{from: {namespaces: [web]}}]}
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: other-in, namespace: shop}
spec: {targetRef: {kind: Service, name: other}, action: Allow, rules: [{from: {namespaces: [web]}}]}
";

    fn catalog() -> Catalog {
        let set = weft_mesh::config::load_sources(vec![("m.yaml".into(), RESOURCES.into())])
            .expect("valid resources");
        Catalog::new(set)
    }

    fn names(yaml: &str) -> Vec<String> {
        let mut out: Vec<String> = yaml
            .lines()
            .filter_map(|l| l.strip_prefix("metadata: {name: "))
            .map(|l| l.trim_end_matches('}').replace(", namespace: ", "@"))
            .collect();
        out.sort();
        out
    }

    /// What a proxy could see, whatever it asked for so far: every name
    /// of its namespace's table, as its scoped snapshot would carry them.
    #[test]
    fn visible_is_every_name_of_the_namespace_table() {
        let c = catalog();
        let shop = c.visible("shop", Some("frontend"));
        assert_eq!(
            names(&shop.yaml),
            [
                "frontend-in@shop",
                "producer@shop",
                "ratings@shop",
                "ratings@shop",
                "reviews@shop"
            ],
            "{}",
            shop.yaml
        );
        // The same as asking for each name one by one.
        let all: BTreeSet<String> = ["reviews.shop", "ratings.shop"].map(String::from).into();
        assert_eq!(c.scope("shop", Some("frontend"), &all).yaml, shop.yaml);
        // Nothing asked for yet: the scoped snapshot has only the proxy's own policies.
        assert_eq!(
            names(&c.scope("shop", Some("frontend"), &BTreeSet::new()).yaml),
            ["frontend-in@shop"]
        );
        // In web, the consumer route shadows the producer route.
        let web = names(&c.visible("web", None).yaml);
        assert!(web.contains(&"consumer@web".to_owned()), "{web:?}");
        assert!(!web.contains(&"producer@shop".to_owned()), "{web:?}");
        assert!(!web.iter().any(|n| n.ends_with("-in@shop")), "{web:?}");
    }
}
