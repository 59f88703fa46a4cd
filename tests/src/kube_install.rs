//! A Weft install as the chart and its controllers leave it in the fake
//! API server, for the `weft-control-plane check` tests: the control
//! plane's Service, Deployment (with the status the Deployment controller
//! would write), Pods (Running, their admin port routed through the pod
//! proxy), meshed Pods as the injector leaves them, the webhook
//! configuration of the contract; the real control plane with its
//! injection webhook routed as its Service, waiting for the caBundles it
//! fills in; and a webhook that is not Weft's (answering another uid).

pub use crate::inject_cluster::{
    bundles, ca_root, configuration, injector_control_plane, wait_bundles, webhook_configuration,
    ADMISSION, CONFIGURATION, SERVING,
};
use crate::kube_fake::KubeFake;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};
use std::net::SocketAddr;
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
