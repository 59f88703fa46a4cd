//! A Weft install as the chart and its controllers leave it in the fake
//! API server, for the `weft-control-plane check` tests: the control
//! plane's Service, Deployment (with the status the Deployment controller
//! would write), Pods (Running, their admin port routed through the pod
//! proxy), meshed Pods as the injector leaves them, the webhook
//! configuration of the contract, and a stand-in for the injection webhook.

use crate::kube_fake::KubeFake;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use weft_mesh::identity::ca::CertificateAuthority;

/// The control plane's namespace.
pub const NS: &str = "weft-system";
/// Its Deployment, Service and ServiceAccount.
pub const CP: &str = "weft-control-plane";
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

/// The webhook configuration of the contract: two webhooks, both to the
/// control plane's Service port 15017 `/inject`, with `ca_bundle`.
pub fn webhook_configuration(ca_bundle: &str) -> Value {
    let hook = |name: &str, ns_sel: Value, obj_sel: Value| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "reinvocationPolicy": "Never", "timeoutSeconds": 10,
            "clientConfig": {"service": {"namespace": NS, "name": CP, "port": 15017, "path": "/inject"},
                "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": ns_sel, "objectSelector": obj_sel})
    };
    let not_disabled = json!({"matchExpressions": [
        {"key": "weft.dev/inject", "operator": "NotIn", "values": ["disabled"]}]});
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "weft-sidecar-injector"},
        "webhooks": [
            hook("namespace.inject.weft.dev",
                json!({"matchLabels": {"weft.dev/inject": "enabled"}}), not_disabled),
            hook("pod.inject.weft.dev",
                json!({"matchExpressions": [
                    {"key": "weft.dev/inject", "operator": "NotIn", "values": ["enabled", "disabled"]},
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NS]}]}),
                json!({"matchLabels": {"weft.dev/inject": "enabled"}}))]})
}

/// The injection webhook's stand-in: HTTPS with a certificate from the
/// mesh CA, answering every AdmissionReview allowed with its uid; counts
/// the dry-run reviews it got.
pub async fn webhook(ca: &CertificateAuthority) -> (SocketAddr, Arc<AtomicUsize>) {
    let me = crate::mesh::identity(
        ca,
        "spiffe://weft.local/ns/weft-system/sa/weft-control-plane",
    );
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(me.cert_chain, me.key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dry_runs = Arc::new(AtomicUsize::new(0));
    let seen = dry_runs.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await?.to_bytes();
                        let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        if path == "/inject" && review["request"]["dryRun"] == true {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "response": {"uid": review["request"]["uid"], "allowed": true}});
                        Ok::<_, hyper::Error>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(answer.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, dry_runs)
}
