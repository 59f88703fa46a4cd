//! CustomResourceDefinitions through the fake API server's wire: a CRD
//! created over HTTPS is established and served at once (discovery, the
//! aggregated document, its URL space and `/status`), one deleted takes
//! its objects and URLs with it, and the CRDs the fake starts with are
//! objects a client can read.

use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use weft_tests::kube_fake::{Credentials, FakeClient, KubeFake};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

async fn send(c: &FakeClient, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    c.send_json(method, path, body).await
}

fn widget_crd(versions: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"], "categories": ["all"]},
            "versions": versions,
        },
    })
}

fn widget_version(name: &str, storage: bool) -> Value {
    json!({"name": name, "served": true, "storage": storage,
           "subresources": {"status": {}},
           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
               "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
               "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}}})
}

fn condition<'a>(crd: &'a Value, t: &str) -> &'a Value {
    crd["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_created_crd_is_established_and_served_at_once() {
    let fake = KubeFake::start().await;
    fake.create_namespace("shop", json!({})).await;
    let c = fake.client(Credentials::Admin);
    // Not served before its CRD exists: the plain-text 404.
    let (code, body) = send(
        &c,
        "GET",
        "/apis/example.com/v1/namespaces/shop/widgets",
        None,
    )
    .await;
    assert_eq!((code, body), (404, json!("404 page not found\n")));
    let mut watch = c
        .stream(
            "GET",
            &format!("{CRDS}?watch=true&fieldSelector=metadata.name%3Dwidgets.example.com"),
            &[],
        )
        .await
        .unwrap();

    let crd = widget_crd(json!([
        widget_version("v1", true),
        widget_version("v1beta1", false)
    ]));
    let (code, created) = send(&c, "POST", CRDS, Some(&crd)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(created["spec"]["names"]["singular"], "widget");
    assert_eq!(created["spec"]["names"]["listKind"], "WidgetList");
    assert_eq!(created["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(
        created["status"]["acceptedNames"],
        json!({"kind": "", "plural": ""})
    );

    // The controllers' status: names accepted, established.
    let (code, got) = send(&c, "GET", &format!("{CRDS}/widgets.example.com"), None).await;
    assert_eq!(code, 200);
    assert_eq!(condition(&got, "NamesAccepted")["status"], "True");
    assert_eq!(condition(&got, "Established")["status"], "True");
    assert_eq!(
        condition(&got, "Established")["reason"],
        "InitialNamesAccepted"
    );
    assert_eq!(got["status"]["acceptedNames"]["plural"], "widgets");
    assert_eq!(got["status"]["acceptedNames"]["shortNames"], json!(["wd"]));
    // A watcher sees it added, then established.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = watch
            .next_line(Duration::from_secs(5))
            .await
            .expect("watch event");
        seen.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    assert_eq!(seen[0]["type"], "ADDED");
    assert_eq!(seen[1]["type"], "MODIFIED");
    assert_eq!(
        condition(&seen[1]["object"], "Established")["status"],
        "True"
    );

    // Discovery, every way a client reads it.
    let (code, apis) = send(&c, "GET", "/apis", None).await;
    assert_eq!(code, 200);
    let group = apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "example.com")
        .expect("group in /apis")
        .clone();
    assert_eq!(group["preferredVersion"]["version"], "v1");
    assert_eq!(group["versions"].as_array().unwrap().len(), 2);
    let (code, g) = send(&c, "GET", "/apis/example.com", None).await;
    assert_eq!((code, g["kind"].as_str()), (200, Some("APIGroup")));
    let (code, gv) = send(&c, "GET", "/apis/example.com/v1beta1", None).await;
    assert_eq!(code, 200);
    let names: Vec<&str> = gv["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status"]);
    let agg = c
        .send("GET", "/apis", &[("accept", AGGREGATED)], Bytes::new())
        .await
        .unwrap();
    let agg = agg.json();
    let item = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "example.com")
        .expect("aggregated group");
    let versions: Vec<&str> = item["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v1beta1"]);
    assert_eq!(
        item["versions"][0]["resources"][0]["shortNames"],
        json!(["wd"])
    );
    assert_eq!(
        item["versions"][0]["resources"][0]["subresources"][0]["subresource"],
        "status"
    );

    // Its URL space: create, read in the other version, /status.
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}});
    let (code, body) = send(
        &c,
        "POST",
        "/apis/example.com/v1/namespaces/shop/widgets",
        Some(&w),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(
        &c,
        "GET",
        "/apis/example.com/v1beta1/namespaces/shop/widgets/w1",
        None,
    )
    .await;
    assert_eq!(
        (code, &body["apiVersion"], &body["spec"]),
        (200, &json!("example.com/v1beta1"), &json!({"size": 3}))
    );
    let status = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "resourceVersion": body["metadata"]["resourceVersion"]}, "status": {"ready": true}});
    let (code, body) = send(
        &c,
        "PUT",
        "/apis/example.com/v1/namespaces/shop/widgets/w1/status",
        Some(&status),
    )
    .await;
    assert_eq!(
        (code, &body["status"]),
        (200, &json!({"ready": true})),
        "{body}"
    );
    let (code, list) = send(&c, "GET", "/apis/example.com/v1/widgets", None).await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    // OpenAPI v3 as kubectl reads it: the index names the group-version,
    // whose document's PATCH takes fieldValidation.
    let (code, index) = send(&c, "GET", "/openapi/v3", None).await;
    assert_eq!(code, 200);
    // (text/plain, as recorded, holding JSON)
    let url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .expect("in the index")
        .to_string();
    let (code, doc) = send(&c, "GET", &url, None).await;
    assert_eq!(code, 200);
    let patch =
        &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "example.com", "version": "v1", "kind": "Widget"})
    );
    assert!(patch["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "fieldValidation"));
}

#[tokio::test]
async fn a_deleted_crd_takes_its_objects_and_urls() {
    let fake = KubeFake::start().await;
    fake.create_namespace("shop", json!({})).await;
    let c = fake.client(Credentials::Admin);
    let (code, _) = send(
        &c,
        "POST",
        CRDS,
        Some(&widget_crd(json!([widget_version("v1", true)]))),
    )
    .await;
    assert_eq!(code, 201);
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "shop"}});
    fake.create(w).await;
    let (code, deleted) = send(&c, "DELETE", &format!("{CRDS}/widgets.example.com"), None).await;
    assert_eq!(code, 200, "{deleted}");
    assert_eq!(deleted["kind"], "CustomResourceDefinition");
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    let (code, _) = send(&c, "GET", &format!("{CRDS}/widgets.example.com"), None).await;
    assert_eq!(code, 404);
    let (code, body) = send(
        &c,
        "GET",
        "/apis/example.com/v1/namespaces/shop/widgets/w1",
        None,
    )
    .await;
    assert_eq!((code, body), (404, json!("404 page not found\n")));
    let (_, apis) = send(&c, "GET", "/apis", None).await;
    assert!(!apis["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "example.com"));
    let (code, _) = send(&c, "GET", "/apis/example.com/v1", None).await;
    assert_eq!(code, 404);
    // Created again, it starts empty.
    let (code, _) = send(
        &c,
        "POST",
        CRDS,
        Some(&widget_crd(json!([widget_version("v1", true)]))),
    )
    .await;
    assert_eq!(code, 201);
    let (code, list) = send(
        &c,
        "GET",
        "/apis/example.com/v1/namespaces/shop/widgets",
        None,
    )
    .await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

#[tokio::test]
async fn a_broken_crd_is_refused_with_field_paths() {
    let fake = KubeFake::start().await;
    let c = fake.client(Credentials::Admin);
    let mut crd = widget_crd(json!([widget_version("v1", false)]));
    crd["metadata"]["name"] = json!("gadgets.example.com");
    crd["spec"]["scope"] = json!("Global");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["size"] = json!({"minimum": 1});
    let (code, body) = send(&c, "POST", CRDS, Some(&crd)).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.scope",
            "spec.versions",
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type",
        ],
        "{body}"
    );
    let (code, body) = send(&c, "GET", "/apis/example.com/v1", None).await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test]
async fn the_crds_the_fake_starts_with_are_objects() {
    let fake = KubeFake::builder().weft_crds().start().await;
    let c = fake.client(Credentials::Admin);
    for name in [
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
        "referencegrants.gateway.networking.k8s.io",
        "backends.weft.dev",
        "meshconfigs.weft.dev",
    ] {
        let (code, crd) = send(&c, "GET", &format!("{CRDS}/{name}"), None).await;
        assert_eq!(code, 200, "{name}: {crd}");
        assert_eq!(condition(&crd, "Established")["status"], "True", "{name}");
        assert!(
            crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].is_object(),
            "{name}"
        );
    }
    let (_, list) = send(&c, "GET", CRDS, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 7);
    // Without the recorded Gateway API, the group is not there at all.
    let bare = KubeFake::builder().without_gateway_api().start().await;
    let c = bare.client(Credentials::Admin);
    let (code, _) = send(&c, "GET", "/apis/gateway.networking.k8s.io/v1", None).await;
    assert_eq!(code, 404);
    let (_, list) = send(&c, "GET", CRDS, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_crd_whose_kind_is_taken_is_not_served() {
    let fake = KubeFake::start().await;
    let c = fake.client(Credentials::Admin);
    let (code, _) = send(
        &c,
        "POST",
        CRDS,
        Some(&widget_crd(json!([widget_version("v1", true)]))),
    )
    .await;
    assert_eq!(code, 201);
    let mut twin = widget_crd(json!([widget_version("v1", true)]));
    twin["metadata"]["name"] = json!("gizmos.example.com");
    twin["spec"]["names"] = json!({"kind": "Widget", "plural": "gizmos"});
    let (code, _) = send(&c, "POST", CRDS, Some(&twin)).await;
    assert_eq!(code, 201);
    let (_, got) = send(&c, "GET", &format!("{CRDS}/gizmos.example.com"), None).await;
    assert_eq!(condition(&got, "NamesAccepted")["status"], "False");
    assert_eq!(condition(&got, "NamesAccepted")["reason"], "KindConflict");
    assert_eq!(condition(&got, "Established")["status"], "False");
    let (code, _) = send(&c, "GET", "/apis/example.com/v1/gizmos", None).await;
    assert_eq!(code, 404);
    let (code, _) = send(&c, "GET", "/apis/example.com/v1/widgets", None).await;
    assert_eq!(code, 200);
}
