//! A Weft install as the chart and its controllers leave it in the fake
//! API server, for the `weft-control-plane check` tests: the control
//! plane's Service, Deployment (with the status the Deployment controller
//! would write), Pods (Running, their admin port routed through the pod
//! proxy), meshed Pods as the injector leaves them, the webhook
//! configuration of the contract; the real control plane with its
//! injection webhook routed as its Service, waiting for the caBundles it
//! fills in; and a webhook that is not Weft's (answering another uid).

use crate::kube_fake::{b64_decode, KubeFake};
use crate::{eventually, ControlPlane};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use weft_mesh::identity::ca::CertificateAuthority;

/// The control plane's namespace.
pub const NS: &str = "weft-system";
/// Its Deployment, Service and ServiceAccount.
pub const CP: &str = "weft-control-plane";
/// The injector's MutatingWebhookConfiguration.
pub const CONFIGURATION: &str = "weft-sidecar-injector";
/// Its API group and version.
pub const ADMISSION: &str = "admissionregistration.k8s.io/v1";
/// The control plane's log line once it serves.
pub const SERVING: &str = "weft-control-plane serving";
/// One replica's Pod.
pub const CP_POD: &str = "weft-control-plane-5d9c7-abcde";

/// The control plane's Service, as the chart makes it.
pub fn cp_service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": CP, "namespace": NS},
        "spec": {"selector": {"app.kubernetes.io/name": CP}, "ports": [
            {"name": "grpc-config", "port": 15012, "targetPort": 15012},
            {"name": "http-admin", "port": 15014, "targetPort": 15014},
            {"name": "https-webhook", "port": 15017, "targetPort": 15017}]}})
}

/// The Deployment, its status as the controller would write it.
pub async fn deployment(fake: &KubeFake, ready: u64) {
    let labels = json!({"app.kubernetes.io/name": CP});
    fake.create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CP, "namespace": NS},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"serviceAccountName": CP,
                    "containers": [{"name": CP, "image": "ghcr.io/weft-mesh/weft:0.1.0",
                        "args": ["serve", "--kubernetes"]}]}}}}))
        .await;
    let mut status = json!({"replicas": 2, "observedGeneration": 1});
    if ready > 0 {
        status["readyReplicas"] = ready.into();
    }
    fake.merge_patch(
        "apps/v1",
        "Deployment",
        Some(NS),
        CP,
        Some("status"),
        json!({"status": status}),
    )
    .await;
}

/// A Running Pod (the control plane's, or a meshed one) whose `proxy`
/// subresource on `port` reaches `admin`.
pub async fn running_pod(fake: &KubeFake, pod: Value) {
    let ns = pod["metadata"]["namespace"].as_str().unwrap().to_string();
    let name = pod["metadata"]["name"].as_str().unwrap().to_string();
    fake.create(pod).await;
    fake.merge_patch(
        "v1",
        "Pod",
        Some(&ns),
        &name,
        Some("status"),
        json!({"status": {"phase": "Running", "podIP": "10.1.0.7"}}),
    )
    .await;
}

pub async fn control_plane_pod(fake: &KubeFake, admin: SocketAddr) {
    running_pod(
        fake,
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": CP_POD, "namespace": NS, "labels": {"app.kubernetes.io/name": CP}},
        "spec": {"serviceAccountName": CP, "containers": [{"name": CP, "image": "weft"}]}}),
    )
    .await;
    fake.route_proxy("pods", NS, CP_POD, 15014, admin);
}

/// A meshed Pod of `shop/<sa>`, as the injector leaves it.
pub async fn meshed_pod(fake: &KubeFake, name: &str, sa: &str) {
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": sa, "namespace": "shop"}}))
        .await;
    running_pod(fake, json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": sa},
            "annotations": {"weft.dev/injected": "{\"version\":\"0.1.0\",\"initContainers\":[\"weft-init\",\"weft-proxy\"]}"}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": sa}]}}))
    .await;
}

/// The configuration as the contract has it: one webhook for labelled
/// namespaces, one for labelled Pods elsewhere, never kube-system or the
/// control plane's own namespace, an opted-out Pod never; both with
/// `failurePolicy: Fail`, to the control plane's Service port 15017
/// `/inject`, with `ca_bundle`.
pub fn webhook_configuration(ca_bundle: &str) -> Value {
    let not_system = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                            "values": ["kube-system", NS]});
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
                "service": {"namespace": NS, "name": CP, "port": 15017, "path": "/inject"},
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

/// The real control plane as ServiceAccount `kubeconfig` with the
/// injection webhook on a free loopback port (re-checking the caBundles
/// every 200 ms), routed as Service `weft-system/weft-control-plane` (for
/// webhook calls and the service proxy alike).
pub fn control_plane_with_webhook(fake: &KubeFake, kubeconfig: &Path) -> ControlPlane {
    let cp = ControlPlane::start_kubernetes_ca_secret(
        kubeconfig,
        &["--webhook", "127.0.0.1:0", "--ca-bundle-interval", "200ms"],
        SERVING,
    );
    let webhook = cp
        .webhook
        .expect("the serving line names the webhook address");
    fake.route_service(NS, CP, webhook);
    cp
}

/// The mesh CA root, from Secret `weft-ca`.
pub async fn ca_root(fake: &KubeFake) -> String {
    let secret = fake
        .get("v1", "Secret", Some(NS), "weft-ca")
        .await
        .expect("the weft-ca Secret");
    let pem = b64_decode(secret["data"]["ca.pem"].as_str().unwrap()).unwrap();
    String::from_utf8(pem).unwrap()
}

/// The caBundles of the configuration's webhooks, decoded.
pub async fn bundles(fake: &KubeFake) -> Vec<String> {
    let config = fake
        .get(
            ADMISSION,
            "MutatingWebhookConfiguration",
            None,
            CONFIGURATION,
        )
        .await
        .expect("the configuration");
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or("");
            String::from_utf8(b64_decode(b64).unwrap_or_default()).unwrap_or_default()
        })
        .collect()
}

/// Waits until the control plane has set every webhook's caBundle to `root`.
pub async fn wait_bundles(fake: &KubeFake, root: &str) {
    eventually(
        "the control plane sets every caBundle to the mesh root",
        Duration::from_secs(20),
        || async { bundles(fake).await.iter().all(|b| b == root).then_some(()) },
    )
    .await;
}

/// A webhook that is not Weft's: HTTPS on a free loopback port with a
/// certificate for `localhost` from the mesh CA `ca`, answering every
/// AdmissionReview allowed but with another uid than the one asked.
pub async fn wrong_uid_webhook(ca: &CertificateAuthority) -> SocketAddr {
    let ca_key = rcgen::KeyPair::from_pem(ca.key_pem()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca.cert_pem(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                    let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": {"uid": "00000000-0000-0000-0000-000000000000", "allowed": true}});
                    http::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(bytes::Bytes::from(answer.to_string())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
