//! Discovery: the documents a client reads before it touches a resource,
//! and the resource table the fake derives from them.
//!
//! The fake reads the discovery documents recorded from kube-apiserver
//! v1.36.2 (`tests/fixtures/k8s/discovery/`) at start: they are the only
//! recordings it reads at run time. The aggregated documents (`/api`, `/apis`
//! with the `apidiscovery.k8s.io/v2` Accept) list every group, version and
//! resource with its kind, scope, verbs and subresources, so the same files
//! drive both what discovery answers and which URLs the fake serves.
//! CRD versions (given to the builder, or created through the API later)
//! are added to both, shaped like the recorded Gateway API ones, and
//! removed when their CRD goes; recorded per-group documents that would no
//! longer say the same are then derived instead. It also keeps each CRD
//! version's schema, for `schema.rs`.

use super::crds::Crd;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// The CRD's `openAPIV3Schema` for this version, when it is known.
    pub schema: Option<Arc<Value>>,
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
    /// Groups served through CRDs.
    custom_groups: BTreeSet<String>,
    /// The `openAPIV3Schema` of each CRD version: (group, version, plural).
    schemas: HashMap<(String, String, String), Arc<Value>>,
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

/// Kubernetes' version priority: GA before beta before alpha, higher
/// numbers first, anything else last in name order.
fn version_key(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        let (level, n) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else {
            (2, tail.strip_prefix("alpha")?)
        };
        Some((level, -major, -n.parse::<i64>().ok()?))
    };
    match parse() {
        Some((l, a, b)) => (l, a, b, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

impl Discovery {
    /// Loads the recorded discovery documents, leaves out the CRD groups
    /// in `without` and adds `crds`.
    pub fn load(crds: &[Crd], without: &[&str]) -> Result<Discovery, String> {
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
            custom_groups: CUSTOM_GROUPS.iter().map(|g| g.to_string()).collect(),
            schemas: HashMap::new(),
        };
        for group in without {
            d.remove_group(group);
        }
        for crd in crds {
            d.add_crd(crd);
        }
        d.resources = d.derive_resources();
        Ok(d)
    }

    /// Serves one CRD version (again, if it was served): its resource in
    /// the aggregated document, its group and version in `/apis`, and its
    /// schema for validation. Recorded per-group documents that no longer
    /// say the same are dropped and derived instead.
    pub fn add_crd(&mut self, crd: &Crd) {
        self.custom_groups.insert(crd.group.clone());
        if let Some(schema) = &crd.schema {
            self.schemas.insert(
                (crd.group.clone(), crd.version.clone(), crd.plural.clone()),
                schema.clone(),
            );
        }
        let kind = json!({"group": crd.group, "version": crd.version, "kind": crd.kind});
        let mut resource = json!({
            "resource": crd.plural,
            "responseKind": kind,
            "scope": if crd.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": crd.singular,
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
        });
        if !crd.short_names.is_empty() {
            resource["shortNames"] = json!(crd.short_names);
        }
        if !crd.categories.is_empty() {
            resource["categories"] = json!(crd.categories);
        }
        if crd.status {
            resource["subresources"] = json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]);
        }
        let mut changed = false;
        if let Some(items) = self
            .aggregated
            .get_mut("/apis")
            .and_then(|a| a["items"].as_array_mut())
        {
            let group = match items
                .iter()
                .position(|g| g["metadata"]["name"] == crd.group.as_str())
            {
                Some(i) => &mut items[i],
                None => {
                    items.push(json!({"metadata": {"name": crd.group}, "versions": []}));
                    let last = items.len() - 1;
                    &mut items[last]
                }
            };
            if !group["versions"].is_array() {
                group["versions"] = json!([]);
            }
            if let Some(versions) = group["versions"].as_array_mut() {
                let i = match versions
                    .iter()
                    .position(|v| v["version"] == crd.version.as_str())
                {
                    Some(i) => i,
                    None => {
                        versions.push(json!({"version": crd.version, "resources": [], "freshness": "Current"}));
                        versions.sort_by_key(|v| version_key(v["version"].as_str().unwrap_or("")));
                        versions
                            .iter()
                            .position(|v| v["version"] == crd.version.as_str())
                            .unwrap_or(0)
                    }
                };
                if let Some(list) = versions[i]["resources"].as_array_mut() {
                    match list
                        .iter_mut()
                        .find(|r| r["resource"] == crd.plural.as_str())
                    {
                        Some(r) if *r == resource => {}
                        Some(r) => {
                            *r = resource;
                            changed = true;
                        }
                        None => {
                            list.push(resource);
                            list.sort_by(|a, b| {
                                a["resource"].as_str().cmp(&b["resource"].as_str())
                            });
                            changed = true;
                        }
                    }
                }
            }
        }
        self.sync_group_list(&crd.group);
        if changed {
            self.drop_recorded_group_docs(&crd.group);
        }
        self.resources = self.derive_resources();
    }

    /// Stops serving `plural` in `group` in every version but `keep` (all
    /// of them when its CRD is deleted).
    pub fn remove_crd(&mut self, group: &str, plural: &str, keep: &[String]) {
        let gone = |v: &str| !keep.iter().any(|k| k == v);
        let before = self.resources.len();
        self.schemas
            .retain(|(g, v, p), _| !(g == group && p == plural && gone(v)));
        if let Some(items) = self
            .aggregated
            .get_mut("/apis")
            .and_then(|a| a["items"].as_array_mut())
        {
            for g in items.iter_mut().filter(|g| g["metadata"]["name"] == group) {
                for v in g["versions"].as_array_mut().into_iter().flatten() {
                    if !gone(v["version"].as_str().unwrap_or("")) {
                        continue;
                    }
                    if let Some(list) = v["resources"].as_array_mut() {
                        list.retain(|r| r["resource"] != plural);
                    }
                }
                if let Some(versions) = g["versions"].as_array_mut() {
                    versions.retain(|v| v["resources"].as_array().is_some_and(|r| !r.is_empty()));
                }
            }
            items.retain(|g| g["versions"].as_array().is_some_and(|v| !v.is_empty()));
        }
        self.resources = self.derive_resources();
        if self.resources.len() != before {
            self.sync_group_list(group);
            self.drop_recorded_group_docs(group);
        }
    }

    /// Leaves a CRD group out entirely (a cluster where it is not installed).
    fn remove_group(&mut self, group: &str) {
        if let Some(items) = self
            .aggregated
            .get_mut("/apis")
            .and_then(|a| a["items"].as_array_mut())
        {
            items.retain(|g| g["metadata"]["name"] != group);
        }
        self.sync_group_list(group);
        self.drop_recorded_group_docs(group);
        self.schemas.retain(|(g, _, _), _| g != group);
    }

    /// `/apis`'s entry for `group` follows the aggregated document: its
    /// versions in priority order, the first preferred; gone when none.
    fn sync_group_list(&mut self, group: &str) {
        let versions: Vec<String> = self
            .aggregated
            .get("/apis")
            .and_then(|a| a["items"].as_array())
            .and_then(|items| items.iter().find(|g| g["metadata"]["name"] == group))
            .map(|g| {
                g["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v["version"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let Some((_, apis)) = self.plain.get_mut("/apis") else {
            return;
        };
        let Some(groups) = apis["groups"].as_array_mut() else {
            return;
        };
        if versions.is_empty() {
            groups.retain(|g| g["name"] != group);
            return;
        }
        let refs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let entry = json!({"name": group, "versions": refs, "preferredVersion": refs[0]});
        match groups.iter_mut().find(|g| g["name"] == group) {
            Some(g) => *g = entry,
            None => groups.push(entry),
        }
    }

    fn drop_recorded_group_docs(&mut self, group: &str) {
        let own = format!("/apis/{group}");
        let under = format!("/apis/{group}/");
        self.plain
            .retain(|path, _| path != &own && !path.starts_with(&under));
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
                let custom = self.custom_groups.contains(&gname);
                for v in group["versions"].as_array().into_iter().flatten() {
                    let version = v["version"].as_str().unwrap_or("").to_string();
                    for r in v["resources"].as_array().into_iter().flatten() {
                        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                        let plural = s("resource");
                        let schema = self
                            .schemas
                            .get(&(gname.clone(), version.clone(), plural.clone()))
                            .cloned();
                        out.push(Arc::new(Resource {
                            group: gname.clone(),
                            version: version.clone(),
                            plural,
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
                            schema,
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
            return self.openapi.as_ref().map(|b| {
                let index = super::openapi::index(b, &self.resources);
                ("text/plain; charset=utf-8".into(), index)
            });
        }
        if let Some(gv) = path.strip_prefix("/openapi/v3/") {
            return super::openapi::document(gv, &self.resources)
                .map(|d| ("application/json".into(), d.to_string()));
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

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}
