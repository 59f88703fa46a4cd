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
    let mut kinds = std::collections::BTreeSet::new();
    for file in [
        "config-examples/dns/external.yaml",
        "config-examples/policies/policies.yaml",
        "config-examples/mesh/mesh.yaml",
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
