//! The fake API server's behaviour where no recording covers it, following
//! the recorded conventions: the Weft CRDs, a ServiceAccount kubeconfig
//! held to RBAC, Pod watches with field selectors, streaming lists
//! (`sendInitialEvents`), and a forced 410.

use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Duration;
use weft_tests::kube_fake::{Credentials, KubeFake};

async fn events(fake: &KubeFake, creds: Credentials, path: &str, wait: Duration) -> Vec<Value> {
    let mut s = fake.client(creds).stream("GET", path, &[]).await.unwrap();
    assert_eq!(s.status, 200);
    let mut out = Vec::new();
    while let Some(line) = s.next_line(wait).await {
        out.push(serde_json::from_str(&line).unwrap());
    }
    out
}

fn types(evs: &[Value]) -> Vec<&str> {
    evs.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn weft_crds_are_served_with_status() {
    let fake = KubeFake::builder().weft_crds().start().await;
    let c = fake.client(Credentials::Admin);
    let doc = c
        .send("GET", "/apis/weft.dev/v1alpha1", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    let names: Vec<&str> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"backends") && names.contains(&"meshconfigs/status"),
        "{names:?}"
    );
    fake.create_namespace("shop", json!({})).await;
    let b = fake
        .create(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend", "metadata": {"name": "db", "namespace": "shop"}, "spec": {"endpoints": [{"address": "10.1.0.1:5432"}]}, "status": {"ignored": true}}))
        .await;
    assert_eq!(b["metadata"]["generation"], 1);
    assert!(b.get("status").is_none(), "status is a subresource: {b}");
    let after = fake
        .merge_patch(
            "weft.dev/v1alpha1",
            "Backend",
            Some("shop"),
            "db",
            Some("status"),
            json!({"status": {"ready": true}}),
        )
        .await;
    assert_eq!(after["status"]["ready"], true);
    assert_eq!(after["metadata"]["generation"], 1);
    let list = c
        .send(
            "GET",
            "/apis/weft.dev/v1alpha1/namespaces/shop/backends",
            &[],
            Bytes::new(),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(
        list["items"][0]["kind"], "Backend",
        "custom resource list items keep kind"
    );
    assert_eq!(list["metadata"]["continue"], "");
}

#[tokio::test]
async fn a_service_account_kubeconfig_is_held_to_rbac() {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "weft-control-plane", "namespace": "weft-system"}})).await;
    let kubeconfig = std::fs::read_to_string(
        fake.service_account_kubeconfig("weft-system", "weft-control-plane"),
    )
    .unwrap();
    assert!(kubeconfig.contains(&format!("server: {}", fake.url())));
    let token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let sa = fake.client(Credentials::Bearer(token.clone()));
    let denied = sa
        .send("GET", "/api/v1/pods", &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["reason"], "Forbidden");
    fake.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "weft"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]}))
        .await;
    fake.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "weft"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "weft"},
        "subjects": [{"kind": "ServiceAccount", "name": "weft-control-plane", "namespace": "weft-system"}]}))
        .await;
    assert_eq!(
        sa.send("GET", "/api/v1/pods", &[], Bytes::new())
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        sa.send(
            "GET",
            "/api/v1/namespaces/weft-system/secrets",
            &[],
            Bytes::new()
        )
        .await
        .unwrap()
        .status,
        403
    );
    // Deleting the ServiceAccount invalidates its tokens.
    assert!(
        fake.delete(
            "v1",
            "ServiceAccount",
            Some("weft-system"),
            "weft-control-plane"
        )
        .await
    );
    assert_eq!(
        sa.send("GET", "/api/v1/pods", &[], Bytes::new())
            .await
            .unwrap()
            .status,
        401
    );
}

#[tokio::test]
async fn pod_watches_take_field_selectors_and_stream_initial_events() {
    let fake = KubeFake::builder()
        .config(|c| c.bookmark_interval = Duration::from_millis(500))
        .start()
        .await;
    fake.create_namespace("shop", json!({})).await;
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
               "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]}})
    };
    fake.create(pod("a", "node-1")).await;
    fake.create(pod("b", "node-2")).await;
    let path = "/api/v1/namespaces/shop/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dnode-1&timeoutSeconds=2";
    let evs = events(&fake, Credentials::Admin, path, Duration::from_secs(5)).await;
    assert_eq!(types(&evs)[..2], ["ADDED", "BOOKMARK"], "{evs:?}");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "a");
    assert_eq!(
        evs[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let bad = fake
        .client(Credentials::Admin)
        .send(
            "GET",
            "/api/v1/pods?fieldSelector=spec.bogus%3Dx",
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn an_expired_resource_version_is_a_410() {
    let fake = KubeFake::start().await;
    fake.create_namespace("shop", json!({})).await;
    let rv = fake.resource_version();
    fake.create_namespace("other", json!({})).await;
    fake.expire_history();
    let evs = events(
        &fake,
        Credentials::Admin,
        &format!("/api/v1/namespaces?watch=1&resourceVersion={rv}"),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(types(&evs), ["ERROR"]);
    assert_eq!(evs[0]["object"]["code"], 410);
    let list = fake
        .client(Credentials::Admin)
        .send(
            "GET",
            &format!("/api/v1/namespaces?resourceVersion={rv}&resourceVersionMatch=Exact"),
            &[],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(list.status, 410);
}

#[tokio::test]
async fn self_subject_access_review_answers_from_rbac() {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "cp", "namespace": "weft-system"}})).await;
    fake.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "lease", "namespace": "weft-system"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"], "resourceNames": ["weft-control-plane-status"]}]}))
        .await;
    fake.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "lease", "namespace": "weft-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
        "subjects": [{"kind": "ServiceAccount", "name": "cp", "namespace": "weft-system"}]}))
        .await;
    let token = fake
        .service_account_token("weft-system", "cp", &[], Duration::from_secs(600), None)
        .unwrap();
    let sa = fake.client(Credentials::Bearer(token));
    let ask = |name: &str| {
        Bytes::from(
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                   "spec": {"resourceAttributes": {"namespace": "weft-system", "verb": "update", "group": "coordination.k8s.io", "resource": "leases", "name": name}}})
            .to_string(),
        )
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let yes = sa
        .send(
            "POST",
            path,
            &[("content-type", "application/json")],
            ask("weft-control-plane-status"),
        )
        .await
        .unwrap();
    assert_eq!(yes.status, 201);
    assert_eq!(yes.json()["status"]["allowed"], true);
    let no = sa
        .send(
            "POST",
            path,
            &[("content-type", "application/json")],
            ask("other"),
        )
        .await
        .unwrap();
    assert_eq!(no.json()["status"]["allowed"], false);
}

#[tokio::test]
async fn server_side_apply_takes_a_json_body_and_creates() {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    let c = fake.client(Credentials::Admin);
    let path = "/apis/coordination.k8s.io/v1/namespaces/weft-system/leases/weft-control-plane-status?fieldManager=weft&force=true";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "weft-control-plane-status", "namespace": "weft-system"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-11-29T18:03:21.200013Z"}});
    let ct = [("content-type", "application/apply-patch+yaml")];
    let created = c
        .send("PATCH", path, &ct, Bytes::from(lease.to_string()))
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.json());
    let body = created.json();
    assert_eq!(body["metadata"]["managedFields"][0]["manager"], "weft");
    assert_eq!(body["metadata"]["managedFields"][0]["operation"], "Apply");
    let mut again = lease.clone();
    again["spec"]["holderIdentity"] = "b".into();
    let updated = c
        .send("PATCH", path, &ct, Bytes::from(again.to_string()))
        .await
        .unwrap();
    assert_eq!(updated.status, 200);
    assert_eq!(updated.json()["spec"]["holderIdentity"], "b");
    assert_ne!(
        updated.json()["metadata"]["resourceVersion"],
        body["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn secrets_take_string_data() {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    let s = fake
        .create(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "weft-ca", "namespace": "weft-system"},
                       "stringData": {"ca.pem": "PEM"}}))
        .await;
    assert_eq!(s["data"]["ca.pem"], "UEVN");
    assert_eq!(s["type"], "Opaque");
    assert!(s.get("stringData").is_none());
}

#[tokio::test]
async fn http2_clients_are_served_and_watches_stream() {
    use http_body_util::{BodyExt, Empty};
    let fake = KubeFake::start().await;
    let (cert, key) = fake.client_cert("admin", &["system:masters"]);
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(fake.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let uri = format!("{}/api/v1/namespaces?watch=1&timeoutSeconds=2", fake.url());
    let resp = h2
        .send_request(http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    fake.create_namespace("shop", json!({})).await;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let names: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap()["object"]["metadata"]["name"].clone())
        .collect();
    // The system namespaces first (synthetic ADDED), then the new one.
    assert_eq!(names.first().unwrap(), "default", "{names:?}");
    assert_eq!(names.last().unwrap(), "shop", "{names:?}");
}

#[tokio::test]
async fn dropping_the_fake_ends_open_watches() {
    let fake = KubeFake::start().await;
    let mut s = fake
        .client(Credentials::Admin)
        .stream("GET", "/api/v1/namespaces?watch=1&resourceVersion=0", &[])
        .await
        .unwrap();
    for _ in 0..4 {
        assert!(
            s.next_line(Duration::from_secs(2)).await.is_some(),
            "the four system namespaces"
        );
    }
    let addr = fake.addr();
    drop(fake);
    let started = std::time::Instant::now();
    assert!(s.next_line(Duration::from_secs(5)).await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the watch ended when the fake stopped"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn a_body_the_fake_cannot_handle_is_a_500_not_a_dropped_connection() {
    let fake = KubeFake::start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": "not an object"});
    let r = fake
        .client(Credentials::Admin)
        .send(
            "POST",
            "/api/v1/namespaces/default/pods",
            &[("content-type", "application/json")],
            Bytes::from(pod.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["reason"], "InternalError");
}

/// A webhook that labels every object it is sent, serving a certificate
/// for `names`; returns its address and CA (PEM).
async fn labelling_webhook(names: Vec<String>) -> (std::net::SocketAddr, String) {
    use http_body_util::{BodyExt, Full};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let svc = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let review: Value = serde_json::from_slice(&body).unwrap();
                    let patch = json!([{"op": "add", "path": "/metadata/labels", "value": {"seen-by": "webhook"}}]);
                    let answer = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch",
                                 "patch": weft_tests::kube_fake::b64_std(patch.to_string().as_bytes())}});
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        answer.to_string(),
                    ))))
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc),
            );
        }
    });
    (addr, ca.pem())
}

#[tokio::test]
async fn webhooks_naming_a_service_reach_the_routed_address() {
    let fake = KubeFake::start().await;
    let (addr, ca) = labelling_webhook(vec!["weft-control-plane.weft-system.svc".into()]).await;
    fake.create_namespace("apps", json!({"weft.dev/inject": "enabled"}))
        .await;
    fake.create(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "weft"},
        "webhooks": [{"name": "inject.weft.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "namespaceSelector": {"matchLabels": {"weft.dev/inject": "enabled"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "clientConfig": {"service": {"namespace": "weft-system", "name": "weft-control-plane", "port": 15017, "path": "/inject"},
                             "caBundle": weft_tests::kube_fake::b64_std(ca.as_bytes())}}]}))
        .await;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "apps"},
                                  "spec": {"containers": [{"name": "app", "image": "app:1"}]}})
    };
    let (code, body) = fake
        .request("POST", "/api/v1/namespaces/apps/pods", Some(&pod("before")))
        .await;
    assert_eq!(code, 500, "an unrouted Service fails the call: {body}");
    fake.route_service("weft-system", "weft-control-plane", addr);
    let created = fake.create(pod("after")).await;
    assert_eq!(created["metadata"]["labels"]["seen-by"], "webhook");
}
