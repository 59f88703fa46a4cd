//! Weft's CRDs as one definition: the fake API server serves the kinds of
//! the generated `charts/weft/crds/weft.dev.yaml` (not a list of its own),
//! and the example resources are accepted and read back.

use bytes::Bytes;
use serde_json::{json, Value};
use std::path::Path;
use weft_tests::kube_fake::{Crd, Credentials, KubeFake};

fn repo_file(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_fake_reads_its_weft_kinds_from_the_generated_file() {
    let crds = Crd::from_definitions(&repo_file("charts/weft/crds/weft.dev.yaml")).unwrap();
    let kinds: Vec<(&str, &str, &str, bool, bool)> = crds
        .iter()
        .map(|c| {
            (
                c.group.as_str(),
                c.version.as_str(),
                c.plural.as_str(),
                c.namespaced,
                c.status,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("weft.dev", "v1alpha1", "backends", true, true),
            ("weft.dev", "v1alpha1", "trafficpolicies", true, true),
            ("weft.dev", "v1alpha1", "authorizationpolicies", true, true),
            ("weft.dev", "v1alpha1", "meshconfigs", true, true),
        ]
    );
    assert_eq!(Crd::weft().len(), 4);
    assert!(Crd::from_definitions("apiVersion: v1\nkind: ConfigMap\n").is_err());
}

#[tokio::test]
async fn the_fake_stores_the_generated_definitions() {
    let fake = KubeFake::start().await;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&repo_file("charts/weft/crds/weft.dev.yaml")).unwrap();
    assert_eq!(docs.len(), 4);
    for d in docs {
        let name = d["metadata"]["name"].as_str().unwrap().to_owned();
        fake.create(d.clone()).await;
        let back = fake
            .get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                &name,
            )
            .await
            .expect("created");
        // As the apiserver: the conversion strategy defaulted, then
        // established by its controllers.
        let mut want = d["spec"].clone();
        want["conversion"] = json!({"strategy": "None"});
        assert_eq!(back["spec"], want, "{name}");
        let established = fake
            .get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                &name,
            )
            .await
            .unwrap();
        let conditions = established["status"]["conditions"].as_array().unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True"),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_example_resources_are_created_and_read_back() {
    let fake = KubeFake::builder().weft_crds().start().await;
    let c = fake.client(Credentials::Admin);
    let doc = c
        .send("GET", "/apis/weft.dev/v1alpha1", &[], Bytes::new())
        .await
        .unwrap()
        .json();
    let mut names: Vec<&str> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "authorizationpolicies",
            "authorizationpolicies/status",
            "backends",
            "backends/status",
            "meshconfigs",
            "meshconfigs/status",
            "trafficpolicies",
            "trafficpolicies/status"
        ]
    );
    fake.create_namespace("weft-system", json!({})).await;
    fake.create_namespace("shop", json!({})).await;
    let mut kinds = std::collections::BTreeSet::new();
    for file in [
        "config-examples/dns/external.yaml",
        "config-examples/policies/policies.yaml",
        "config-examples/mesh/mesh.yaml",
        "config-examples/rate-limit/rate-limit.yaml",
        "config-examples/fault-injection/fault.yaml",
    ] {
        let docs: Vec<Value> = serde_saphyr::from_multiple(&repo_file(file)).unwrap();
        for mut d in docs
            .into_iter()
            .filter(|d| d["apiVersion"] == "weft.dev/v1alpha1")
        {
            let ns = d["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            d["metadata"]["namespace"] = json!(ns);
            let kind = d["kind"].as_str().unwrap().to_owned();
            let name = d["metadata"]["name"].as_str().unwrap().to_owned();
            fake.create(d.clone()).await;
            let back = fake
                .get("weft.dev/v1alpha1", &kind, Some(&ns), &name)
                .await
                .expect("created");
            assert_eq!(back["spec"], d["spec"], "{file}: {kind} {name}");
            kinds.insert(kind);
        }
    }
    assert!(kinds.contains("Backend"), "{kinds:?}");
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

/// Every field path a schema declares (`spec.rules[].retry`), objects and
/// leaves alike.
fn field_paths(schema: &Value, at: &str, out: &mut std::collections::BTreeSet<String>) {
    // A recursive type is a `$ref` back up the tree (a mirror's
    // `backendRef`): its fields are not listed, so it must be somewhere
    // the loader refuses anyway.
    if schema.get("$ref").is_some() {
        assert!(
            rejected(&format!("{at}.x")),
            "{at}: a recursive schema outside what the loader rejects"
        );
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            out.insert(path.clone());
            field_paths(p, &path, out);
        }
    }
    if let Some(items) = schema.get("items") {
        field_paths(items, &format!("{at}[]"), out);
    }
}

/// The field paths of the served `v1` schema of an upstream CRD file
/// (a path from the repository root).
fn upstream_paths(file: &str) -> std::collections::BTreeSet<String> {
    let crd: Value = serde_saphyr::from_str(&repo_file(file)).unwrap();
    let v1 = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .expect("a v1 version");
    let mut out = Default::default();
    field_paths(&v1["schema"]["openAPIV3Schema"], "", &mut out);
    out
}

/// Weft's route kinds: their schema from the types the loader reads, and
/// the upstream CRD files of both channels (the standard channel's are the
/// ones the chart installs).
fn route_kinds() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    vec![
        (
            "HTTPRoute",
            weft_mesh::config::schema::structural::<weft_mesh::config::HttpRouteSpec>(),
            "charts/weft/files/gateway-api/gateway.networking.k8s.io_httproutes.yaml",
            "tests/fixtures/gateway-api/experimental-httproutes.yaml",
        ),
        (
            "GRPCRoute",
            weft_mesh::config::schema::structural::<weft_mesh::config::GrpcRouteSpec>(),
            "charts/weft/files/gateway-api/gateway.networking.k8s.io_grpcroutes.yaml",
            "tests/fixtures/gateway-api/experimental-grpcroutes.yaml",
        ),
    ]
}

/// Fields of Weft's types that no file can use because validation refuses
/// them: a mirror's `backendRef` shares the route's `BackendRef` type, so
/// its schema admits `weight` and `filters` (and recurses through them),
/// which upstream's does not and the loader refuses; and a backendRef's
/// filters share the rule's `Filter` type, whose RequestMirror the loader
/// takes on a rule only.
const REJECTED_BY_THE_LOADER: &[&str] = &[
    "requestMirror.backendRef.weight",
    "requestMirror.backendRef.filters",
    "backendRefs.filters.requestMirror",
];

/// What the loader refuses in a GRPCRoute's filters, which share the
/// HTTPRoute's `Filter` type (the GRPCRoute CRD has only the header
/// modifiers and RequestMirror).
const REJECTED_IN_GRPC_ROUTES: &[&str] = &["filters.requestRedirect", "filters.urlRewrite"];

/// Whether `path` is at or inside a field the loader rejects (in a route
/// of `kind`, when given).
fn rejected_in(kind: Option<&str>, path: &str) -> bool {
    let path = path.replace("[]", "");
    let grpc = if kind == Some("GRPCRoute") {
        REJECTED_IN_GRPC_ROUTES
    } else {
        &[]
    };
    REJECTED_BY_THE_LOADER
        .iter()
        .chain(grpc)
        .any(|r| path.contains(&format!("{r}.")) || path.ends_with(r))
}

/// Whether `path` is inside a field the loader rejects in any route.
fn rejected(path: &str) -> bool {
    rejected_in(None, path)
}

#[test]
fn the_loader_rejects_what_the_drop_list_leaves_out() {
    let route = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\nspec: {endpoints: [{address: 127.0.0.1:1}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Backend, name: a}]\n  rules:\n    - backendRefs: [{kind: Backend, name: a}]\n      filters:\n        - type: RequestMirror\n          requestMirror: {backendRef: {kind: Backend, name: a, weight: 1}}\n";
    let e = weft_mesh::config::load_sources(vec![("r.yaml".into(), route.into())]).unwrap_err();
    assert!(
        e.to_string()
            .contains("a mirror's backendRef takes no weight or filters"),
        "{e}"
    );
    let on_backend = "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\nspec: {endpoints: [{address: 127.0.0.1:1}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Backend, name: a}]\n  rules:\n    - backendRefs:\n        - kind: Backend\n          name: a\n          filters:\n            - type: RequestMirror\n              requestMirror: {backendRef: {kind: Backend, name: a}}\n";
    let e = weft_mesh::config::load_sources(vec![("r.yaml".into(), on_backend.into())])
        .expect_err("a mirror on a backendRef is refused");
    assert!(e.to_string().contains("filters[0]"), "{e}");
}

#[test]
fn the_check_warns_of_exactly_the_fields_the_standard_crds_drop() {
    use weft_proxy::check::DROPPED_BY_STANDARD_CRDS;
    let mut derived = Vec::new();
    for (kind, schema, standard, experimental) in route_kinds() {
        let mut ours = std::collections::BTreeSet::new();
        field_paths(&schema, "spec", &mut ours);
        let standard = upstream_paths(standard);
        let experimental = upstream_paths(experimental);
        for path in &ours {
            // Only the outermost missing field: what is under it goes with it.
            let parent_missing = ours
                .iter()
                .any(|p| path.starts_with(&format!("{p}.")) && !standard.contains(p));
            if !standard.contains(path) && !parent_missing {
                if rejected_in(Some(kind), path) {
                    continue;
                }
                assert!(
                    experimental.contains(path),
                    "{kind} {path}: Weft reads it but neither channel has it; the warning's advice would be wrong"
                );
                derived.push((kind, path.clone()));
            }
        }
    }
    let listed: Vec<(&str, String)> = DROPPED_BY_STANDARD_CRDS
        .iter()
        .map(|d| (d.kind, d.path.to_owned()))
        .collect();
    assert_eq!(
        listed, derived,
        "weft_proxy::check::DROPPED_BY_STANDARD_CRDS differs from what the CRDs in charts/weft/files/gateway-api/, tests/fixtures/gateway-api/ and Weft's types say"
    );
    assert!(
        !derived.is_empty(),
        "HTTPRoute retry is experimental-channel in v1.6.1"
    );
}

#[test]
fn weft_proxy_check_warns_of_a_route_retry_and_still_passes() {
    let dir = weft_tests::TempDir::new("check-warn");
    let file = dir.path().join("route.yaml");
    std::fs::write(
        &file,
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: a}\nspec: {endpoints: [{address: \"127.0.0.1:1\"}]}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{kind: Backend, name: a}]\n  rules:\n    - backendRefs: [{kind: Backend, name: a}]\n      retry: {attempts: 2, codes: [503]}\n",
    )
    .unwrap();
    let out = std::process::Command::new(weft_tests::proxy_bin())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:13:7: warning: spec.rules[0].retry: the standard-channel HTTPRoute CRD drops this field",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("TrafficPolicy"), "{stderr}");
    assert!(
        stdout.contains("ok: 2 resources in 1 files, 1 warning"),
        "{stdout}"
    );
}
