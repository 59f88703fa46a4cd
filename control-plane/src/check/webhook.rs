//! The sidecar injector's MutatingWebhookConfiguration
//! (`weft-sidecar-injector`): present, every webhook's `caBundle` a valid,
//! unexpired PEM certificate equal to the mesh CA root (the API server
//! trusts the webhook's serving certificate through it), and the webhook
//! reachable: a dry-run AdmissionReview POSTed through the API server's
//! service proxy comes back answered with the same uid.

use super::certs::{self, Cert};
use super::cluster::{Cluster, Failure};
use super::report::Line;
use serde_json::{json, Value};

const CHECK: &str = "webhook";
/// The configuration's name (CONTRACT).
pub(crate) const CONFIGURATION: &str = "weft-sidecar-injector";

pub(crate) async fn check(
    cluster: &Cluster,
    roots: &Result<Vec<Cert>, String>,
    now: i64,
) -> Vec<Line> {
    let ns = &cluster.namespace;
    let what = format!("MutatingWebhookConfiguration {CONFIGURATION}");
    let path = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION}"
    );
    let config = match cluster.get(&path).await {
        Ok(c) => c,
        Err(Failure::NotFound) => {
            return vec![Line::fail(
                CHECK,
                what,
                "not found: no pod gets a sidecar",
                format!("helm upgrade --install weft charts/weft -n {ns}"),
            )]
        }
        Err(e) => {
            return vec![Line::fail(
                CHECK,
                what,
                format!("cannot read it: {e}"),
                "run check as a user who may get mutatingwebhookconfigurations.admissionregistration.k8s.io",
            )]
        }
    };
    let hooks = config["webhooks"].as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        return vec![Line::fail(
            CHECK,
            what,
            "it has no webhooks",
            format!("helm upgrade weft charts/weft -n {ns}"),
        )];
    }
    let mut lines: Vec<Line> = hooks
        .iter()
        .filter_map(|h| ca_bundle_problem(h, roots, now).map(|(why, fix)| (h, why, fix)))
        .map(|(h, why, fix)| {
            let name = h["name"].as_str().unwrap_or("?");
            Line::fail(
                CHECK,
                format!("webhook {name} ({CONFIGURATION})"),
                why,
                fix.replace("{ns}", ns),
            )
        })
        .collect();
    if lines.is_empty() {
        let compared = match roots {
            Ok(r) => format!(
                "the mesh CA root (valid until {})",
                certs::date(r[0].not_after)
            ),
            Err(why) => format!("a valid certificate (not compared with the mesh CA root: {why})"),
        };
        lines.push(Line::ok(
            CHECK,
            format!("{what}: {} webhooks, each caBundle {compared}", hooks.len()),
        ));
    }
    lines.push(reachable(cluster, &hooks[0]).await);
    lines
}

/// What is wrong with one webhook's `caBundle`, and the fix.
fn ca_bundle_problem(
    hook: &Value,
    roots: &Result<Vec<Cert>, String>,
    now: i64,
) -> Option<(String, &'static str)> {
    const REFILL: &str = "the control plane sets it at start and keeps it current: check it runs and may patch the configuration (kubectl -n {ns} logs deployment/weft-control-plane)";
    const RESTART: &str = "restart the control plane so it writes the current root: kubectl -n {ns} rollout restart deployment/weft-control-plane";
    let b64 = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    if b64.is_empty() {
        return Some(("caBundle is empty".into(), REFILL));
    }
    let Some(pem) = certs::b64_decode(b64) else {
        return Some(("caBundle is not base64".into(), RESTART));
    };
    let bundle = match certs::parse_pem(&pem) {
        Ok(b) => b,
        Err(e) => return Some((format!("caBundle: {e}"), RESTART)),
    };
    if let Some(why) = bundle.iter().find_map(|c| c.invalid_now(now)) {
        return Some((format!("caBundle certificate {why}"), RESTART));
    }
    if let Ok(roots) = roots {
        if !bundle.iter().any(|c| roots.iter().any(|r| r.der == c.der)) {
            return Some((
                "caBundle is not the mesh CA root (Secret weft-ca)".into(),
                RESTART,
            ));
        }
    }
    None
}

/// POSTs a dry-run AdmissionReview through the service proxy.
async fn reachable(cluster: &Cluster, hook: &Value) -> Line {
    let svc = &hook["clientConfig"]["service"];
    let ns = svc["namespace"].as_str().unwrap_or(&cluster.namespace);
    let name = svc["name"].as_str().unwrap_or(super::deployment::NAME);
    let port = svc["port"].as_u64().unwrap_or(443);
    let hook_path = svc["path"].as_str().unwrap_or("/");
    let url = format!("https://{name}.{ns}.svc:{port}{hook_path}");
    let what = format!("injection webhook {url}");
    let fix = format!(
        "check the control plane's pods are ready and serve the webhook (serve --webhook 0.0.0.0:{port}): kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}; kubectl -n {ns} logs deployment/weft-control-plane"
    );
    if svc.is_null() {
        return Line::fail(
            CHECK,
            what,
            "clientConfig names no Service",
            format!("helm upgrade weft charts/weft -n {ns}"),
        );
    }
    let uid = uid();
    let path = format!("/api/v1/namespaces/{ns}/services/https:{name}:{port}/proxy{hook_path}");
    match cluster.post(&path, &review(&uid)).await {
        Ok(answer) if answer["response"]["uid"] == uid.as_str() => {
            let verdict = if answer["response"]["allowed"] == true {
                "allowed"
            } else {
                "denied"
            };
            Line::ok(
                CHECK,
                format!(
                    "{what} reachable: a dry-run AdmissionReview came back answered ({verdict})"
                ),
            )
        }
        Ok(answer) => Line::fail(
            CHECK,
            what,
            format!(
                "answered, but not the AdmissionReview sent (response.uid {:?}, sent {uid:?})",
                answer["response"]["uid"]
            ),
            fix,
        ),
        Err(Failure::NotFound) => Line::fail(
            CHECK,
            what,
            format!("Service {ns}/{name} not found"),
            format!("helm upgrade --install weft charts/weft -n {ns}"),
        ),
        Err(Failure::Forbidden(m)) => Line::fail(
            CHECK,
            what,
            format!("cannot ask it: {m}"),
            format!("run check as a user who may create services/proxy in {ns}"),
        ),
        Err(e) => Line::fail(
            CHECK,
            what,
            format!("not reachable through the API server: {e}"),
            fix,
        ),
    }
}

/// A per-run uid for the review.
fn uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = nanos ^ (u128::from(std::process::id()) << 64);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A dry-run CREATE of a Pod that opts out of injection: the webhook
/// answers it without changing anything.
fn review(uid: &str) -> Value {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "weft-check", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "weft-control-plane-check"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "weft-check", "namespace": "default",
                             "labels": {"weft.dev/inject": "disabled"}},
                "spec": {"containers": [{"name": "app", "image": "weft-check"}]},
            },
            "oldObject": null,
            "dryRun": true,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "dryRun": ["All"]},
        },
    })
}
