//! The fake Kubernetes API server against the recordings of a real one.
//!
//! Every exchange in `tests/fixtures/k8s/` (recorded from kube-apiserver
//! v1.36.2) is replayed against a fresh fake, one fake per folder, in the
//! order the recorder made them (they build on each other; a folder that
//! relied on objects from another first replays those, its "prelude").
//! Each answer must match the recorded one in status code, content type
//! and body shape (`kube_fake::replay`); watches are compared event by
//! event. What is not replayed, and why, is listed in `NOT_REPLAYED` and in
//! `src/kube_fake/README.md`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_tests::kube_fake::replay::shape_diff;
use weft_tests::kube_fake::replayer::{fixture, folder_files, During, Replay};

/// Fixtures that are not sent to the fake, with the reason.
const NOT_REPLAYED: &[(&str, &str)] = &[
    ("watch/endpointslices-03-watch-send-initial-events", "recorded failure of the WatchList path on etcd 3.4; the fake serves a working streaming list"),
    ("watch/endpointslices-04-watch-no-resourceversion", "same etcd 3.4 failure; the fake behaves as 04b (WatchList=false) does"),
    ("watch/endpointslices-05-watch-resourceversion-0", "same etcd 3.4 failure; the fake behaves as 05b does"),
    ("watch/gone-01-etcd-compaction", "no request: an etcd compaction, which the fake has no counterpart for"),
    ("errors/201-unknown-field-default-warning", "unknown-field detection needs the OpenAPI schemas, which the fake does not have"),
    ("errors/400-unknown-field-strict", "unknown-field detection needs the OpenAPI schemas, which the fake does not have"),
];

const SHOP: &[&str] = &[
    "watch/00-setup-create-namespace-shop",
    "watch/00-setup-create-service-reviews",
    "watch/00-setup-create-service-details",
    "watch/00-setup-create-endpointslice-reviews",
    "watch/00-setup-create-endpointslice-details",
    "watch/00-setup-create-httproute-reviews",
];

async fn prelude(r: &mut Replay, files: &[&str]) -> usize {
    for f in files {
        r.send(f).await;
    }
    files.len()
}

#[tokio::test]
async fn discovery_matches_the_recordings() {
    let mut r = Replay::new().await;
    for f in folder_files("discovery") {
        r.send(&f).await;
    }
    r.finish("discovery", 0, NOT_REPLAYED);
}

#[tokio::test]
async fn list_and_watch_match_the_recordings() {
    let mut r = Replay::new().await;
    for f in SHOP {
        r.send(f).await;
    }
    for f in [
        "01-list",
        "01b-list-limit1",
        "01c-list-continue",
        "01e-list-by-service-label",
    ] {
        r.send(&format!("watch/endpointslices-{f}")).await;
    }
    r.send("watch/services-01-list").await;
    r.send("watch/httproutes-01-list").await;
    r.watch(
        "watch/endpointslices-02-watch",
        3,
        During::Fixtures(&[
            "watch/endpointslices-02a-create",
            "watch/endpointslices-02b-update-put",
            "watch/endpointslices-02c-delete",
        ]),
    )
    .await;
    r.watch(
        "watch/services-02-watch",
        3,
        During::Fixtures(&[
            "watch/services-02a-create",
            "watch/services-02b-update-merge-patch",
            "watch/services-02c-delete",
        ]),
    )
    .await;
    r.watch(
        "watch/httproutes-02-watch",
        3,
        During::Fixtures(&[
            "watch/httproutes-02a-create",
            "watch/httproutes-02b-update-json-patch",
            "watch/httproutes-02c-delete",
        ]),
    )
    .await;
    r.send("watch/gone-00-list-exact-old-rv-before-compaction")
        .await;
    r.watch(
        "watch/gone-02-watch-old-rv-after-compaction",
        2,
        During::Nothing,
    )
    .await;
    for f in [
        "03-list-exact-old-rv-after-compaction",
        "04-list-notolderthan-old-rv-after-compaction",
        "05-list-old-rv-no-match-after-compaction",
        "06-list-continue-token-after-compaction",
    ] {
        r.send(&format!("watch/gone-{f}")).await;
    }
    r.watch("watch/gone-07-watch-rv-2", 2, During::Nothing)
        .await;
    r.watch("watch/gone-08-watch-future-rv", 2, During::Nothing)
        .await;
    r.send("watch/gone-09-list-future-rv").await;
    // The churn the recorder made between gone-09 and gone-10: one
    // throwaway slice created, merge-patched 150 times and deleted.
    let churn = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "churn", "namespace": "shop"}, "addressType": "IPv4", "endpoints": [], "ports": []});
    r.fake.create(churn).await;
    for i in 0..150 {
        r.fake
            .merge_patch(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some("shop"),
                "churn",
                None,
                json!({"metadata": {"labels": {"n": i.to_string()}}}),
            )
            .await;
    }
    assert!(
        r.fake
            .delete(
                "discovery.k8s.io/v1",
                "EndpointSlice",
                Some("shop"),
                "churn"
            )
            .await
    );
    r.watch("watch/gone-10-watch-old-rv-after-churn", 2, During::Nothing)
        .await;
    for f in [
        "11-list-exact-old-rv-after-churn",
        "12-list-continue-token-after-churn",
        "13-list-notolderthan-old-rv-after-churn",
    ] {
        r.send(&format!("watch/gone-{f}")).await;
    }
    r.send("watch/endpointslices-01d-list-rv0-limit500").await;
    // 04b and 05b come from a second, fresh apiserver holding two slices
    // (recreated here from the recorded ADDED events), where one slice got
    // a label while the watch was open.
    for f in [
        "04b-watch-no-resourceversion-watchlist-disabled",
        "05b-watch-resourceversion-0-watchlist-disabled",
    ] {
        let rel = format!("watch/endpointslices-{f}");
        let mut second = Replay::new().await;
        second.fake.create_namespace("shop", json!({})).await;
        let mut added: Vec<Value> = fixture(&rel)["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .filter(|e| e["type"] == "ADDED")
            .map(|e| e["object"].clone())
            .collect();
        added.sort_by_key(|o| {
            o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .parse::<u64>()
                .unwrap_or(0)
        });
        for mut o in added {
            let m = o["metadata"].as_object_mut().unwrap();
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                m.remove(k);
            }
            second.fake.create(o).await;
        }
        second
            .watch(&rel, 3, During::LabelPatch("reviews-8m2qz"))
            .await;
        r.failures.append(&mut second.failures);
        r.replayed.append(&mut second.replayed);
    }
    r.finish("watch", 0, NOT_REPLAYED);
}

#[tokio::test]
async fn errors_match_the_recordings() {
    let mut r = Replay::new().await;
    let mut n = prelude(&mut r, SHOP).await;
    n += prelude(
        &mut r,
        &[
            "auth/01-create-serviceaccount",
            "auth/02-create-pod",
            "auth/03-token-request-bound-to-pod",
            "auth/09-token-request-default-audience",
        ],
    )
    .await;
    for f in [
        "401-garbage-bearer-token",
        "401-sa-token-audience-weft-used-against-apiserver",
        "403-sa-token-without-rbac",
        "403-sa-token-without-rbac-watch",
        "201-selfsubjectreview-sa-token",
        "rbac-01-create-role",
        "rbac-02-create-rolebinding",
        "rbac-03-allowed-list-after-binding",
        "403-sa-get-not-granted",
        "403-sa-cluster-wide-list",
        "200-list-in-missing-namespace",
        "404-delete-missing-endpointslice",
        "404-get-in-missing-namespace",
        "404-get-missing-httproute",
        "404-get-missing-service",
        "404-unknown-resource-in-known-group",
        "422-invalid-service",
        "405-post-to-named-object",
        "409-create-existing-service",
        "415-strategic-merge-patch-on-custom-resource",
        "400-invalid-label-selector",
        "400-malformed-json-body",
        "400-namespace-mismatch",
        "422-endpoints-v1-address-127-0-0-1",
        "422-endpointslice-address-127-0-0-1",
        "422-endpointslice-address-169-254-10-10",
        "422-endpointslice-address-__1",
        "422-service-clusterip-outside-range",
    ] {
        r.send(&format!("errors/{f}")).await;
    }
    // The recorder's setup for the namespace fixtures: a namespace holding
    // a ConfigMap.
    address_table(&mut r).await;
    r.fake.create_namespace("doomed", json!({})).await;
    r.fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "doomed"}})).await;
    for f in [
        "namespace-01-delete",
        "namespace-02-get-terminating",
        "namespace-03-create-in-terminating-namespace",
    ] {
        r.send(&format!("errors/{f}")).await;
    }
    r.finish("errors", n, NOT_REPLAYED);
}

#[tokio::test]
async fn leases_match_the_recordings() {
    let mut r = Replay::new().await;
    for f in folder_files("lease") {
        r.send(&f).await;
    }
    r.finish("lease", 0, NOT_REPLAYED);
}

#[tokio::test]
async fn status_writes_match_the_recordings() {
    let mut r = Replay::new().await;
    let n = prelude(&mut r, &SHOP[..1]).await;
    for f in folder_files("status") {
        r.send(&f).await;
    }
    r.finish("status", n, NOT_REPLAYED);
}

#[tokio::test]
async fn tokens_match_the_recordings() {
    let mut r = Replay::new().await;
    let mut n = prelude(&mut r, &SHOP[..1]).await;
    n += prelude(
        &mut r,
        &[
            SHOP[3],
            SHOP[4],
            "errors/rbac-01-create-role",
            "errors/rbac-02-create-rolebinding",
        ],
    )
    .await;
    for f in folder_files("auth") {
        if f.ends_with("jwt-decoded") {
            continue;
        }
        let resp = r.send(&f).await;
        if f.contains("token-request") {
            let token = resp.json()["status"]["token"]
                .as_str()
                .unwrap_or("")
                .to_string();
            r.token_shape(&format!("{f}.jwt-decoded"), &token);
        }
    }
    r.finish("auth", n, NOT_REPLAYED);
}

/// A mutating webhook on loopback that answers each AdmissionReview with
/// the recorded answer of the fixture being replayed (its uid replaced by
/// the request's, unless the recording deliberately got the uid wrong).
struct Webhook {
    url: String,
    ca_pem: String,
    answer: Arc<Mutex<Value>>,
    seen: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_webhook() -> Webhook {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/mutate", listener.local_addr().unwrap());
    let answer = Arc::new(Mutex::new(Value::Null));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (a, s) = (answer.clone(), seen.clone());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let (a, s) = (a.clone(), s.clone());
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (a, s) = (a.clone(), s.clone());
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let mut out = a.lock().unwrap().clone();
                        if out["response"]["uid"] != "00000000-0000-0000-0000-000000000000" {
                            out["response"]["uid"] = review["request"]["uid"].clone();
                        }
                        s.lock().unwrap().push(review);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(out.to_string()),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc),
            );
        }
    });
    Webhook {
        url,
        ca_pem: ca.pem(),
        answer,
        seen,
        task,
    }
}

#[tokio::test]
async fn admission_webhooks_match_the_recordings() {
    let mut r = Replay::new().await;
    let n = prelude(&mut r, &SHOP[..1]).await;
    let hook = start_webhook().await;
    r.send("admission/01-create-namespace-labelled").await;
    // The recorded configuration names the recorder's webhook; point it at
    // this one.
    let recorded = fixture("admission/02-create-mutatingwebhookconfiguration");
    let url = recorded["request"]["body"]["webhooks"][0]["clientConfig"]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = recorded["request"]["body"]["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .unwrap()
        .to_string();
    r.subs.insert(&url, &hook.url);
    r.subs
        .insert(&ca, &weft_tests::kube_fake::b64_std(hook.ca_pem.as_bytes()));
    r.send("admission/02-create-mutatingwebhookconfiguration")
        .await;
    let pairs = [
        ("03-client-create-pod", Some("04-webhook-exchange")),
        ("05-stored-pod-after-mutation", None),
        ("06-client-create-pod-unlabelled-namespace", None),
        (
            "07-client-create-pod-bad-patch",
            Some("07-webhook-exchange-bad-patch"),
        ),
        (
            "08-client-create-pod-patch-makes-pod-invalid",
            Some("08-webhook-exchange-patch-makes-pod-invalid"),
        ),
        (
            "09-client-create-pod-patch-not-base64",
            Some("09-webhook-exchange-patch-not-base64"),
        ),
        (
            "10-client-create-pod-wrong-uid",
            Some("10-webhook-exchange-wrong-uid"),
        ),
        (
            "11-client-create-pod-webhook-denies",
            Some("11-webhook-exchange-webhook-denies"),
        ),
    ];
    for (client, exchange) in pairs {
        let calls = hook.seen.lock().unwrap().len();
        if let Some(x) = exchange {
            *hook.answer.lock().unwrap() =
                fixture(&format!("admission/{x}"))["webhook_response"]["body"].clone();
        }
        r.send(&format!("admission/{client}")).await;
        let seen = hook.seen.lock().unwrap().clone();
        match exchange {
            Some(x) => {
                let ex = fixture(&format!("admission/{x}"));
                if seen.len() != calls + 1 {
                    r.fail(
                        client,
                        format!("webhook called {} times", seen.len() - calls),
                    );
                } else {
                    for d in shape_diff(&ex["webhook_request"]["body"], &seen[calls]) {
                        r.fail(x, format!("AdmissionReview sent to the webhook: {d}"));
                    }
                    r.replayed.push(format!("admission/{x}"));
                }
            }
            None if seen.len() != calls => r.fail(client, "the webhook was called".into()),
            None => {}
        }
    }
    for f in [
        "04-admissionreview-request.raw",
        "04-admissionreview-response.raw",
    ] {
        let raw = fixture(&format!("admission/{f}"));
        let sent = hook.seen.lock().unwrap()[0].clone();
        if f.ends_with("request.raw") {
            for d in shape_diff(&raw, &sent) {
                r.fail(f, d);
            }
        }
        r.replayed.push(format!("admission/{f}"));
    }
    hook.task.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.send("admission/12-client-create-pod-webhook-down-fail")
        .await;
    // The recorder switched the webhook to failurePolicy Ignore here.
    let mut patched = r
        .fake
        .get(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
            "weft-sidecar-injector",
        )
        .await
        .unwrap();
    patched["webhooks"][0]["failurePolicy"] = "Ignore".into();
    r.fake.replace(patched).await;
    for f in [
        "13-client-create-pod-webhook-down-ignore",
        "14-stored-pod-webhook-down-ignore",
        "15-delete-mutatingwebhookconfiguration",
    ] {
        r.send(&format!("admission/{f}")).await;
    }
    r.finish("admission", n, NOT_REPLAYED);
}

#[test]
fn the_comparison_can_fail() {
    // A wrong answer must not pass: a field missing, a type changed, a
    // list of another length.
    let rec = fixture("lease/02-get")["response"]["body"].clone();
    let mut wrong = rec.clone();
    wrong["spec"]["leaseDurationSeconds"] = "15".into();
    wrong["metadata"].as_object_mut().unwrap().remove("uid");
    wrong["metadata"]["managedFields"] = json!([]);
    assert_eq!(shape_diff(&rec, &wrong).len(), 3);
}

/// Every row of `errors/endpoint-address-validation-summary`: the same
/// object sent with `dryRun=All` gets the recorded status, and a refusal
/// the recorded message word for word.
async fn address_table(r: &mut Replay) {
    let rel = "errors/endpoint-address-validation-summary";
    let rows = fixture(rel)["results"].as_array().unwrap().clone();
    for (i, row) in rows.iter().enumerate() {
        let address = row["address"].as_str().unwrap_or("");
        let (path, obj) = if let Some(at) = row["addressType"].as_str() {
            (
                "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?dryRun=All",
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": format!("addr-test-{i}"), "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
                       "addressType": at, "ports": [{"name": "http", "protocol": "TCP", "port": 9080}],
                       "endpoints": [{"addresses": [address], "conditions": {"ready": true}}]}),
            )
        } else if row["resource"] == "v1 Endpoints" {
            (
                "/api/v1/namespaces/shop/endpoints?dryRun=All",
                json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "reviews-manual", "namespace": "shop"},
                       "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]}]}),
            )
        } else if row["field"] == "externalIPs" {
            (
                "/api/v1/namespaces/shop/services?dryRun=All",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extip-loopback", "namespace": "shop"},
                       "spec": {"ports": [{"port": 80}], "externalIPs": row["value"]}}),
            )
        } else {
            (
                "/api/v1/namespaces/shop/services?dryRun=All",
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("extname-{i}"), "namespace": "shop"},
                       "spec": {"type": "ExternalName", "externalName": row["value"]}}),
            )
        };
        let (code, body) = r.fake.request("POST", path, Some(&obj)).await;
        if code as u64 != row["status"].as_u64().unwrap_or(0) {
            r.fail(
                rel,
                format!(
                    "row {i} ({address}): status {code}, recorded {}",
                    row["status"]
                ),
            );
        } else if let Some(m) = row["message"].as_str() {
            if body["message"] != m {
                r.fail(
                    rel,
                    format!("row {i}: message {}, recorded {m:?}", body["message"]),
                );
            }
        }
    }
    r.replayed.push(rel.to_string());
}
