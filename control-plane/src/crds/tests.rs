//! The CRDs: the committed file is what the generator prints, the schemas
//! are structural, and every example resource validates against its kind.
//!
//! The validator here covers exactly the subset of OpenAPI v3 the
//! generator emits (type, properties, required, items, enum, minimum,
//! maximum, pattern, format double, and the two `x-kubernetes-` markers),
//! checked the way the API server does with strict field validation
//! (`kubectl apply`'s default): unknown fields are errors. A general
//! JSON-Schema crate would check more keywords than the generator can
//! emit and fewer of Kubernetes' own markers; this one is short and the
//! tests below show it rejects what it must.

use super::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn the_committed_crds_are_what_the_generator_prints() {
    let path = repo().join("charts/weft/crds/weft.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let printed = render().expect("render");
    assert!(
        committed == printed,
        "{} differs from what `weft-control-plane crds` prints (a resource type changed?); regenerate it with\n  {REGENERATE}",
        path.display()
    );
}

#[test]
fn the_yaml_reads_back_as_the_definitions() {
    let text = render().expect("render");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("parse");
    let want: Vec<Value> = KINDS.iter().map(definition).collect();
    assert_eq!(docs, want);
}

#[test]
fn names_and_status_subresources_are_the_contract() {
    let names: Vec<String> = KINDS
        .iter()
        .map(|k| {
            definition(k)["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        names,
        [
            "backends.weft.dev",
            "trafficpolicies.weft.dev",
            "authorizationpolicies.weft.dev",
            "meshconfigs.weft.dev"
        ]
    );
    for k in &KINDS {
        let d = definition(k);
        let v = &d["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert_eq!(v["subresources"]["status"], json!({}));
    }
}

/// Every node typed (or int-or-string / preserve-unknown-fields), nothing
/// a structural schema forbids, an enum for every enum.
fn assert_structural(s: &Value, path: &str) {
    let obj = s
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not a schema"));
    for bad in [
        "$ref", "anyOf", "oneOf", "allOf", "not", "const", "default", "$defs",
    ] {
        assert!(!obj.contains_key(bad), "{path}: has {bad}: {s}");
    }
    assert!(
        !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
        "{path}: properties and additionalProperties"
    );
    let typed = obj.get("type").is_some_and(Value::is_string)
        || obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    assert!(typed, "{path}: no type: {s}");
    if let Some(e) = obj.get("enum") {
        assert!(e.as_array().unwrap().iter().all(Value::is_string), "{path}");
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            assert_structural(p, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = obj.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
}

#[test]
fn schemas_are_structural() {
    for k in &KINDS {
        let d = definition(k);
        assert_structural(
            &d["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
            k.kind,
        );
    }
}

#[test]
fn schemas_carry_enums_required_fields_and_doc_comments() {
    let backend = structural::<BackendSpec>();
    assert_eq!(
        backend["properties"]["protocol"]["enum"],
        json!(["http", "http2", "grpc", "tcp"])
    );
    assert_eq!(
        backend["properties"]["dns"]["required"],
        json!(["name", "port"])
    );
    assert!(
        backend.get("required").is_none(),
        "every Backend field has a default"
    );
    assert!(backend["properties"]["port"]["description"]
        .as_str()
        .unwrap()
        .contains("The port clients address"));
    let tp = structural::<TrafficPolicySpec>();
    assert_eq!(tp["required"], json!(["targetRef"]));
    let retry = &tp["properties"]["retry"]["properties"];
    assert_eq!(
        retry["retryOn"]["items"]["enum"].as_array().unwrap().len(),
        10
    );
    assert_eq!(retry["maxBufferedBody"]["x-kubernetes-int-or-string"], true);
    assert_eq!(retry["perTryTimeout"]["type"], "string");
    let lb = &tp["properties"]["loadBalancer"]["properties"]["policy"];
    assert_eq!(
        lb["enum"],
        json!([
            "RoundRobin",
            "LeastRequest",
            "PeakEWMA",
            "Random",
            "RingHash"
        ])
    );
    let ap = structural::<AuthorizationPolicySpec>();
    assert_eq!(ap["required"], json!(["targetRef", "action"]));
    let mc = structural::<MeshConfigSpec>();
    assert_eq!(
        mc["properties"]["defaultInboundMode"]["enum"],
        json!(["Strict", "Permissive"])
    );
}

/// Validates `v` against `s`; errors name the field path.
fn validate(s: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errors.push(format!("{path}: want an integer or a string"));
        }
        return;
    }
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        other => panic!("{path}: the generator emitted type {other:?}"),
    };
    if !ok {
        errors.push(format!("{path}: want {ty}, got {v}"));
        return;
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        if !values.contains(v) {
            errors.push(format!("{path}: {v} is not one of {values:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: {n} is below the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: {n} is above the maximum"));
        }
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        if !regex::Regex::new(p).expect("pattern").is_match(text) {
            errors.push(format!("{path}: {text:?} does not match {p}"));
        }
    }
    if let Some(items) = s.get("items") {
        for (i, item) in v.as_array().into_iter().flatten().enumerate() {
            validate(items, item, &format!("{path}[{i}]"), errors);
        }
    }
    if ty == "object" && s.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true)) {
        let props = s.get("properties").and_then(Value::as_object);
        let map = v.as_object().expect("object");
        for (k, child) in map {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(ps, child, &format!("{path}.{k}"), errors),
                None if props.is_none() => {} // `metadata`: the server's own
                None => errors.push(format!("{path}: unknown field {k:?}")),
            }
        }
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().expect("required names");
            if !map.contains_key(r) {
                errors.push(format!("{path}: missing required field {r:?}"));
            }
        }
    }
}

/// The errors of `doc` against the CRD of its kind; `None` when the kind
/// is not a Weft one.
fn check(doc: &Value) -> Option<Vec<String>> {
    let kind = doc["kind"].as_str()?;
    let k = KINDS.iter().find(|k| k.kind == kind)?;
    let d = definition(k);
    let mut errors = Vec::new();
    validate(
        &d["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        doc,
        "",
        &mut errors,
    );
    Some(errors)
}

#[test]
fn every_weft_resource_in_the_examples_validates() {
    let mut files = Vec::new();
    let root = repo().join("config-examples");
    for dir in std::fs::read_dir(&root).expect("config-examples") {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // The loader accepts the file...
        weft_mesh::config::load_sources(vec![(f.display().to_string(), text.clone())])
            .unwrap_or_else(|e| panic!("{e}"));
        // ... and so does each CRD.
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs.iter().filter(|d| !d.is_null()) {
            if let Some(errors) = check(doc) {
                assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
                *checked
                    .entry(doc["kind"].as_str().unwrap().into())
                    .or_default() += 1;
            }
        }
    }
    // All four kinds are among the examples, so none is left unchecked.
    assert_eq!(checked.len(), 4, "{checked:?}");
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let base = json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "p"},
        "spec": {"targetRef": {"kind": "Service", "name": "a"},
                 "connectTimeout": "250ms",
                 "retry": {"attempts": 2, "retryOn": ["5xx"], "maxBufferedBody": 65536},
                 "loadBalancer": {"policy": "RingHash", "hashOn": {"sourceIP": true}}},
    });
    assert_eq!(check(&base), Some(vec![]));
    let bad = |patch: fn(&mut Value), want: &str| {
        let mut v = base.clone();
        patch(&mut v);
        let errors = check(&v).unwrap();
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want}: {errors:?}"
        );
    };
    bad(|v| v["spec"]["bogus"] = json!(1), "unknown field \"bogus\"");
    bad(
        |v| v["spec"]["connectTimeout"] = json!("5"),
        "does not match",
    );
    bad(|v| v["spec"]["connectTimeout"] = json!(5), "want string");
    bad(
        |v| v["spec"]["retry"]["retryOn"] = json!(["teapot"]),
        "not one of",
    );
    bad(
        |v| v["spec"]["loadBalancer"]["policy"] = json!("Fastest"),
        "not one of",
    );
    bad(
        |v| v["spec"]["retry"]["attempts"] = json!(-1),
        "below the minimum",
    );
    bad(
        |v| v["spec"]["retry"]["maxBufferedBody"] = json!(true),
        "integer or a string",
    );
    bad(
        |v| {
            v["spec"].as_object_mut().unwrap().remove("targetRef");
        },
        "missing required field \"targetRef\"",
    );
    bad(
        |v| {
            v.as_object_mut().unwrap().remove("spec");
        },
        "missing required field \"spec\"",
    );
}

#[test]
fn int_or_string_is_what_the_loader_reads_too() {
    for size in ["65536", "\"64KiB\""] {
        let text = format!("apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec: {{endpoints: [{{address: \"127.0.0.1:1\"}}]}}\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: a}}\nspec:\n  targetRef: {{kind: Backend, name: a}}\n  retry: {{maxBufferedBody: {size}}}\n");
        weft_mesh::config::load_sources(vec![("p.yaml".into(), text.clone())])
            .unwrap_or_else(|e| panic!("{size}: {e}"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(check(&docs[1]), Some(vec![]), "{size}");
    }
}

#[test]
fn the_duration_pattern_agrees_with_the_parser() {
    let re = regex::Regex::new(weft_mesh::config::duration::DURATION_PATTERN).unwrap();
    for s in [
        "0", "250ms", "1s", "1m30s", "1.5s", "2h", "10us", "5ns", ".5s",
    ] {
        assert!(re.is_match(s), "{s}");
        assert!(
            weft_mesh::config::duration::parse_duration(s).is_ok(),
            "{s}"
        );
    }
    for s in ["", "5", "ms", "1x", "1s2", "-1s", "1 s"] {
        assert!(!re.is_match(s), "{s}");
        assert!(
            weft_mesh::config::duration::parse_duration(s).is_err(),
            "{s}"
        );
    }
}
