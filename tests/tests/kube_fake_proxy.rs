//! The fake API server's SubjectAccessReview (answered from its RBAC for
//! the user and groups asked about) and the `proxy` subresource of
//! Services and Pods (forwarded to the routed address, HTTP or HTTPS
//! without verification, the answer handed back as it came), each held
//! to RBAC like any request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use weft_tests::kube_fake::{Credentials, FakeClient, FakeResponse, KubeFake};

/// A server answering `<method> <path?query> <body>` as text, over TLS
/// (a self-signed certificate nobody could verify) when `tls`.
async fn echo(tls: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.then(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["nobody.invalid".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let head = format!("{} {}", req.method(), req.uri());
                    let body = req.into_body().collect().await?.to_bytes();
                    let text = format!("{head} {}", String::from_utf8_lossy(&body));
                    Ok::<_, hyper::Error>(
                        http::Response::builder()
                            .status(201)
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap(),
                    )
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    addr
}

async fn account(fake: &KubeFake, name: &str, rules: Value) {
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": "ops"}}))
        .await;
    fake.create(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules}),
    )
    .await;
    fake.create(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "ops"}]}),
    )
    .await;
}

fn bearer(fake: &KubeFake, sa: &str) -> Credentials {
    let token = fake
        .service_account_token("ops", sa, &[], std::time::Duration::from_secs(3600), None)
        .unwrap();
    Credentials::Bearer(token)
}

async fn send(c: &FakeClient, method: &str, path: String, body: &'static str) -> FakeResponse {
    c.send(method, &path, &[], Bytes::from(body)).await.unwrap()
}

fn review(user: &str, attrs: Value) -> Bytes {
    Bytes::from(
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": attrs}})
        .to_string(),
    )
}

#[tokio::test]
async fn subject_access_reviews_answer_from_rbac_for_the_named_user() {
    let fake = KubeFake::start().await;
    fake.create_namespace("ops", json!({})).await;
    account(&fake, "reader", json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
         "resourceNames": ["weft-sidecar-injector"], "verbs": ["patch"]}]))
    .await;
    account(
        &fake,
        "auditor",
        json!([{"apiGroups": ["authorization.k8s.io"],
        "resources": ["subjectaccessreviews"], "verbs": ["create"]}]),
    )
    .await;
    let path = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let reader = "system:serviceaccount:ops:reader";
    let ask = |creds: Credentials, body: Bytes| {
        let c = fake.client(creds);
        async move {
            c.send("POST", path, &[("content-type", "application/json")], body)
                .await
                .unwrap()
        }
    };
    let cases = [
        (json!({"verb": "list", "resource": "pods"}), true),
        (json!({"verb": "watch", "resource": "pods"}), false),
        (
            json!({"verb": "patch", "group": "admissionregistration.k8s.io",
            "resource": "mutatingwebhookconfigurations", "name": "weft-sidecar-injector"}),
            true,
        ),
        (
            json!({"verb": "patch", "group": "admissionregistration.k8s.io",
            "resource": "mutatingwebhookconfigurations", "name": "other"}),
            false,
        ),
    ];
    for (attrs, allowed) in cases {
        let r = ask(Credentials::Admin, review(reader, attrs.clone())).await;
        assert_eq!(r.status, 201);
        let doc = r.json();
        assert_eq!(doc["kind"], "SubjectAccessReview");
        assert_eq!(doc["status"]["allowed"], allowed, "{attrs}: {doc}");
    }
    // Asking needs `create subjectaccessreviews`.
    let attrs = json!({"verb": "list", "resource": "pods"});
    let denied = ask(bearer(&fake, "reader"), review(reader, attrs.clone())).await;
    assert_eq!(denied.status, 403, "{:?}", denied.json());
    let r = ask(bearer(&fake, "auditor"), review(reader, attrs)).await;
    assert_eq!(
        (r.status, r.json()["status"]["allowed"].clone()),
        (201, json!(true))
    );
    let nobody = Bytes::from(json!({"spec": {"resourceAttributes": {"verb": "get"}}}).to_string());
    assert_eq!(ask(Credentials::Admin, nobody).await.status, 422);
}

#[tokio::test]
async fn the_proxy_subresource_forwards_to_the_routed_address() {
    let fake = KubeFake::start().await;
    fake.create_namespace("ops", json!({})).await;
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "cp", "namespace": "ops"},
        "spec": {"ports": [{"name": "http-admin", "port": 15014}, {"name": "https-webhook", "port": 15017}]}}))
    .await;
    fake.create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cp-0", "namespace": "ops"},
        "spec": {"containers": [{"name": "cp", "image": "cp"}]}}),
    )
    .await;
    let (plain, tls) = (echo(false).await, echo(true).await);
    fake.route_proxy("services", "ops", "cp", 15014, plain);
    fake.route_proxy("services", "ops", "cp", 15017, tls);
    fake.route_proxy("pods", "ops", "cp-0", 15014, plain);
    let admin = fake.client(Credentials::Admin);
    let base = "/api/v1/namespaces/ops";
    let text = |r: &FakeResponse| String::from_utf8_lossy(&r.body).into_owned();

    let r = send(
        &admin,
        "GET",
        format!("{base}/services/cp:15014/proxy/proxies?x=1"),
        "",
    )
    .await;
    assert_eq!((r.status, text(&r).as_str()), (201, "GET /proxies?x=1 "));
    let r = send(
        &admin,
        "GET",
        format!("{base}/services/cp:http-admin/proxy"),
        "",
    )
    .await;
    assert_eq!(text(&r), "GET / ");
    let r = send(
        &admin,
        "POST",
        format!("{base}/services/https:cp:15017/proxy/inject"),
        "{\"a\":1}",
    )
    .await;
    assert_eq!(
        (r.status, text(&r).as_str()),
        (201, "POST /inject {\"a\":1}")
    );
    let r = send(
        &admin,
        "GET",
        format!("{base}/pods/cp-0:15014/proxy/config"),
        "",
    )
    .await;
    assert_eq!(text(&r), "GET /config ");

    // What the API server answers when there is nowhere to go.
    let r = send(&admin, "GET", format!("{base}/services/nope:80/proxy/"), "").await;
    assert_eq!(
        (r.status, r.json()["reason"].clone()),
        (404, json!("NotFound"))
    );
    let r = send(&admin, "GET", format!("{base}/services/cp:9999/proxy/"), "").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "no service port \"9999\" found for service \"cp\""
    );
    let r = send(&admin, "GET", format!("{base}/pods/cp-0:8080/proxy/"), "").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["message"],
        "no endpoints available for pod \"cp-0\""
    );

    // RBAC: `get` (GET) or `create` (POST) on services/proxy.
    account(
        &fake,
        "viewer",
        json!([{"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get"]}]),
    )
    .await;
    let viewer = fake.client(bearer(&fake, "viewer"));
    let r = send(
        &viewer,
        "GET",
        format!("{base}/services/cp:15014/proxy/proxies"),
        "",
    )
    .await;
    assert_eq!(r.status, 201);
    let r = send(
        &viewer,
        "POST",
        format!("{base}/services/https:cp:15017/proxy/inject"),
        "{}",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        &viewer,
        "GET",
        format!("{base}/pods/cp-0:15014/proxy/config"),
        "",
    )
    .await;
    assert_eq!(r.status, 403);
}
