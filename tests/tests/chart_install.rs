//! The Helm chart created in the fake API server as `helm install` would:
//! `helm template weft charts/weft --namespace weft-system --include-crds`,
//! then every rendered object created over HTTPS in Helm's order (CRDs
//! first, waited for until Established), each kind looked up through
//! discovery as kubectl does (a kind the server does not serve is "no
//! matches for kind"), read back and compared with what was rendered, and
//! broken objects refused with the field path at fault.
//!
//! helm comes from `$WEFT_HELM`, `.tools/bin/` (`tests/chart/tools.sh`
//! installs it there) or `PATH`; without it the test says why it skips, and
//! fails under CI (`$CI` set). `$WEFT_CHART` renders another chart folder
//! instead of `charts/weft`.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weft_tests::kube_fake::{b64_std, Credentials, FakeClient, KubeFake};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tool from `$<env>`, else `.tools/bin/` (where `tests/chart/tools.sh`
/// installs helm and kubectl), else `PATH`.
fn tool(env: &str, name: &str) -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    std::env::var_os(env)
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(repo().join(".tools/bin").join(name)))
        .chain(dirs.into_iter().map(|d| d.join(name)))
        .filter(|p| p.is_file())
        .collect()
}

/// helm from `$WEFT_HELM`, `.tools/bin` or `PATH`; None (with the reason
/// printed) when absent, a failure under CI.
fn helm() -> Option<PathBuf> {
    let found = tool("WEFT_HELM", "helm").into_iter().next();
    if found.is_none() {
        let why = "helm not found (run `bash tests/chart/tools.sh`, set WEFT_HELM or put helm on PATH; .ci/run installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping the chart install: {why}");
    }
    found
}

/// The rendered chart's documents.
fn render(helm: &Path, extra: &[&str]) -> Vec<Value> {
    let chart = std::env::var_os("WEFT_CHART")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("charts/weft"));
    let dir = chart;
    let out = std::process::Command::new(helm)
        .args(["template", "weft"])
        .arg(&dir)
        .args(["--namespace", "weft-system", "--include-crds"])
        .args(extra)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// Helm's install order by kind; kinds it does not list go last.
fn install_rank(kind: &str) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "StorageClass",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
        "IngressClass",
        "Ingress",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

async fn send(c: &FakeClient, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    c.send_json(method, path, body).await
}

/// Where a kind lives, found through discovery as kubectl finds it.
async fn resource_path(c: &FakeClient, obj: &Value, named: bool) -> Result<String, String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let (code, doc) = send(c, "GET", &base, None).await;
    let found = (code == 200)
        .then(|| {
            doc["resources"]
                .as_array()?
                .iter()
                .find(|r| r["kind"] == kind && !r["name"].as_str().unwrap_or("/").contains('/'))
                .cloned()
        })
        .flatten();
    let Some(r) = found else {
        return Err(format!(
            "no matches for kind {kind:?} in version {api_version:?} (discovery answered {code})"
        ));
    };
    let mut path = base;
    if r["namespaced"] == true {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("weft-system");
        path.push_str(&format!("/namespaces/{ns}"));
    }
    path.push_str(&format!("/{}", r["name"].as_str().unwrap_or("")));
    if named {
        path.push_str(&format!(
            "/{}",
            obj["metadata"]["name"].as_str().unwrap_or("")
        ));
    }
    Ok(path)
}

/// Every field `want` sets is in `got` with the same value (the server
/// adds defaults, never changes what was sent).
fn contains(got: &Value, want: &Value, at: &str) -> Result<(), String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w.iter().try_for_each(|(k, wv)| match g.get(k) {
            Some(gv) => contains(gv, wv, &format!("{at}.{k}")),
            None if wv.is_null() => Ok(()),
            None => Err(format!("{at}.{k}: missing")),
        }),
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => g
            .iter()
            .zip(w)
            .enumerate()
            .try_for_each(|(i, (gv, wv))| contains(gv, wv, &format!("{at}[{i}]"))),
        (Value::Number(g), Value::Number(w)) if g.as_f64() == w.as_f64() => Ok(()),
        _ if got == want => Ok(()),
        _ => Err(format!("{at}: sent {want}, read back {got}")),
    }
}

/// What a read-back object must still hold of the rendered one.
fn sent_fields(obj: &Value) -> Value {
    let mut want = obj.clone();
    if let Some(m) = want.as_object_mut() {
        m.remove("status");
        if let Some(Value::Object(plain)) = m.remove("stringData") {
            for (k, v) in plain {
                want["data"][k] = b64_std(v.as_str().unwrap_or("").as_bytes()).into();
            }
        }
    }
    want
}

async fn established(c: &FakeClient, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, crd) = send(c, "GET", path, None).await;
        let ok = crd["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never Established: {crd}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn causes(body: &Value) -> Vec<String> {
    body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["field"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn the_rendered_chart_is_created_and_read_back() {
    let Some(helm) = helm() else {
        return;
    };
    let mut docs = render(&helm, &[]);
    assert!(!docs.is_empty(), "the chart rendered nothing");
    docs.sort_by_key(|d| install_rank(d["kind"].as_str().unwrap_or("")));
    let fake = KubeFake::builder().without_gateway_api().start().await;
    let c = fake.client(Credentials::Admin);
    // helm install --create-namespace
    fake.create_namespace("weft-system", json!({})).await;
    let mut created = Vec::new();
    for crd in docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        let path = resource_path(&c, crd, false).await.unwrap();
        let (code, body) = send(&c, "POST", &path, Some(crd)).await;
        assert_eq!(code, 201, "{}: {body}", crd["metadata"]["name"]);
        established(
            &c,
            &format!("{path}/{}", crd["metadata"]["name"].as_str().unwrap()),
        )
        .await;
        created.push(crd);
    }
    for obj in docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
    {
        let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
        let path = resource_path(&c, obj, false)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (code, body) = send(&c, "POST", &path, Some(obj)).await;
        assert_eq!(code, 201, "{what}: {body}");
        created.push(obj);
    }
    for obj in &created {
        let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
        let path = resource_path(&c, obj, true).await.unwrap();
        let (code, back) = send(&c, "GET", &path, None).await;
        assert_eq!(code, 200, "{what}: {back}");
        contains(&back, &sent_fields(obj), "").unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    eprintln!("created and read back {} rendered objects", created.len());

    // Broken objects of the kinds the chart uses are refused.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").cloned().unwrap_or_else(|| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "weft-control-plane", "namespace": "weft-system"},
               "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "weft-control-plane"}},
                        "template": {"metadata": {"labels": {"app.kubernetes.io/name": "weft-control-plane"}},
                                     "spec": {"containers": [{"name": "control-plane", "image": "weft:dev"}]}}}})
    });
    let mut broken = deployment;
    broken["metadata"]["name"] = json!("no-selector");
    broken["spec"].as_object_mut().unwrap().remove("selector");
    let path = resource_path(&c, &broken, false).await.unwrap();
    let (code, body) = send(&c, "POST", &path, Some(&broken)).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(causes(&body), ["spec.selector"], "{body}");

    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "bad", "namespace": "weft-system"},
        "spec": {"rules": [{"backendRefs": [{"name": "web", "port": "eighty"}]}]}});
    match resource_path(&c, &route, false).await {
        Ok(path) => {
            let (code, body) = send(&c, "POST", &path, Some(&route)).await;
            assert_eq!(code, 422, "{body}");
            assert!(causes(&body).contains(&"spec.rules[0].backendRefs[0].port".to_string()), "{body}");
        }
        Err(e) => eprintln!("the chart installs no HTTPRoute CRD ({e}); the route checks run in kube_fake_validation"),
    }
    // The chart's optional ServiceMonitor needs the Prometheus Operator's
    // CRDs, which this cluster does not have: kubectl would say so.
    let with_monitor = render(&helm, &["--set", "metrics.serviceMonitor.enabled=true"]);
    match with_monitor.iter().find(|d| d["kind"] == "ServiceMonitor") {
        Some(m) => {
            let e = resource_path(&c, m, false).await.unwrap_err();
            assert!(
                e.starts_with("no matches for kind \"ServiceMonitor\""),
                "{e}"
            );
        }
        None => eprintln!(
            "the chart renders no ServiceMonitor with metrics.serviceMonitor.enabled=true"
        ),
    }
    // A kind the cluster does not serve (no Prometheus Operator CRDs).
    let monitor = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "weft-control-plane", "namespace": "weft-system"}, "spec": {}});
    let e = resource_path(&c, &monitor, false).await.unwrap_err();
    assert!(
        e.starts_with("no matches for kind \"ServiceMonitor\""),
        "{e}"
    );
    let (code, body) = send(
        &c,
        "POST",
        "/apis/monitoring.coreos.com/v1/namespaces/weft-system/servicemonitors",
        Some(&monitor),
    )
    .await;
    assert_eq!((code, body), (404, json!("404 page not found\n")));
}

/// kubectl 1.3x from `$WEFT_KUBECTL`, `.tools/bin` or `PATH` (not a dispatcher that
/// would download one), or None with the reason printed.
fn kubectl() -> Option<PathBuf> {
    for k in tool("WEFT_KUBECTL", "kubectl") {
        let out = std::process::Command::new(&k)
            .args(["version", "--client"])
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if text.contains("Client Version: v1.3") && !text.contains("dispatcher") {
            return Some(k);
        }
    }
    eprintln!("skipping kubectl apply: no kubectl v1.3x found (set WEFT_KUBECTL)");
    None
}

async fn run_kubectl(kubectl: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn kubectl_applies_the_rendered_chart() {
    let (Some(helm), Some(kubectl)) = (helm(), kubectl()) else {
        return;
    };
    let docs = render(&helm, &[]);
    let fake = KubeFake::builder().without_gateway_api().start().await;
    fake.create_namespace("weft-system", json!({})).await;
    let kubeconfig = fake.admin_kubeconfig();
    let tmp = weft_tests::TempDir::new("kubectl-apply");
    let write = |name: &str, docs: &[&Value]| {
        let text: Vec<String> = docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        let path = tmp.path().join(name);
        std::fs::write(&path, text.join("\n---\n")).unwrap();
        path
    };
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    let rest: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] != "CustomResourceDefinition")
        .collect();
    let (crd_file, rest_file) = (write("crds.yaml", &crds), write("rest.yaml", &rest));
    let (ok, out) = run_kubectl(
        &kubectl,
        &kubeconfig,
        &["apply", "--server-side", "-f", crd_file.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run_kubectl(
        &kubectl,
        &kubeconfig,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=10s",
            "-f",
            crd_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    if !rest.is_empty() {
        let (ok, out) = run_kubectl(
            &kubectl,
            &kubeconfig,
            &[
                "apply",
                "--server-side",
                "-n",
                "weft-system",
                "-f",
                rest_file.to_str().unwrap(),
            ],
        )
        .await;
        assert!(ok, "{out}");
    }
    // Applied again: nothing changes.
    let (ok, out) = run_kubectl(
        &kubectl,
        &kubeconfig,
        &["apply", "--server-side", "-f", crd_file.to_str().unwrap()],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run_kubectl(&kubectl, &kubeconfig, &["get", "crds", "-o", "name"]).await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), crds.len(), "{out}");
    // Each object is there, as applied, owned by kubectl's Apply.
    let c = fake.client(Credentials::Admin);
    for obj in &docs {
        let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
        let path = resource_path(&c, obj, true).await.unwrap();
        let (code, back) = send(&c, "GET", &path, None).await;
        assert_eq!(code, 200, "{what}: {back}");
        contains(&back, &sent_fields(obj), "").unwrap_or_else(|e| panic!("{what}: {e}"));
        // (An object of nothing but its name owns no fields.)
        let owns_fields =
            obj.as_object().unwrap().len() > 3 || obj["metadata"].as_object().unwrap().len() > 2;
        if !owns_fields {
            continue;
        }
        let managers = back["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            managers
                .iter()
                .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"),
            "{what}: {managers:?}"
        );
    }
    // kubectl leaves field validation to the server (the fake's OpenAPI
    // v3 documents say it takes fieldValidation): an unknown field of a
    // custom object is refused.
    if crds
        .iter()
        .any(|d| d["metadata"]["name"] == "backends.weft.dev")
    {
        let backend = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend",
            "metadata": {"name": "db", "namespace": "weft-system"},
            "spec": {"endpoints": [{"address": "10.1.0.1:5432"}], "bogus": 1}});
        let file = write("backend.yaml", &[&backend]);
        let (ok, out) = run_kubectl(
            &kubectl,
            &kubeconfig,
            &["apply", "--server-side", "-f", file.to_str().unwrap()],
        )
        .await;
        assert!(!ok && out.contains("unknown field \"spec.bogus\""), "{out}");
    }
    eprintln!("kubectl applied {} documents", docs.len());
}

#[test]
fn the_read_back_comparison_can_fail() {
    let stored = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]}});
    assert!(contains(&stored, &json!({"spec": {"ports": [{"port": 80}]}}), "").is_ok());
    assert!(contains(&stored, &json!({"spec": {"replicas": 3}}), "").is_err());
    assert!(contains(&stored, &json!({"spec": {"paused": true}}), "").is_err());
    assert!(contains(&stored, &json!({"spec": {"ports": []}}), "").is_err());
    let secret = json!({"kind": "Secret", "stringData": {"k": "v"}});
    assert_eq!(sent_fields(&secret)["data"]["k"], "dg==");
}

/// `helm install` itself against the fake, its release kept in a Secret
/// (which helm writes in protobuf).
#[tokio::test]
async fn helm_installs_the_chart() {
    let Some(helm) = helm() else {
        return;
    };
    let chart = std::env::var_os("WEFT_CHART")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("charts/weft"));
    if !chart.join("Chart.yaml").is_file() {
        eprintln!("charts/weft has no Chart.yaml yet: helm install skipped");
        return;
    }
    let docs = render(&helm, &[]);
    let fake = KubeFake::builder().without_gateway_api().start().await;
    let out = tokio::process::Command::new(&helm)
        .args(["install", "weft"])
        .arg(&chart)
        .args([
            "--namespace",
            "weft-system",
            "--create-namespace",
            "--kubeconfig",
        ])
        .arg(fake.admin_kubeconfig())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("STATUS: deployed"),
        "{text}"
    );
    let c = fake.client(Credentials::Admin);
    for obj in &docs {
        let what = format!("{} {}", obj["kind"], obj["metadata"]["name"]);
        let path = resource_path(&c, obj, true)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (code, back) = send(&c, "GET", &path, None).await;
        assert_eq!(code, 200, "{what}: {back}");
        contains(&back, &sent_fields(obj), "").unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    // helm's release record.
    let (code, list) = send(
        &c,
        "GET",
        "/api/v1/namespaces/weft-system/secrets?labelSelector=owner%3Dhelm",
        None,
    )
    .await;
    assert_eq!(code, 200);
    let releases = list["items"].as_array().unwrap();
    assert_eq!(releases.len(), 1, "{list}");
    assert_eq!(releases[0]["metadata"]["labels"]["status"], "deployed");
    eprintln!("helm installed {} objects", docs.len());
}
