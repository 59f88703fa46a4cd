//! Identity from the cluster, end to end: the fake API server
//! (`weft_tests::kube_fake`) issues a Pod-bound ServiceAccount token for
//! the audience `weft` (as the kubelet projects it), a real `weft-proxy run
//! --token-file` sidecar sends it for its first certificate, the real
//! control plane reviews it with a TokenReview as its own ServiceAccount
//! (held to the RBAC rules below) and signs exactly that account's SPIFFE
//! ID. Tokens that prove nothing (another audience, expired, the Pod
//! deleted, no Pod binding) and CSRs for another account are refused,
//! through the certificate API called directly with hand-made CSRs. The
//! CA lives in Secret `weft-ca`: two control planes started together
//! create it once and sign under the same root, and a control plane
//! restarted reads it back. A sidecar whose certificate expired while the
//! control plane was away renews with the token file as it now is.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_mesh::api::CertificateResponse;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::SpiffeId;
use weft_tests::certificate_api::{ask_certificate, chains_to, tls_http1, uri_sans};
use weft_tests::kube_cluster::{control_plane_rbac, token_sidecar, without_rule, write_token};
use weft_tests::kube_fake::{b64_decode, KubeFake};
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const SERVING: &str = "weft-control-plane serving";
const HOUR: Duration = Duration::from_secs(3600);

/// The control plane's RBAC (`kube_cluster::control_plane_rbac`, the
/// README's rules), without `create` on TokenReviews unless
/// `token_reviews`. `resourceNames` cannot narrow `create` (the name is
/// not known when it is authorized), so the Role grants it on every
/// Secret of `weft-system` only.
fn rbac(token_reviews: bool) -> Vec<Value> {
    let mut objects = control_plane_rbac();
    if !token_reviews {
        without_rule(&mut objects[0], "tokenreviews");
    }
    objects
}

/// A cluster with namespaces `weft-system` and `shop`, ServiceAccounts
/// `shop/reviews` and `shop/ratings`, a Pod of each (`reviews-0`,
/// `ratings-0`) and the control plane's account and RBAC (`rbac` picks
/// which objects of [`rbac`] to create).
async fn cluster(rbac_objects: Vec<Value>) -> (KubeFake, PathBuf) {
    let fake = KubeFake::start().await;
    fake.create_namespace("weft-system", json!({})).await;
    fake.create_namespace("shop", json!({})).await;
    fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "weft-control-plane", "namespace": "weft-system"}}))
        .await;
    for sa in ["reviews", "ratings"] {
        fake.create(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": "shop"}}))
            .await;
        pod(&fake, &format!("{sa}-0"), sa).await;
    }
    for o in rbac_objects {
        fake.create(o).await;
    }
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    (fake, kubeconfig)
}

async fn pod(fake: &KubeFake, name: &str, sa: &str) {
    fake.create(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "annotations": {"weft.dev/injected": "proxy"}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": sa}]}}))
        .await;
}

/// The CA as the `weft-ca` Secret holds it.
async fn ca_from_secret(fake: &KubeFake) -> (CertificateAuthority, Value) {
    let secret = fake
        .get("v1", "Secret", Some("weft-system"), "weft-ca")
        .await
        .expect("the weft-ca Secret");
    let field = |k: &str| {
        let b64 = secret["data"][k].as_str().unwrap_or_else(|| panic!("{k}"));
        String::from_utf8(b64_decode(b64).unwrap()).unwrap()
    };
    let ca = CertificateAuthority::from_pem(&field("ca.pem"), &field("ca-key.pem")).unwrap();
    (ca, secret)
}

/// Waits for ConfigMap `weft-ca-root` and writes its `ca.pem` where the
/// sidecars' `--control-plane-ca` points: how a sidecar gets the root.
async fn fetch_trust_bundle(fake: &KubeFake, cp: &ControlPlane) -> String {
    let path = fake.path_of("v1", "ConfigMap", Some("weft-system"), Some("weft-ca-root"));
    let pem = eventually(
        "the control plane publishes weft-ca-root",
        LIMIT,
        || async {
            let (code, cm) = fake.request("GET", &path, None).await;
            (code == 200).then(|| cm["data"]["ca.pem"].as_str().map(String::from))?
        },
    )
    .await;
    std::fs::write(cp.ca_file(), &pem).unwrap();
    pem
}

/// A control plane with its CA in the cluster, serving.
async fn control_plane(fake: &KubeFake, kubeconfig: &Path, args: &[&str]) -> ControlPlane {
    let cp = ControlPlane::start_kubernetes_ca_secret(kubeconfig, args, SERVING);
    fetch_trust_bundle(fake, &cp).await;
    cp
}

/// A sidecar of `shop/<sa>` in mesh mode proving itself with `token_file`.
fn sidecar(cp: &ControlPlane, sa: &str, token_file: &Path, app: SocketAddr) -> Proxy {
    token_sidecar(&cp.url(), &cp.ca_file(), sa, token_file, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projected_token_gets_the_sidecar_exactly_its_service_account_identity() {
    let (fake, kubeconfig) = cluster(rbac(true)).await;
    let cp = control_plane(&fake, &kubeconfig, &[]).await;
    let (ca, _) = ca_from_secret(&fake).await;
    let status = cp.admin_json("/config").await;
    assert_eq!(
        status["kubernetes"]["ca"], "Secret weft-system/weft-ca (Created)",
        "{status}"
    );

    let dir = TempDir::new("token");
    let token_file = dir.path().join("token");
    let token = fake
        .service_account_token("shop", "reviews", &["weft"], HOUR, Some("reviews-0"))
        .unwrap();
    write_token(&token_file, &token);
    let app = Upstream::start("reviews-app").await;
    let proxy = sidecar(&cp, "reviews", &token_file, app.addr);
    eventually("the sidecar has its certificate", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(cp.metric("weft_cp_certificates_issued_total").await, 1.0);

    // Over mTLS to its inbound, as a peer of the mesh: it presents a
    // certificate from the Secret's CA naming exactly shop/reviews.
    let want = "spiffe://weft.local/ns/shop/sa/reviews";
    let me = weft_tests::mesh::identity(&ca, "spiffe://weft.local/ns/shop/sa/productpage");
    let config =
        weft_mesh::identity::client_config(&me, &ca.trust_bundle(), SpiffeId::parse(want).unwrap())
            .unwrap();
    let (status, answer, chain) = tls_http1(
        proxy.inbound,
        &config,
        "GET / HTTP/1.1\r\nHost: reviews.shop",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("reviews-app"), "{answer}");
    assert_eq!(uri_sans(&chain[0]), vec![want.to_string()]);
    assert_eq!(app.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_prove_nothing_and_csrs_for_another_account_are_refused() {
    let (fake, kubeconfig) = cluster(rbac(true)).await;
    let cp = control_plane(&fake, &kubeconfig, &[]).await;
    let (ca, _) = ca_from_secret(&fake).await;
    let trust = ca.trust_bundle();
    let reviews = "spiffe://weft.local/ns/shop/sa/reviews";
    let token = |aud: &str, pod: Option<&str>| {
        fake.service_account_token("shop", "reviews", &[aud], HOUR, pod)
            .unwrap()
    };

    // The control: a good token and a CSR for its own account.
    let (status, body) = ask_certificate(
        cp.listen,
        &trust,
        &token("weft", Some("reviews-0")),
        reviews,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let issued: CertificateResponse = serde_json::from_str(&body).unwrap();
    assert!(chains_to(&issued.chain, &ca));

    let refusals = [
        (
            "a token for another audience",
            token("https://kubernetes.default.svc", Some("reviews-0")),
            reviews,
            "audiences",
        ),
        (
            "an expired token",
            fake.service_account_token_issued_ago(
                "shop",
                "reviews",
                &["weft"],
                Duration::from_secs(600),
                Some("reviews-0"),
                HOUR,
            )
            .unwrap(),
            reviews,
            "expired",
        ),
        (
            "a token bound to no Pod",
            token("weft", None),
            reviews,
            "not bound to a Pod",
        ),
        (
            "a good token with a CSR for another account",
            token("weft", Some("reviews-0")),
            "spiffe://weft.local/ns/shop/sa/ratings",
            "cannot have a certificate for spiffe://weft.local/ns/shop/sa/ratings",
        ),
        (
            "a good token with a CSR for another namespace",
            token("weft", Some("reviews-0")),
            "spiffe://weft.local/ns/weft-system/sa/weft-control-plane",
            "cannot have a certificate",
        ),
        (
            "garbage",
            "not-a-token".to_string(),
            reviews,
            "invalid bearer token",
        ),
    ];
    for (what, token, csr_for, why) in &refusals {
        let (status, body) = ask_certificate(cp.listen, &trust, token, csr_for).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains(why), "{what}: {body}");
    }

    // A token whose Pod is deleted is refused from then on.
    pod(&fake, "reviews-1", "reviews").await;
    let bound = token("weft", Some("reviews-1"));
    let (status, body) = ask_certificate(cp.listen, &trust, &bound, reviews).await;
    assert_eq!(status, 200, "{body}");
    fake.delete("v1", "Pod", Some("shop"), "reviews-1").await;
    let (status, body) = ask_certificate(cp.listen, &trust, &bound, reviews).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("invalidated"), "{body}");

    assert_eq!(
        cp.metric("weft_cp_certificate_denials_total").await,
        refusals.len() as f64 + 1.0
    );
    assert_eq!(cp.metric("weft_cp_certificates_issued_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_starting_together_create_the_ca_secret_once() {
    let (fake, kubeconfig) = cluster(rbac(true)).await;
    let start = |kc: PathBuf| {
        tokio::task::spawn_blocking(move || {
            ControlPlane::start_kubernetes_ca_secret(&kc, &[], SERVING)
        })
    };
    let (a, b) = tokio::join!(start(kubeconfig.clone()), start(kubeconfig.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (ca, secret) = ca_from_secret(&fake).await;
    let origins: Vec<String> = [&a, &b]
        .iter()
        .map(|cp| {
            let logs = cp.logs();
            let line = logs
                .lines()
                .find(|l| l.contains("certificate authority ready"))
                .unwrap_or_else(|| panic!("{logs}"))
                .to_string();
            let v: Value = serde_json::from_str(&line).unwrap();
            v["origin"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    eprintln!("origins: {origins:?}");
    assert_eq!(
        origins.iter().filter(|o| *o == "Created").count(),
        1,
        "{origins:?}"
    );
    assert!(
        origins
            .iter()
            .all(|o| ["Created", "Loaded", "Raced"].contains(&o.as_str())),
        "{origins:?}"
    );
    // Created once: the Secret was never written again.
    assert_eq!(
        secret["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Both sign under that CA (and present serving certificates from it:
    // the client verifies them against the Secret's root).
    let trust = ca.trust_bundle();
    for (cp, pod_name) in [(&a, "reviews-0"), (&b, "ratings-0")] {
        fetch_trust_bundle(&fake, cp).await;
        let sa = pod_name.trim_end_matches("-0");
        let token = fake
            .service_account_token("shop", sa, &["weft"], HOUR, Some(pod_name))
            .unwrap();
        let id = format!("spiffe://weft.local/ns/shop/sa/{sa}");
        let (status, body) = ask_certificate(cp.listen, &trust, &token, &id).await;
        assert_eq!(status, 200, "{body}");
        let issued: CertificateResponse = serde_json::from_str(&body).unwrap();
        assert!(chains_to(&issued.chain, &ca), "{id}");
        assert_eq!(issued.roots, ca.cert_pem());
    }
    let again = fake
        .get("v1", "Secret", Some("weft-system"), "weft-ca")
        .await
        .unwrap();
    assert_eq!(again["metadata"]["uid"], secret["metadata"]["uid"]);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        secret["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_whose_certificate_expired_renews_with_the_replaced_token_file() {
    let (fake, kubeconfig) = cluster(rbac(true)).await;
    // Four-second certificates, renewed with the current one every 2-2.8 s.
    let mut cp = control_plane(&fake, &kubeconfig, &["--cert-ttl", "4s"]).await;
    let dir = TempDir::new("token");
    let token_file = dir.path().join("token");
    let unix_now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    // The first token lives three seconds.
    let first_expires = unix_now() + 3;
    let first = fake
        .service_account_token(
            "shop",
            "reviews",
            &["weft"],
            Duration::from_secs(3),
            Some("reviews-0"),
        )
        .unwrap();
    write_token(&token_file, &first);
    let app = Upstream::start("reviews-app").await;
    let proxy = sidecar(&cp, "reviews", &token_file, app.addr);
    eventually("the sidecar has its certificate", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    let expiry = || async {
        proxy
            .metric("weft_certificate_expiry_timestamp_seconds", &[])
            .await as u64
    };

    // The control plane goes away until the certificate and the first
    // token have both expired.
    cp.kill();
    let held = expiry().await;
    eventually(
        "the certificate and the first token expired",
        LIMIT,
        || async {
            let now = unix_now();
            let held = expiry().await;
            (now > held && now > first_expires).then_some(())
        },
    )
    .await;
    assert_eq!(expiry().await, held, "no renewal while it was away");

    // Back (the same CA, read from the Secret), while the file still holds
    // the expired token: refused.
    cp.restart();
    assert!(cp.logs().contains("\"origin\":\"Loaded\""), "{}", cp.logs());
    eventually(
        "the expired token is refused",
        Duration::from_secs(40),
        || async { (cp.metric("weft_cp_certificate_denials_total").await >= 1.0).then_some(()) },
    )
    .await;
    assert!(cp.logs().contains("has expired"), "{}", cp.logs());

    // The kubelet rotates the file: the next try reads the new token.
    let second = fake
        .service_account_token("shop", "reviews", &["weft"], HOUR, Some("reviews-0"))
        .unwrap();
    write_token(&token_file, &second);
    eventually(
        "renewed with the new token",
        Duration::from_secs(40),
        || async { (expiry().await > held).then_some(()) },
    )
    .await;
    assert!(
        cp.metric("weft_cp_certificates_issued_total").await >= 1.0,
        "{}",
        cp.logs()
    );
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named_on_the_log_and_the_admin_page() {
    // The Role is not bound (the CA Secret can be neither read nor
    // created) and the ClusterRole lacks TokenReviews.
    let mut objects = rbac(false);
    let binding = objects.pop().unwrap();
    let (fake, kubeconfig) = cluster(objects).await;
    let cp =
        ControlPlane::start_kubernetes_ca_secret(&kubeconfig, &[], "waiting for the CA Secret");
    let missing = || async {
        let status = cp.admin_json("/config").await;
        status["kubernetes"]["missing_permissions"]
            .as_object()
            .cloned()
            .unwrap_or_else(|| panic!("{status}"))
    };
    let get_secrets = "get secrets in namespace weft-system";
    eventually("the refusal is named on the admin page", LIMIT, || async {
        missing().await.get(get_secrets).map(|m| m.to_string())
    })
    .await;
    assert!(
        cp.logs()
            .contains("forbidden to get secrets in namespace weft-system"),
        "{}",
        cp.logs()
    );
    let ready = || async {
        get(&format!("http://{}/ready", cp.admin), &[])
            .await
            .unwrap()
            .status
    };
    assert_eq!(ready().await, 503);

    fake.create(binding).await;
    let line = eventually("serving once the Role is bound", LIMIT, || async {
        cp.logs()
            .lines()
            .find(|l| l.contains(SERVING))
            .map(String::from)
    })
    .await;
    let listen: SocketAddr = serde_json::from_str::<Value>(&line).unwrap()["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually("ready on the same admin address", LIMIT, || async {
        (ready().await == 200).then_some(())
    })
    .await;
    assert!(missing().await.is_empty(), "{:?}", missing().await);
    fetch_trust_bundle(&fake, &cp).await;
    let (ca, _) = ca_from_secret(&fake).await;

    // No TokenReview permission: the sidecar is told to retry (503), with
    // the permission named, and the admin page shows it.
    let token = fake
        .service_account_token("shop", "reviews", &["weft"], HOUR, Some("reviews-0"))
        .unwrap();
    let reviews = "spiffe://weft.local/ns/shop/sa/reviews";
    let (status, body) = ask_certificate(listen, &ca.trust_bundle(), &token, reviews).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("tokenreviews.authentication.k8s.io"),
        "{body}"
    );
    let named = "create tokenreviews.authentication.k8s.io (cluster-wide)";
    assert!(missing().await.contains_key(named), "{:?}", missing().await);

    let mut rules = rbac(true)[0]["rules"].clone();
    rules.as_array_mut().unwrap().sort_by_key(|r| r.to_string());
    fake.merge_patch(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        None,
        "weft-control-plane",
        None,
        json!({ "rules": rules }),
    )
    .await;
    let (status, body) = ask_certificate(listen, &ca.trust_bundle(), &token, reviews).await;
    assert_eq!(status, 200, "{body}");
    assert!(missing().await.is_empty(), "{:?}", missing().await);
}

#[test]
fn both_tokens_at_once_or_no_ca_outside_kubernetes_is_a_clear_error() {
    let out = std::process::Command::new(proxy_bin())
        .args(["run", "--control-plane", "https://127.0.0.1:1"])
        .args(["--control-plane-ca", "/nonexistent/ca.pem"])
        .args(["--bootstrap-token", "weft1:x", "--token-file", "/dev/null"])
        .args(["--admin", "127.0.0.1:0", "--inbound", "127.0.0.1:0"])
        .args(["--outbound", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--bootstrap-token and --token-file are exclusive"),
        "{err}"
    );

    let dir = TempDir::new("cp");
    let config = dir.path().join("mesh.yaml");
    std::fs::write(&config, "").unwrap();
    let out = std::process::Command::new(weft_tests::control_plane::control_plane_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--ca-dir is required without --kubernetes"),
        "{err}"
    );
}
