//! CustomResourceDefinitions: the [`Crd`] versions a test gives the
//! builder, and CRD objects written through the API, as the apiextensions
//! apiserver and its controllers treat them: defaults, the validation that
//! refuses a broken definition, the status the naming and establishing
//! controllers set (`acceptedNames`, NamesAccepted, Established), serving
//! the resource at once (discovery and URL space) and, on delete, removing
//! every custom object and the resource with it.

use super::discovery::strings;
use super::errors::{ApiError, Cause};
use super::router::{Reply, Request, Target};
use super::util::now_rfc3339;
use super::{api, State};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// Where CRD objects are stored.
pub const CRDS: &str = "customresourcedefinitions.apiextensions.k8s.io";

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
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// This version's `openAPIV3Schema`.
    pub schema: Option<Arc<Value>>,
    /// The whole CustomResourceDefinition this version comes from.
    pub definition: Arc<Value>,
}

impl Crd {
    /// A namespaced CRD with a `/status` subresource and a schema that
    /// keeps any field.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Crd {
        let schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        let definition = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": version, "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": schema.clone()},
                              "subresources": {"status": {}}}],
            },
        });
        Crd {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            status: true,
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            categories: Vec::new(),
            schema: Some(Arc::new(schema)),
            definition: Arc::new(definition),
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
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            if d["apiVersion"] != "apiextensions.k8s.io/v1"
                || d["kind"] != "CustomResourceDefinition"
            {
                return Err(format!("not a CustomResourceDefinition: {}", d["kind"]));
            }
            out.extend(Crd::from_object(&d)?);
        }
        Ok(out)
    }

    /// The served versions of one CustomResourceDefinition object.
    pub fn from_object(d: &Value) -> Result<Vec<Crd>, String> {
        let definition = Arc::new(d.clone());
        let spec = &d["spec"];
        let field = |v: &Value, what: &str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: no {what}", d["metadata"]["name"]))
        };
        let kind = field(&spec["names"]["kind"], "spec.names.kind")?;
        let mut out = Vec::new();
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["served"] != true {
                continue;
            }
            let schema = &v["schema"]["openAPIV3Schema"];
            out.push(Crd {
                group: field(&spec["group"], "spec.group")?,
                version: field(&v["name"], "version name")?,
                kind: kind.clone(),
                plural: field(&spec["names"]["plural"], "spec.names.plural")?,
                namespaced: spec["scope"] == "Namespaced",
                status: v["subresources"].get("status").is_some(),
                singular: spec["names"]["singular"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| kind.to_lowercase()),
                short_names: strings(&spec["names"]["shortNames"]),
                categories: strings(&spec["names"]["categories"]),
                schema: schema.is_object().then(|| Arc::new(schema.clone())),
                definition: definition.clone(),
            });
        }
        Ok(out)
    }

    /// The Gateway API CRDs installed on the recording server (HTTPRoute,
    /// GRPCRoute, ReferenceGrant, v1.6.1 standard channel), as the chart
    /// installs them: `charts/weft/files/gateway-api/`.
    pub fn recorded_gateway_api() -> Result<Vec<Crd>, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("../charts/weft/files/gateway-api");
        let mut out = Vec::new();
        for plural in ["httproutes", "grpcroutes", "referencegrants"] {
            let name = format!("{plural}.gateway.networking.k8s.io");
            let file = dir.join(format!("gateway.networking.k8s.io_{plural}.yaml"));
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let crds = Crd::from_definitions(&text).map_err(|e| format!("{name}: {e}"))?;
            out.extend(
                crds.into_iter()
                    .filter(|c| c.definition["metadata"]["name"] == name.as_str()),
            );
        }
        Ok(out)
    }
}

/// The defaults the apiserver gives a CustomResourceDefinition, and the
/// status a new one starts with.
pub fn default(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec["conversion"].is_null() {
        spec["conversion"] = json!({"strategy": "None"});
    }
    let kind = spec["names"]["kind"].as_str().unwrap_or("").to_string();
    if spec["names"].is_object() {
        if spec["names"]["singular"].is_null() {
            spec["names"]["singular"] = kind.to_lowercase().into();
        }
        if spec["names"]["listKind"].is_null() && !kind.is_empty() {
            spec["names"]["listKind"] = format!("{kind}List").into();
        }
    }
    let storage: Vec<Value> = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    if obj["status"].is_null() {
        obj["status"] = json!({
            "acceptedNames": {"kind": "", "plural": ""},
            "storedVersions": storage,
        });
    }
}

const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1035(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What the apiserver refuses in a CustomResourceDefinition.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let group = spec["group"].as_str().unwrap_or("");
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &format!("{group:?}"),
            "should be a domain with at least one dot",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &format!("{name:?}"),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    for (field, value) in [
        ("plural", plural),
        ("kind", spec["names"]["kind"].as_str().unwrap_or("")),
        (
            "listKind",
            spec["names"]["listKind"].as_str().unwrap_or("x"),
        ),
    ] {
        if value.is_empty() {
            causes.push(Cause::required(format!("spec.names.{field}")));
        }
    }
    if !plural.is_empty() && !is_dns1035(plural) {
        causes.push(Cause::invalid(
            "spec.names.plural",
            &format!("{plural:?}"),
            DNS1035,
        ));
    }
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        None => causes.push(Cause::required("spec.scope")),
        Some(s) => causes.push(Cause::not_supported(
            "spec.scope",
            s,
            &["Cluster", "Namespaced"],
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    }
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 && !versions.is_empty() {
        causes.push(Cause::invalid(
            "spec.versions",
            &format!("{}", Value::Array(versions.clone()))
                .chars()
                .take(60)
                .collect::<String>(),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = v["name"].as_str().unwrap_or("");
        if !is_dns1035(vname) {
            causes.push(Cause::invalid(
                format!("spec.versions[{i}].name"),
                &format!("{vname:?}"),
                DNS1035,
            ));
        } else if seen.contains(&vname) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {vname:?}"),
                field: format!("spec.versions[{i}].name"),
            });
        }
        seen.push(vname);
        let base = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let schema = &v["schema"]["openAPIV3Schema"];
        if !schema.is_object() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: schemas are required".into(),
                field: base,
            });
            continue;
        }
        if schema["type"] != "object" {
            causes.push(Cause::invalid(
                format!("{base}.type"),
                &format!("{}", schema["type"]),
                "must be object",
            ));
        }
        structural(schema, &base, causes);
    }
}

/// A structural schema gives every node a type, unless it keeps unknown
/// fields or is `x-kubernetes-int-or-string`.
fn structural(s: &Value, path: &str, causes: &mut Vec<Cause>) {
    let free = s["x-kubernetes-preserve-unknown-fields"] == true
        || s["x-kubernetes-int-or-string"] == true;
    if s["type"].as_str().is_none_or(str::is_empty) && !free {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: must not be empty for specified object fields".into(),
            field: format!("{path}.type"),
        });
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, sub) in props {
            structural(sub, &format!("{path}.properties[{k}]"), causes);
        }
    }
    if s["items"].is_object() {
        structural(&s["items"], &format!("{path}.items"), causes);
    }
    if s["additionalProperties"].is_object() {
        structural(
            &s["additionalProperties"],
            &format!("{path}.additionalProperties"),
            causes,
        );
    }
}

/// A write to `customresourcedefinitions`: the usual handler, then what
/// the apiextensions controllers do at once.
pub async fn write(
    state: &Arc<State>,
    req: &Request,
    t: &Target,
    verb: &str,
) -> Result<Reply, ApiError> {
    let reply = match verb {
        "create" => api::create(state, req, t).await?,
        "update" => api::update(state, req, t).await?,
        "patch" => api::patch(state, req, t).await?,
        "delete" => return delete(state, req, t),
        _ => return Err(ApiError::method_not_allowed()),
    };
    if !req.dry_run() {
        if let super::router::Body::Json(obj) = &reply.body {
            if let Some(name) = obj["metadata"]["name"].as_str() {
                establish(state, name);
            }
        }
    }
    Ok(reply)
}

/// Serves the stored CRD `name` as its spec says and writes the status
/// the naming and establishing controllers would.
pub fn establish(state: &State, name: &str) {
    let mut store = state.store();
    let Some(obj) = store.get(CRDS, "", name).cloned() else {
        return;
    };
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or("").to_string();
    let plural = spec["names"]["plural"].as_str().unwrap_or("").to_string();
    let kind = spec["names"]["kind"].as_str().unwrap_or("");
    // Another CRD of the group that already holds the plural or kind.
    let conflict = store.list(CRDS, None).into_iter().find_map(|other| {
        let os = &other["status"]["acceptedNames"];
        if other["metadata"]["name"] == name || other["spec"]["group"] != group.as_str() {
            return None;
        }
        if os["plural"] == plural.as_str() {
            Some(("PluralConflict", format!("{plural:?} is already in use")))
        } else if os["kind"] == kind {
            Some(("KindConflict", format!("{kind:?} is already in use")))
        } else {
            None
        }
    });
    let now = now_rfc3339();
    let condition = |t: &str, ok: bool, reason: &str, message: &str| {
        json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now,
               "reason": reason, "message": message})
    };
    let mut status = obj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    if !status["storedVersions"].is_array() {
        status["storedVersions"] = json!([]);
    }
    match &conflict {
        None => {
            let mut accepted = spec["names"].clone();
            if let Some(m) = accepted.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            status["acceptedNames"] = accepted;
            status["conditions"] = json!([
                condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
                condition(
                    "Established",
                    true,
                    "InitialNamesAccepted",
                    "the initial names have been accepted"
                ),
            ]);
        }
        Some((reason, message)) => {
            status["conditions"] = json!([
                condition("NamesAccepted", false, reason, message),
                condition(
                    "Established",
                    false,
                    "NotAccepted",
                    "not all names are accepted"
                ),
            ]);
        }
    }
    // Keep earlier transition times when nothing changed.
    let old = obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(o) = old
            .iter()
            .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
        {
            c["lastTransitionTime"] = o["lastTransitionTime"].clone();
        }
    }
    let storage = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .map(|v| v["name"].clone());
    if let (Some(s), Some(list)) = (storage, status["storedVersions"].as_array_mut()) {
        if !list.contains(&s) {
            list.push(s);
        }
    }
    let served = match conflict {
        None => Crd::from_object(&obj).unwrap_or_default(),
        Some(_) => Vec::new(),
    };
    let keep: Vec<String> = served.iter().map(|c| c.version.clone()).collect();
    {
        let mut d = state.discovery_mut();
        d.remove_crd(&group, &plural, &keep);
        for crd in &served {
            d.add_crd(crd);
        }
    }
    if status != obj["status"] {
        let mut new = obj;
        new["status"] = status;
        store.write(CRDS, "", name, new);
    }
}

/// DELETE of a CRD: the object (with its deletion time, as the cleanup
/// finalizer would show it), after every custom object of it is deleted
/// and the resource is no longer served.
fn delete(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let name = t.name.clone().unwrap_or_default();
    let mut store = state.store();
    let mut last = store
        .get(CRDS, "", &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(r, &name))?;
    last["metadata"]["deletionTimestamp"] = now_rfc3339().into();
    last["metadata"]["finalizers"] = json!(["customresourcecleanup.apiextensions.k8s.io"]);
    if req.dry_run() {
        return Ok(Reply::json(200, last));
    }
    let group = last["spec"]["group"].as_str().unwrap_or("").to_string();
    let plural = last["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let gr = format!("{plural}.{group}");
    for o in store.list(&gr, None) {
        let (ns, n) = (super::store::ns_of(&o), super::store::name_of(&o));
        store.remove(&gr, &ns, &n, o);
    }
    state.discovery_mut().remove_crd(&group, &plural, &[]);
    let last = store.remove(CRDS, "", &name, last);
    let mut reply = last;
    reply["apiVersion"] = r.api_version().into();
    Ok(Reply::json(200, reply))
}
