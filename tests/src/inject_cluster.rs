//! The injector's end-to-end setup, shared by the tests that create Pods
//! through the fake API server and want them back injected: the two-webhook
//! MutatingWebhookConfiguration `weft-sidecar-injector` as the contract
//! has it, a cluster holding the control plane's account (the chart's
//! RBAC), and the real `weft-control-plane serve --kubernetes --webhook`
//! routed as Service `weft-system/weft-control-plane`.

use crate::kube_cluster::install_control_plane_account_with;
use crate::kube_fake::{b64_decode, KubeFake};
use crate::ControlPlane;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The line the control plane prints once it serves.
pub const SERVING: &str = "weft-control-plane serving";
/// The webhook configuration's name.
pub const CONFIGURATION: &str = "weft-sidecar-injector";
/// Its API version.
pub const ADMISSION: &str = "admissionregistration.k8s.io/v1";

/// The configuration as the contract has it: one webhook for labelled
/// namespaces, one for labelled Pods elsewhere, never kube-system or the
/// control plane's own namespace, an opted-out Pod never; both with
/// `failurePolicy: Fail` and the given caBundle.
pub fn webhook_configuration(ca_bundle: &str) -> Value {
    let not_system = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                            "values": ["kube-system", "weft-system"]});
    let hook = |name: &str, namespaces: Value, objects: Value| {
        json!({
            "name": name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 10,
            "namespaceSelector": namespaces,
            "objectSelector": objects,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "clientConfig": {
                "service": {"namespace": "weft-system", "name": "weft-control-plane",
                            "port": 15017, "path": "/inject"},
                "caBundle": ca_bundle,
            },
        })
    };
    json!({
        "apiVersion": ADMISSION,
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [
            hook("namespace.inject.weft.dev",
                 json!({"matchExpressions": [
                     {"key": "weft.dev/inject", "operator": "In", "values": ["enabled"]}, not_system]}),
                 json!({"matchExpressions": [
                     {"key": "weft.dev/inject", "operator": "NotIn", "values": ["disabled"]}]})),
            hook("pod.inject.weft.dev",
                 json!({"matchExpressions": [
                     {"key": "weft.dev/inject", "operator": "NotIn", "values": ["enabled", "disabled"]},
                     not_system]}),
                 json!({"matchLabels": {"weft.dev/inject": "enabled"}})),
        ],
    })
}

/// A fake API server with the control plane's account (`rbac`) and, when
/// `configuration`, the webhook configuration with an empty caBundle; the
/// kubeconfig of that account.
pub async fn injector_cluster(rbac: Vec<Value>, configuration: bool) -> (KubeFake, PathBuf) {
    let fake = KubeFake::start().await;
    install_control_plane_account_with(&fake, &[], rbac).await;
    if configuration {
        fake.create(webhook_configuration("")).await;
    }
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    (fake, kubeconfig)
}

/// The control plane with its CA in Secret `weft-ca`, the webhook on a
/// free loopback port routed as Service `weft-system/weft-control-plane`,
/// re-checking the caBundle every 200ms; `extra` serve flags appended.
pub fn injector_control_plane(fake: &KubeFake, kubeconfig: &Path, extra: &[&str]) -> ControlPlane {
    let mut args = vec!["--webhook", "127.0.0.1:0", "--ca-bundle-interval", "200ms"];
    args.extend(extra);
    let cp = ControlPlane::start_kubernetes_ca_secret(kubeconfig, &args, SERVING);
    let webhook = cp
        .webhook
        .expect("the serving line names the webhook address");
    fake.route_service("weft-system", "weft-control-plane", webhook);
    cp
}

/// The mesh CA root, from Secret `weft-ca`.
pub async fn ca_root(fake: &KubeFake) -> String {
    let secret = fake
        .get("v1", "Secret", Some("weft-system"), "weft-ca")
        .await
        .expect("the weft-ca Secret");
    let b64 = secret["data"]["ca.pem"]
        .as_str()
        .expect("ca.pem in weft-ca");
    let pem = b64_decode(b64).expect("ca.pem is base64");
    String::from_utf8(pem).expect("ca.pem is text")
}

/// The stored MutatingWebhookConfiguration `weft-sidecar-injector`.
pub async fn configuration(fake: &KubeFake) -> Value {
    fake.get(
        ADMISSION,
        "MutatingWebhookConfiguration",
        None,
        CONFIGURATION,
    )
    .await
    .expect("the configuration")
}

/// The caBundles of the configuration's webhooks, decoded.
pub async fn bundles(fake: &KubeFake) -> Vec<String> {
    configuration(fake).await["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or("");
            String::from_utf8(b64_decode(b64).unwrap_or_default()).unwrap_or_default()
        })
        .collect()
}

/// Waits until the control plane has set every caBundle to `root`.
pub async fn wait_bundles(fake: &KubeFake, root: &str) {
    crate::eventually(
        "the control plane sets every caBundle to the mesh root",
        std::time::Duration::from_secs(20),
        || async { bundles(fake).await.iter().all(|b| b == root).then_some(()) },
    )
    .await;
}

/// Creates `pod` as a client would: the status and body of the answer.
pub async fn create_pod(fake: &KubeFake, pod: &Value) -> (u16, Value) {
    let ns = pod["metadata"]["namespace"]
        .as_str()
        .expect("Pod namespace");
    let path = fake.path_of("v1", "Pod", Some(ns), None);
    fake.request("POST", &path, Some(pod)).await
}
