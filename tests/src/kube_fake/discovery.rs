//! Discovery: the documents a client reads before it touches a resource,
//! and the resource table the fake derives from them.
//!
//! The fake reads the discovery documents recorded from kube-apiserver
//! v1.36.2 (`tests/fixtures/k8s/discovery/`) at start: they are the only
//! recordings it reads at run time. The aggregated documents (`/api`, `/apis`
//! with the `apidiscovery.k8s.io/v2` Accept) list every group, version and
//! resource with its kind, scope, verbs and subresources, so the same files
//! drive both what discovery answers and which URLs the fake serves.
//! Custom resource definitions given to the builder (the Weft CRDs) are
//! added to both, shaped like the recorded Gateway API ones.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The aggregated-discovery media type the server answers with when asked.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// One served resource in one group/version.
#[derive(Debug, Clone)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    pub subresources: Vec<String>,
    /// Served by a CustomResourceDefinition (lists carry kind/apiVersion on
    /// every item, strategic merge patch is refused, ...).
    pub custom: bool,
}

impl Resource {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `endpointslices.discovery.k8s.io` (or `services` in the core group):
    /// the storage key and the name apiserver messages use.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }
}

/// A custom resource definition the fake serves as if it were installed.
#[derive(Debug, Clone)]
pub struct Crd {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Whether it has the `/status` subresource.
    pub status: bool,
}

impl Crd {
    /// A namespaced CRD with a `/status` subresource.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Crd {
        Crd {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            status: true,
        }
    }

    /// The Weft CRDs as the chart installs them: read from the generated
    /// `charts/weft/crds/weft.dev.yaml` (`weft-control-plane crds`), so the
    /// fake serves the one definition there is.
    pub fn weft() -> Vec<Crd> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/weft/crds/weft.dev.yaml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Crd::from_definitions(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The served versions of each `apiextensions.k8s.io/v1`
    /// CustomResourceDefinition in a YAML stream.
    pub fn from_definitions(yaml: &str) -> Result<Vec<Crd>, String> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for d in docs.iter().filter(|d| !d.is_null()) {
            if d["apiVersion"] != "apiextensions.k8s.io/v1"
                || d["kind"] != "CustomResourceDefinition"
            {
                return Err(format!("not a CustomResourceDefinition: {}", d["kind"]));
            }
            let spec = &d["spec"];
            let field = |v: &Value, what: &str| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{}: no {what}", d["metadata"]["name"]))
            };
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["served"] != true {
                    continue;
                }
                out.push(Crd {
                    group: field(&spec["group"], "spec.group")?,
                    version: field(&v["name"], "version name")?,
                    kind: field(&spec["names"]["kind"], "spec.names.kind")?,
                    plural: field(&spec["names"]["plural"], "spec.names.plural")?,
                    namespaced: spec["scope"] == "Namespaced",
                    status: v["subresources"].get("status").is_some(),
                });
            }
        }
        Ok(out)
    }
}

/// Groups installed through CRDs on the recording server.
const CUSTOM_GROUPS: &[&str] = &["gateway.networking.k8s.io"];

/// The discovery documents and the resource table.
pub struct Discovery {
    /// path → (content type, body) for the plain JSON documents.
    plain: BTreeMap<String, (String, Value)>,
    /// `/api` and `/apis` aggregated documents.
    aggregated: BTreeMap<String, Value>,
    /// `/openapi/v3` index (served as recorded: text/plain).
    openapi: Option<String>,
    resources: Vec<Arc<Resource>>,
    /// Groups added from the builder's CRDs.
    custom_groups: Vec<String>,
}

/// Where the copied recordings live in the repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/k8s")
}

fn recorded_body(dir: &Path, file: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    Ok(v["response"]["body"].clone())
}

impl Discovery {
    /// Loads the recorded discovery documents and adds `crds`.
    pub fn load(crds: &[Crd]) -> Result<Discovery, String> {
        let dir = fixtures_dir().join("discovery");
        let mut plain = BTreeMap::new();
        let mut openapi = None;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let text = std::fs::read_to_string(entry.path()).map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let path = v["request"]["path"].as_str().unwrap_or("").to_string();
            let accept = v["request"]["headers"]["Accept"].as_str().unwrap_or("");
            let status = v["response"]["status"].as_u64().unwrap_or(0);
            let ctype = v["response"]["headers"]["Content-Type"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if status != 200 || accept.contains("apidiscovery") {
                continue;
            }
            if path == "/openapi/v3" {
                openapi = v["response"]["body"].as_str().map(str::to_string);
                continue;
            }
            plain.insert(path, (ctype, v["response"]["body"].clone()));
        }
        let mut aggregated = BTreeMap::new();
        aggregated.insert(
            "/api".into(),
            recorded_body(&dir, "api-aggregated-v2.json")?,
        );
        aggregated.insert(
            "/apis".into(),
            recorded_body(&dir, "apis-aggregated-v2.json")?,
        );
        let mut d = Discovery {
            plain,
            aggregated,
            openapi,
            resources: Vec::new(),
            custom_groups: crds.iter().map(|c| c.group.clone()).collect(),
        };
        for crd in crds {
            d.add_crd(crd);
        }
        d.resources = d.derive_resources();
        Ok(d)
    }

    fn add_crd(&mut self, crd: &Crd) {
        let gv = format!("{}/{}", crd.group, crd.version);
        let kind = json!({"group": crd.group, "version": crd.version, "kind": crd.kind});
        let resource = json!({
            "resource": crd.plural,
            "responseKind": kind,
            "scope": if crd.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": crd.kind.to_lowercase(),
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            "subresources": if crd.status {
                json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}])
            } else {
                json!([])
            },
        });
        let version = json!({"version": crd.version, "resources": [resource.clone()], "freshness": "Current"});
        let gv_ref = json!({"groupVersion": gv, "version": crd.version});
        if let Some(items) = self
            .aggregated
            .get_mut("/apis")
            .and_then(|a| a["items"].as_array_mut())
        {
            match items
                .iter_mut()
                .find(|g| g["metadata"]["name"] == crd.group.as_str())
            {
                Some(group) => {
                    let versions = group["versions"].as_array_mut().expect("versions");
                    match versions
                        .iter_mut()
                        .find(|v| v["version"] == crd.version.as_str())
                    {
                        Some(v) => v["resources"]
                            .as_array_mut()
                            .expect("resources")
                            .push(resource),
                        None => versions.push(version),
                    }
                }
                None => items.push(json!({"metadata": {"name": crd.group}, "versions": [version]})),
            }
        }
        if let Some((_, apis)) = self.plain.get_mut("/apis") {
            let groups = apis["groups"].as_array_mut().expect("groups");
            if !groups.iter().any(|g| g["name"] == crd.group.as_str()) {
                groups.push(json!({"name": crd.group, "versions": [gv_ref.clone()], "preferredVersion": gv_ref}));
            }
        }
    }

    fn derive_resources(&self) -> Vec<Arc<Resource>> {
        let mut out = Vec::new();
        for (path, doc) in &self.aggregated {
            for group in doc["items"].as_array().into_iter().flatten() {
                let gname = if path == "/api" {
                    String::new()
                } else {
                    group["metadata"]["name"].as_str().unwrap_or("").to_string()
                };
                let custom =
                    CUSTOM_GROUPS.contains(&gname.as_str()) || self.custom_groups.contains(&gname);
                for v in group["versions"].as_array().into_iter().flatten() {
                    for r in v["resources"].as_array().into_iter().flatten() {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                        out.push(Arc::new(Resource {
                            group: gname.clone(),
                            version: v["version"].as_str().unwrap_or("").to_string(),
                            plural: s("resource"),
                            singular: s("singularResource"),
                            kind: r["responseKind"]["kind"].as_str().unwrap_or("").to_string(),
                            namespaced: r["scope"] == "Namespaced",
                            verbs: strings(&r["verbs"]),
                            subresources: r["subresources"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|s| s["subresource"].as_str().map(str::to_string))
                                .collect(),
                            custom,
                        }));
                    }
                }
            }
        }
        out
    }

    /// Puts the fake's own address in `/api`'s `serverAddressByClientCIDRs`.
    pub fn set_server_address(&mut self, addr: &str) {
        if let Some((_, api)) = self.plain.get_mut("/api") {
            for a in api["serverAddressByClientCIDRs"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                a["serverAddress"] = addr.into();
            }
        }
    }

    /// The resource served at `group/version/plural`.
    pub fn resource(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// The resource for a kind in an apiVersion (objects given in-process).
    pub fn resource_for_kind(&self, api_version: &str, kind: &str) -> Option<Arc<Resource>> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
    }

    /// A discovery answer for `path`, or None when `path` is not discovery.
    /// `accept` picks aggregated v2 when the client asks for it.
    pub fn answer(&self, path: &str, accept: &str) -> Option<(String, String)> {
        if (path == "/api" || path == "/apis") && accept.contains("g=apidiscovery.k8s.io;v=v2;") {
            let body = self.aggregated.get(path)?;
            return Some((AGGREGATED.to_string(), body.to_string()));
        }
        if path == "/openapi/v3" {
            return self
                .openapi
                .clone()
                .map(|b| ("text/plain; charset=utf-8".into(), b));
        }
        if let Some((ctype, body)) = self.plain.get(path) {
            return Some((ctype.clone(), body.to_string()));
        }
        self.derived(path)
            .map(|b| ("application/json".into(), b.to_string()))
    }

    /// Group and group-version documents that were not recorded one by one,
    /// built from the aggregated documents in the recorded shape.
    fn derived(&self, path: &str) -> Option<Value> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["apis", group] => {
                let (_, apis) = self.plain.get("/apis")?;
                let g = apis["groups"]
                    .as_array()?
                    .iter()
                    .find(|g| g["name"] == *group)?;
                let mut doc = json!({"kind": "APIGroup", "apiVersion": "v1"});
                for k in ["name", "versions", "preferredVersion"] {
                    doc[k] = g[k].clone();
                }
                Some(doc)
            }
            ["apis", group, version] => self.group_version_doc(group, version),
            _ => None,
        }
    }

    fn group_version_doc(&self, group: &str, version: &str) -> Option<Value> {
        let mut resources = Vec::new();
        for r in self
            .resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            resources.push(json!({
                "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": r.verbs,
            }));
            for sub in &r.subresources {
                resources.push(json!({
                    "name": format!("{}/{sub}", r.plural), "singularName": "",
                    "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"],
                }));
            }
        }
        if resources.is_empty() {
            return None;
        }
        Some(json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"), "resources": resources,
        }))
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}
