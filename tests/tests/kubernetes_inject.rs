//! The sidecar injector end to end: the real `weft-control-plane serve
//! --kubernetes --webhook` as its own ServiceAccount (held to the chart's
//! RBAC, `charts/weft/files/rbac.yaml`), the fake API server
//! (`weft_tests::kube_fake`) holding the two-webhook
//! MutatingWebhookConfiguration `weft-sidecar-injector` and calling it
//! over HTTPS by its Service reference (`route_service`), verifying the
//! serving certificate for `weft-control-plane.weft-system.svc` against
//! the caBundle the control plane itself filled in. Pods are created as a
//! client would and read back from the API server.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;
use weft_tests::inject_cluster::{
    bundles, ca_root, configuration, create_pod, injector_cluster, injector_control_plane,
    wait_bundles, webhook_configuration,
};
use weft_tests::kube_cluster::{control_plane_rbac, without_rule};
use weft_tests::kube_fake::KubeFake;
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

/// A cluster with the control plane's account (`rbac`), namespaces
/// `shop` (labelled enabled), `plain` (unlabelled) and `off` (labelled
/// disabled), and, when `configuration`, the webhook configuration with
/// an empty caBundle.
async fn cluster(rbac: Vec<Value>, configuration: bool) -> (KubeFake, PathBuf) {
    let (fake, kubeconfig) = injector_cluster(rbac, configuration).await;
    fake.create_namespace("shop", json!({"weft.dev/inject": "enabled"}))
        .await;
    fake.create_namespace("plain", json!({})).await;
    fake.create_namespace("off", json!({"weft.dev/inject": "disabled"}))
        .await;
    (fake, kubeconfig)
}

fn control_plane(fake: &KubeFake, kubeconfig: &std::path::Path) -> ControlPlane {
    injector_control_plane(fake, kubeconfig, &[])
}

/// A Pod of `ns` with an HTTP readiness probe on a named port.
fn pod(ns: &str, name: &str, labels: Value, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
        "spec": {"serviceAccountName": "default", "containers": [{
            "name": "app", "image": "example.com/app:1",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}}}]}})
}

async fn create(fake: &KubeFake, pod: Value) -> (u16, Value) {
    create_pod(fake, &pod).await
}

/// Creates a Pod and reads it back: whether it came back injected
/// (checked whole when it did).
async fn injected(fake: &KubeFake, pod: Value, root: &str) -> bool {
    let (ns, name) = (
        pod["metadata"]["namespace"].as_str().unwrap().to_string(),
        pod["metadata"]["name"].as_str().unwrap().to_string(),
    );
    let (code, body) = create(fake, pod).await;
    assert_eq!(code, 201, "{ns}/{name}: {body}");
    let stored = fake
        .get("v1", "Pod", Some(&ns), &name)
        .await
        .expect("the Pod");
    let init: Vec<&str> = stored["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    if init.is_empty() {
        assert!(stored["metadata"]["annotations"]
            .get("weft.dev/injected")
            .is_none());
        return false;
    }
    assert_eq!(init, ["weft-init", "weft-proxy"], "{stored}");
    let proxy = &stored["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    let env = |n: &str| {
        proxy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
    };
    assert_eq!(env("WEFT_CONTROL_PLANE_CA_PEM").unwrap()["value"], root);
    assert_eq!(
        env("WEFT_CONTROL_PLANE").unwrap()["value"],
        "https://weft-control-plane.weft-system.svc:15012"
    );
    let readiness = &stored["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    assert_eq!(readiness["port"], 15020, "{stored}");
    assert_eq!(readiness["path"], "/app-health/app/readyz");
    let probes: Value =
        serde_json::from_str(env("WEFT_APP_PROBES").unwrap()["value"].as_str().unwrap()).unwrap();
    assert_eq!(probes["/app-health/app/readyz"]["port"], 8080);
    let volumes = stored["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.iter().any(|v| v["name"] == "weft-token"),
        "{stored}"
    );
    let record: Value = serde_json::from_str(
        stored["metadata"]["annotations"]["weft.dev/injected"]
            .as_str()
            .expect("weft.dev/injected"),
    )
    .unwrap();
    assert_eq!(record["initContainers"], json!(["weft-init", "weft-proxy"]));
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_where_injection_is_enabled_come_back_injected_and_a_stopped_webhook_refuses_them() {
    let (fake, kubeconfig) = cluster(control_plane_rbac(), true).await;
    let mut cp = control_plane(&fake, &kubeconfig);
    let root = ca_root(&fake).await;
    wait_bundles(&fake, &root).await;
    let config = cp.admin_json("/config").await;
    let note = config["kubernetes"]["webhook"].as_str().unwrap_or_default();
    assert!(
        note.contains("caBundle current on 2 webhook(s)"),
        "{config}"
    );

    let none = json!({});
    // A labelled namespace: injected.
    assert!(
        injected(
            &fake,
            pod("shop", "a-0", json!({"app": "a"}), none.clone()),
            &root
        )
        .await
    );
    // An unlabelled namespace: not.
    assert!(
        !injected(
            &fake,
            pod("plain", "b-0", none.clone(), none.clone()),
            &root
        )
        .await
    );
    // A Pod labelled enabled in an unlabelled namespace: injected.
    let enabled = json!({"weft.dev/inject": "enabled"});
    assert!(
        injected(
            &fake,
            pod("plain", "c-0", enabled.clone(), none.clone()),
            &root
        )
        .await
    );
    // Opted out: a Pod labelled disabled, a namespace labelled disabled,
    // the control plane's own namespace.
    let disabled = json!({"weft.dev/inject": "disabled"});
    assert!(!injected(&fake, pod("shop", "d-0", disabled, none.clone()), &root).await);
    assert!(
        !injected(
            &fake,
            pod("off", "e-0", enabled.clone(), none.clone()),
            &root
        )
        .await
    );
    assert!(
        !injected(
            &fake,
            pod("weft-system", "f-0", enabled, none.clone()),
            &root
        )
        .await
    );

    // A bad annotation: refused, naming it.
    let bad = json!({"weft.dev/proxy-memory": "a lot"});
    let (code, body) = create(&fake, pod("shop", "g-0", none.clone(), bad)).await;
    assert_eq!(code, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("admission webhook \"namespace.inject.weft.dev\" denied the request:")
            && message.contains("weft.dev/proxy-memory"),
        "{body}"
    );
    assert!(fake.get("v1", "Pod", Some("shop"), "g-0").await.is_none());

    // The selectors sent only the Pods to inject: two patched, one refused.
    assert_eq!(cp.metric("weft_cp_injections_total").await, 2.0);
    assert_eq!(cp.metric("weft_cp_injection_denials_total").await, 1.0);
    assert_eq!(cp.metric("weft_cp_injection_skips_total").await, 0.0);

    // A reset caBundle (as `helm upgrade` leaves it) is set again.
    let mut reset = configuration(&fake).await;
    reset["webhooks"][1]["clientConfig"]["caBundle"] = json!("");
    fake.replace(reset).await;
    wait_bundles(&fake, &root).await;

    // The control plane stopped: failurePolicy Fail refuses the Pod with
    // the API server's InternalError (as recorded in
    // tests/fixtures/k8s/admission/12-client-create-pod-webhook-down-fail.json).
    let webhook = cp.webhook.unwrap();
    cp.kill();
    let (code, body) = create(&fake, pod("shop", "h-0", none.clone(), none.clone())).await;
    assert_eq!(code, 500, "{body}");
    assert_eq!(body["reason"], "InternalError", "{body}");
    assert_eq!(
        body["message"],
        format!(
            "Internal error occurred: failed calling webhook \"namespace.inject.weft.dev\": failed to call webhook: Post \"https://weft-control-plane.weft-system.svc:15017/inject?timeout=10s\": dial tcp {webhook}: connect: connection refused"
        ),
        "{body}"
    );
    assert!(fake.get("v1", "Pod", Some("shop"), "h-0").await.is_none());
    // Where no webhook applies, Pods are still created.
    assert!(!injected(&fake, pod("plain", "i-0", none.clone(), none), &root).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_or_configuration_is_shown_and_the_webhook_still_serves() {
    // Without RBAC on its webhook configuration: named on /config.
    let mut rbac = control_plane_rbac();
    without_rule(&mut rbac[0], "mutatingwebhookconfigurations");
    let (fake, kubeconfig) = cluster(rbac, true).await;
    let cp = control_plane(&fake, &kubeconfig);
    let permission =
        "get mutatingwebhookconfigurations.admissionregistration.k8s.io weft-sidecar-injector";
    let config = eventually("/config names the missing permission", LIMIT, || async {
        let config = cp.admin_json("/config").await;
        config["kubernetes"]["missing_permissions"]
            .get(permission)
            .is_some()
            .then_some(config)
    })
    .await;
    let note = config["kubernetes"]["webhook"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!("forbidden to {permission}")),
        "{config}"
    );
    assert!(cp.logs().contains(permission), "{}", cp.logs());
    assert_eq!(bundles(&fake).await, ["", ""]);
    // Still serving: with the bundle put in by hand, Pods are injected.
    let root = ca_root(&fake).await;
    fake.replace(webhook_configuration(&kube_b64(&root))).await;
    let none = json!({});
    assert!(injected(&fake, pod("shop", "a-0", none.clone(), none), &root).await);
    drop(cp);

    // Without the configuration: /config says so; created, it is filled in.
    let (fake, kubeconfig) = cluster(control_plane_rbac(), false).await;
    let cp = control_plane(&fake, &kubeconfig);
    eventually(
        "/config says the configuration is missing",
        LIMIT,
        || async {
            let config = cp.admin_json("/config").await;
            let note = config["kubernetes"]["webhook"].as_str()?.to_string();
            note.contains("MutatingWebhookConfiguration weft-sidecar-injector not found")
                .then_some(())
        },
    )
    .await;
    let (code, _) = cp_ready(&cp).await;
    assert_eq!(code, 200, "a missing configuration is not fatal");
    fake.create(webhook_configuration("")).await;
    wait_bundles(&fake, &ca_root(&fake).await).await;
}

fn kube_b64(pem: &str) -> String {
    weft_tests::kube_fake::b64_std(pem.as_bytes())
}

async fn cp_ready(cp: &ControlPlane) -> (u16, String) {
    let r = get(&format!("http://{}/ready", cp.admin), &[])
        .await
        .expect("/ready");
    (r.status, r.text())
}
