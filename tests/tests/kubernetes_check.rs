//! `weft-control-plane check` against the fake API server, with the real
//! binaries: a healthy install (the objects the chart creates, a real
//! control plane that made its CA Secret, real sidecars connected under
//! their pod names, a route it accepted) passes every line with exit code
//! 0; a broken one (a CRD missing, the Deployment 0/2 ready, empty
//! caBundles, a webhook nobody serves, a CA 9 days from expiry, an RBAC
//! permission taken away, a meshed pod whose proxy is not connected, an
//! HTTPRoute whose backend does not exist, a TrafficPolicy the mesh
//! refuses) prints exactly those ✗ lines and exits 1. A sidecar stopped
//! while its config changes is reported behind (acked vs current) until it
//! resumes and catches up.
//!
//! The fake forwards the service and pod `proxy` subresources to the
//! addresses routed here: the control plane's admin endpoint for its Pod
//! (`KubeFake::route_proxy`), and the Service to the control plane's real
//! injection webhook (`serve --webhook`, `KubeFake::route_service`), whose
//! caBundles the control plane fills in itself. The check's dry-run review
//! reaches that webhook and is answered allowed without a patch; every
//! distinct `clientConfig` is tried once, and a webhook that is not Weft's
//! (another uid in its answer) or not there is named.

use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_tests::kube_cluster::{
    control_plane_rbac, install_control_plane_account_with, write_token, CONTROL_PLANE, RBAC_RULES,
};
use weft_tests::kube_fake::{b64_decode, KubeFake};
use weft_tests::kube_install::*;
use weft_tests::route_status::{condition, route_status};
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const GATEWAY: &str = "gateway.networking.k8s.io/v1";

/// The CA as Secret `weft-ca` holds it, once the control plane made it;
/// its root is written where the sidecars' `--control-plane-ca` points.
async fn ca_from_secret(fake: &KubeFake, cp: &ControlPlane) -> (CertificateAuthority, String) {
    let secret = eventually("the control plane creates weft-ca", LIMIT, || async {
        fake.get("v1", "Secret", Some(NS), "weft-ca").await
    })
    .await;
    let field = |k: &str| {
        String::from_utf8(b64_decode(secret["data"][k].as_str().unwrap()).unwrap()).unwrap()
    };
    let (cert, key) = (field("ca.pem"), field("ca-key.pem"));
    std::fs::write(cp.ca_file(), &cert).unwrap();
    (CertificateAuthority::from_pem(&cert, &key).unwrap(), cert)
}

/// A real sidecar of meshed pod `shop/<pod>` (account `sa`), named as the
/// injector names it (`--proxy-name` = the pod's name), proving itself
/// with a token bound to the pod.
async fn sidecar(
    fake: &KubeFake,
    cp: &ControlPlane,
    dir: &TempDir,
    pod: &str,
    sa: &str,
) -> (Proxy, Upstream) {
    let token_file = dir.path().join(format!("{pod}.token"));
    let token = fake
        .service_account_token("shop", sa, &["weft"], Duration::from_secs(3600), Some(pod))
        .unwrap();
    write_token(&token_file, &token);
    let app = Upstream::start(sa).await;
    let mut b = Proxy::builder("").no_config().app(app.addr);
    for a in [
        "--control-plane",
        &cp.url(),
        "--control-plane-ca",
        &cp.ca_file().display().to_string(),
        "--namespace",
        "shop",
        "--service",
        sa,
        "--service-account",
        sa,
        "--token-file",
        &token_file.display().to_string(),
        "--proxy-name",
        pod,
    ] {
        b = b.arg(a);
    }
    (b.start(), app)
}

/// Waits until the control plane lists `names` as connected and acked.
async fn connected(cp: &ControlPlane, names: &[&str]) {
    eventually(
        "the sidecars are connected and up to date",
        LIMIT,
        || async {
            let proxies = cp.admin_json("/proxies").await;
            let all = names.iter().all(|n| {
                proxies.as_array().unwrap().iter().any(|p| {
                    p["name"] == *n
                        && p["namespace"] == "shop"
                        && p["acked"].is_string()
                        && p["acked"] == p["current"]
                })
            });
            all.then_some(())
        },
    )
    .await;
}

/// Runs `weft-control-plane check` as the cluster admin: (exit code, lines).
async fn check(fake: &KubeFake, args: &[&str]) -> (i32, Vec<String>) {
    let kubeconfig = fake.admin_kubeconfig();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(weft_tests::control_plane::control_plane_bin())
            .arg("check")
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("WEFT_NAMESPACE")
            .output()
            .expect("run check")
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "check wrote to stderr: {stderr}");
    (
        out.status.code().unwrap_or(-1),
        text.lines().map(str::to_string).collect(),
    )
}

/// How many permissions the RBAC definition names (rule × group ×
/// resource × verb × name).
fn permission_count() -> usize {
    let rules: Value = serde_saphyr::from_str(RBAC_RULES).unwrap();
    let len = |v: &Value| v.as_array().map_or(0, Vec::len);
    ["cluster", "namespace"]
        .iter()
        .flat_map(|s| rules[s].as_array().unwrap().iter())
        .map(|r| {
            len(&r["apiGroups"])
                * len(&r["resources"])
                * len(&r["verbs"])
                * len(&r["resourceNames"]).max(1)
        })
        .sum()
}

/// `YYYY-MM-DD` of a certificate's notAfter.
fn not_after(pem: &str) -> String {
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    let der: rustls::pki_types::CertificateDer = der;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.validity().not_after.to_datetime().date().to_string()
}

/// A CA certificate and key whose root expires at the end of the UTC day
/// `days` from today, and that date.
fn ca_expiring(days: u64) -> (String, String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Weft mesh CA weft.local");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    let today = now.duration_since(UNIX_EPOCH).unwrap().as_secs() / 86_400;
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (UNIX_EPOCH + Duration::from_secs((today + days + 1) * 86_400)).into();
    let cert = params.self_signed(&key).unwrap();
    (
        cert.pem(),
        key.serialize_pem(),
        params.not_after.date().to_string(),
    )
}

/// A healthy install, as the chart and its controllers leave it, with two
/// meshed pods whose sidecars are connected and an accepted route.
struct Healthy {
    fake: KubeFake,
    cp: ControlPlane,
    root: String,
    ca: CertificateAuthority,
    /// The sidecars of `shop/reviews-7f9c-x2x4q` and `shop/ratings-0`
    /// (each with its app).
    sidecars: Vec<(Proxy, Upstream)>,
    _dir: TempDir,
}

const REVIEWS_POD: &str = "reviews-7f9c-x2x4q";

async fn healthy() -> Healthy {
    let fake = KubeFake::builder().weft_crds().start().await;
    install_control_plane_account_with(&fake, &["shop"], control_plane_rbac()).await;
    fake.create(cp_service()).await;
    deployment(&fake, 2).await;
    for (pod, sa) in [(REVIEWS_POD, "reviews"), ("ratings-0", "ratings")] {
        meshed_pod(&fake, pod, sa).await;
    }
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 9080}]}}))
        .await;
    fake.create(json!({"apiVersion": GATEWAY, "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
            "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]}}))
        .await;

    // As the chart leaves it: the caBundles empty until the control plane
    // fills them in.
    fake.create(webhook_configuration("")).await;

    let kubeconfig = fake.service_account_kubeconfig(CONTROL_PLANE.0, CONTROL_PLANE.1);
    let cp = injector_control_plane(&fake, &kubeconfig, &[]);
    let (ca, root) = ca_from_secret(&fake, &cp).await;
    control_plane_pod(&fake, cp.admin).await;
    wait_bundles(&fake, &root).await;

    let dir = TempDir::new("check");
    let sidecars = vec![
        sidecar(&fake, &cp, &dir, REVIEWS_POD, "reviews").await,
        sidecar(&fake, &cp, &dir, "ratings-0", "ratings").await,
    ];
    connected(&cp, &[REVIEWS_POD, "ratings-0"]).await;
    route_status(&fake, "HTTPRoute", "shop", "reviews", "accepted", |p| {
        condition(&p["conditions"], "ResolvedRefs")["status"] == "True"
    })
    .await;
    Healthy {
        fake,
        cp,
        root,
        ca,
        sidecars,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_install_passes_every_check() {
    let Healthy { fake, cp, root, .. } = &healthy().await;
    let (code, lines) = check(fake, &[]).await;
    let all = lines.join("\n");
    let until = not_after(root);
    let url = fake.url().trim_end_matches('/').to_string();
    let want_exact = [
        format!("✓ Kubernetes API at {url} reachable, Kubernetes v1.36.2 (supported: 1.30 to 1.36)"),
        "✓ CRDs installed and established: 4 weft.dev (schema as this binary's), HTTPRoute and GRPCRoute v1, ReferenceGrant v1beta1".into(),
        "✓ control plane Deployment weft-system/weft-control-plane ready: 2/2 replicas".into(),
        format!("✓ MutatingWebhookConfiguration weft-sidecar-injector: 2 webhooks, each caBundle the mesh CA root (valid until {until})"),
        "✓ injection webhook https://weft-control-plane.weft-system.svc:15017/inject reachable: a dry-run AdmissionReview came back answered (allowed, no patch)".into(),
        format!("✓ ServiceAccount weft-system/weft-control-plane permissions: all {} of its RBAC rules' permissions granted", permission_count()),
        "✓ all 2 meshed pods' proxies connected and up to date".into(),
        "✓ no route or Weft resource with a failing condition (1 checked)".into(),
    ];
    for want in &want_exact {
        assert!(lines.contains(want), "missing line {want:?} in:\n{all}");
    }
    let ca_line = format!(
        "✓ CA Secret weft-system/weft-ca: a CA certificate matching its key, valid until {until} ("
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&ca_line)),
        "no {ca_line:?} in:\n{all}"
    );
    assert_eq!(lines.len(), want_exact.len() + 1, "{all}");
    assert_eq!(code, 0, "{all}");
    // The real webhook got the one dry-run review and let it through
    // unchanged (the Pod is labelled weft.dev/inject=disabled).
    assert_eq!(cp.metric("weft_cp_injection_skips_total").await, 1.0);
    assert_eq!(cp.metric("weft_cp_injections_total").await, 0.0);
    assert_eq!(cp.metric("weft_cp_injection_denials_total").await, 0.0);

    // The same findings as one JSON document.
    let (code, json_lines) = check(fake, &["--output", "json"]).await;
    assert_eq!(code, 0);
    assert_eq!(json_lines.len(), 1, "{json_lines:?}");
    let doc: Value = serde_json::from_str(&json_lines[0]).unwrap();
    assert_eq!(doc["ok"], true);
    let checks = doc["checks"].as_array().unwrap();
    assert_eq!(checks.len(), lines.len());
    assert_eq!(
        checks[2],
        json!({"check": "deployment", "ok": true,
        "what": "control plane Deployment weft-system/weft-control-plane ready: 2/2 replicas"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_distinct_webhook_endpoint_is_tried_once_and_each_bad_one_named() {
    let Healthy {
        fake, cp, root, ca, ..
    } = &healthy().await;
    // Three more webhooks: one to the same Service as the first two, one
    // to a Service that does not exist, one to a URL served by something
    // that is not Weft's injector (its answer carries another uid). Their
    // caBundles are left for the control plane to fill in.
    let stranger = wrong_uid_webhook(ca).await;
    let url = format!("https://localhost:{}/inject", stranger.port());
    let mut config = configuration(fake).await;
    let first = config["webhooks"][0].clone();
    let extra = |name: &str, client: Value| {
        let mut hook = first.clone();
        hook["name"] = name.into();
        hook["clientConfig"] = client;
        hook
    };
    let hooks = config["webhooks"].as_array_mut().unwrap();
    hooks.push(extra(
        "again.inject.weft.dev",
        json!({"service": {"namespace": NS, "name": CP, "port": 15017, "path": "/inject"}}),
    ));
    hooks.push(extra(
        "old.inject.weft.dev",
        json!({"service": {"namespace": NS, "name": "weft-injector-old", "port": 443, "path": "/inject"}}),
    ));
    hooks.push(extra("url.inject.weft.dev", json!({"url": url})));
    fake.replace(config).await;
    wait_bundles(fake, root).await;

    let (code, lines) = check(fake, &[]).await;
    let all = lines.join("\n");
    let webhook_lines: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("webhook"))
        .map(String::as_str)
        .collect();
    let until = not_after(root);
    let want = [
        format!("✓ MutatingWebhookConfiguration weft-sidecar-injector: 5 webhooks, each caBundle the mesh CA root (valid until {until})"),
        "✓ injection webhook https://weft-control-plane.weft-system.svc:15017/inject reachable: a dry-run AdmissionReview came back answered (allowed, no patch)".into(),
        "✗ injection webhook https://weft-injector-old.weft-system.svc:443/inject: Service weft-system/weft-injector-old not found — fix: helm upgrade --install weft charts/weft -n weft-system".into(),
        format!("✗ injection webhook {url}: answered, but not the AdmissionReview sent (response.uid \"00000000-0000-0000-0000-000000000000\", sent \""),
    ];
    assert_eq!(webhook_lines.len(), want.len(), "{all}");
    for (got, want) in webhook_lines.iter().zip(&want) {
        assert!(
            got.starts_with(want.as_str()),
            "{got:?}\nis not {want:?}\nin:\n{all}"
        );
    }
    assert!(
        webhook_lines[3].ends_with("— fix: something other than Weft's injector answers there: check clientConfig of weft-sidecar-injector names the control plane's Service and see kubectl -n weft-system logs deployment/weft-control-plane"),
        "{all}"
    );
    assert_eq!(code, 1, "{all}");
    // Three webhooks name the control plane's Service: one review reached it.
    assert_eq!(cp.metric("weft_cp_injection_skips_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_install_says_what_is_wrong_and_how_to_fix_it() {
    let fake = KubeFake::builder().weft_crds().start().await;
    // The MeshConfig CRD was never installed.
    let (code, body) = fake
        .request(
            "DELETE",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/meshconfigs.weft.dev",
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // The control plane may not patch its webhook configuration.
    let mut rbac = control_plane_rbac();
    for rule in rbac[0]["rules"].as_array_mut().unwrap() {
        if rule["resources"][0] == "mutatingwebhookconfigurations" {
            rule["verbs"] = json!(["get"]);
        }
    }
    install_control_plane_account_with(&fake, &["shop"], rbac).await;
    // A CA 9 days from expiry, made before the control plane starts.
    let (ca_pem, key_pem, expiry) = ca_expiring(9);
    fake.create(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "weft-ca", "namespace": NS},
        "stringData": {"ca.pem": ca_pem, "ca-key.pem": key_pem}}),
    )
    .await;
    fake.create(cp_service()).await;
    deployment(&fake, 0).await;
    meshed_pod(&fake, "reviews-0", "reviews").await;
    meshed_pod(&fake, "ratings-0", "ratings").await;
    fake.create(json!({"apiVersion": GATEWAY, "kind": "HTTPRoute",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}],
            "rules": [{"backendRefs": [{"name": "nope", "port": 9080}]}]}}))
        .await;
    fake.create(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 9080}]}}))
        .await;
    fake.create(webhook_configuration("")).await;
    // A TrafficPolicy the mesh refuses.
    fake.create(json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "legacy", "namespace": "shop"},
        "spec": {"port": 80, "endpoints": [{"address": "10.1.0.9:80"}]}}))
        .await;
    fake.create(
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Backend", "name": "legacy"}, "panicThreshold": 150}}),
    )
    .await;

    let kubeconfig = fake.service_account_kubeconfig(CONTROL_PLANE.0, CONTROL_PLANE.1);
    let cp = ControlPlane::start_kubernetes_ca_secret(&kubeconfig, &[], SERVING);
    std::fs::write(cp.ca_file(), &ca_pem).unwrap();
    control_plane_pod(&fake, cp.admin).await;
    let dir = TempDir::new("check");
    let _reviews = sidecar(&fake, &cp, &dir, "reviews-0", "reviews").await;
    connected(&cp, &["reviews-0"]).await;
    let ours = route_status(
        &fake,
        "HTTPRoute",
        "shop",
        "broken",
        "refs unresolved",
        |p| condition(&p["conditions"], "ResolvedRefs")["status"] == "False",
    )
    .await;
    let refs = condition(&ours["conditions"], "ResolvedRefs");
    let policy = eventually("the TrafficPolicy's Ready False", LIMIT, || async {
        let p = fake
            .get("weft.dev/v1alpha1", "TrafficPolicy", Some("shop"), "broken")
            .await?;
        let ready = condition(&p["status"]["conditions"], "Ready");
        (ready["status"] == "False").then_some(ready)
    })
    .await;

    let (code, lines) = check(&fake, &[]).await;
    let all = lines.join("\n");
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with('✗'))
        .map(String::as_str)
        .collect();
    let refill = "the control plane sets it at start and keeps it current: check it runs and may patch the configuration (kubectl -n weft-system logs deployment/weft-control-plane)";
    let want = [
        "✗ CRD meshconfigs.weft.dev: not installed — fix: weft-control-plane crds | kubectl apply --server-side -f - (helm upgrade does not update CRDs)".to_string(),
        "✗ control plane Deployment weft-system/weft-control-plane: 0/2 replicas ready: the mesh has no control plane — fix: see why: kubectl -n weft-system describe deployment weft-control-plane; kubectl -n weft-system logs deployment/weft-control-plane".into(),
        format!("✗ webhook namespace.inject.weft.dev (weft-sidecar-injector): caBundle is empty — fix: {refill}"),
        format!("✗ webhook pod.inject.weft.dev (weft-sidecar-injector): caBundle is empty — fix: {refill}"),
        "✗ injection webhook https://weft-control-plane.weft-system.svc:15017/inject: not reachable through the API server: 503 ServiceUnavailable: no endpoints available for service \"weft-control-plane\" — fix: check the control plane's pods are ready and serve the webhook (serve --webhook 0.0.0.0:15017): kubectl -n weft-system get endpointslices -l kubernetes.io/service-name=weft-control-plane; kubectl -n weft-system logs deployment/weft-control-plane".into(),
        format!("✗ CA Secret weft-system/weft-ca: ca.pem expires in 9 days ({expiry}), within 30 — fix: replace the mesh CA: kubectl -n weft-system delete secret weft-ca; kubectl -n weft-system rollout restart deployment/weft-control-plane; then restart meshed workloads"),
        format!("✗ ServiceAccount weft-system/weft-control-plane permissions: 1 of {} missing: patch mutatingwebhookconfigurations.admissionregistration.k8s.io/weft-sidecar-injector — fix: restore the chart's ClusterRole and Role: helm upgrade weft charts/weft -n weft-system", permission_count()),
        "✗ proxy of pod shop/ratings-0: not connected to the control plane — fix: see its log: kubectl -n shop logs ratings-0 -c weft-proxy; restart the pod if it stays so".into(),
        format!("✗ HTTPRoute shop/broken: ResolvedRefs False (BackendNotFound): {} — fix: create the Service its backendRefs name, or correct them: kubectl -n shop edit httproute broken", refs["message"].as_str().unwrap()),
        format!("✗ TrafficPolicy shop/broken: Ready False ({}): {} — fix: correct it: kubectl -n shop edit trafficpolicy broken", policy["reason"].as_str().unwrap(), policy["message"].as_str().unwrap()),
    ];
    assert_eq!(refs["reason"], "BackendNotFound");
    assert_eq!(
        failed,
        want.iter().map(String::as_str).collect::<Vec<_>>(),
        "\n{all}"
    );
    assert!(lines[0].starts_with("✓ Kubernetes API at "), "{all}");
    assert_eq!(code, 1, "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_one_line_and_nothing_else_runs() {
    let fake = KubeFake::start().await;
    let url = fake.url().trim_end_matches('/').to_string();
    fake.stop().await;
    let (code, lines) = check(&fake, &[]).await;
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let start = format!("✗ Kubernetes API at {url}: not reachable: ");
    let fix = " — fix: check the current context (kubectl config current-context; kubectl version) and KUBECONFIG";
    assert!(
        lines[0].starts_with(&start) && lines[0].ends_with(fix),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_behind_on_its_config_is_reported_until_it_catches_up() {
    let h = healthy().await;
    let (fake, cp) = (&h.fake, &h.cp);
    let reviews = &h.sidecars[0].0;
    // The sidecar stops (as a stuck process would), then its inbound
    // policy changes: the control plane sends a snapshot nobody acknowledges.
    reviews.signal(libc::SIGSTOP);
    fake.create(
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Service", "name": "reviews"}, "action": "Allow",
            "rules": [{"from": {"namespaces": ["shop"]}}]}}),
    )
    .await;
    let (acked, current) = eventually("the sidecar is behind", LIMIT, || async {
        let proxies = cp.admin_json("/proxies").await;
        let p = proxies
            .as_array()?
            .iter()
            .find(|p| p["name"] == REVIEWS_POD)?
            .clone();
        let (acked, current) = (p["acked"].as_str()?, p["current"].as_str()?);
        (acked != current).then(|| (acked.to_string(), current.to_string()))
    })
    .await;

    let (code, lines) = check(fake, &[]).await;
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with('✗')).collect();
    let want = format!(
        "✗ proxy of pod shop/{REVIEWS_POD}: connected to {CP_POD}, acknowledged config {acked} but the current one is {current} — fix: see its log: kubectl -n shop logs {REVIEWS_POD} -c weft-proxy; restart the pod if it stays so"
    );
    assert_eq!(failed, vec![&want], "{lines:#?}");
    assert_eq!(code, 1);

    // Resumed, it catches up, and the check passes again.
    reviews.signal(libc::SIGCONT);
    connected(cp, &[REVIEWS_POD, "ratings-0"]).await;
    let (code, lines) = check(fake, &[]).await;
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.contains(&"✓ all 2 meshed pods' proxies connected and up to date".to_string()),
        "{lines:#?}"
    );
}
