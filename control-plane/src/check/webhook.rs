//! The sidecar injector's MutatingWebhookConfiguration
//! (`weft-sidecar-injector`): present, every webhook's `caBundle` a valid,
//! unexpired PEM certificate equal to the mesh CA root (the API server
//! trusts the webhook's serving certificate through it), and the webhook
//! reachable: a dry-run AdmissionReview of a Pod labelled
//! `weft.dev/inject=disabled` is sent to each distinct `clientConfig` of
//! the configuration once (a Service through the API server's service
//! proxy, a URL directly) and must come back with the same uid, allowed,
//! without a patch.

use super::certs::{self, Cert};
use super::cluster::{Cluster, Failure};
use super::report::Line;
use super::url_post;
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
    for (target, ca_bundle) in targets(&hooks) {
        lines.push(reachable(cluster, &target, &ca_bundle).await);
    }
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

/// Where the API server sends a webhook's reviews.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// `clientConfig.service`: reached through the API server's service proxy.
    Service {
        ns: String,
        name: String,
        port: u64,
        path: String,
    },
    /// `clientConfig.url`: called directly.
    Url(String),
    /// Neither: the named webhook cannot be called at all.
    Nowhere(String),
}

/// Each distinct target of `hooks`, in order, with the `caBundle` of the
/// first webhook naming it (the trust for a URL).
fn targets(hooks: &[Value]) -> Vec<(Target, String)> {
    let mut out: Vec<(Target, String)> = Vec::new();
    for hook in hooks {
        let config = &hook["clientConfig"];
        let svc = &config["service"];
        let target = if let Some(url) = config["url"].as_str() {
            Target::Url(url.to_string())
        } else if svc.is_object() {
            Target::Service {
                ns: svc["namespace"].as_str().unwrap_or("").to_string(),
                name: svc["name"].as_str().unwrap_or("").to_string(),
                port: svc["port"].as_u64().unwrap_or(443),
                path: svc["path"].as_str().unwrap_or("/").to_string(),
            }
        } else {
            Target::Nowhere(hook["name"].as_str().unwrap_or("?").to_string())
        };
        if !out.iter().any(|(t, _)| *t == target) {
            let bundle = config["caBundle"].as_str().unwrap_or("").to_string();
            out.push((target, bundle));
        }
    }
    out
}

/// POSTs a dry-run AdmissionReview to one target: through the service
/// proxy for a Service, directly for a URL.
async fn reachable(cluster: &Cluster, target: &Target, ca_bundle: &str) -> Line {
    let own = &cluster.namespace;
    let (ns, name, port, hook_path) = match target {
        Target::Service {
            ns,
            name,
            port,
            path,
        } => (ns, name, port, path),
        Target::Url(url) => return reachable_url(url, ca_bundle, own).await,
        Target::Nowhere(hook) => {
            return Line::fail(
                CHECK,
                format!("webhook {hook} ({CONFIGURATION})"),
                "its clientConfig names no Service and no URL: the API server cannot call it",
                format!("helm upgrade weft charts/weft -n {own}"),
            )
        }
    };
    let what = format!("injection webhook https://{name}.{ns}.svc:{port}{hook_path}");
    let fix = format!(
        "check the control plane's pods are ready and serve the webhook (serve --webhook 0.0.0.0:{port}): kubectl -n {ns} get endpointslices -l kubernetes.io/service-name={name}; kubectl -n {ns} logs deployment/weft-control-plane"
    );
    let uid = uid();
    let path = format!("/api/v1/namespaces/{ns}/services/https:{name}:{port}/proxy{hook_path}");
    match cluster.post(&path, &review(&uid)).await {
        Ok(answer) => judge(what, &answer, &uid, "", own),
        Err(Failure::NotFound) => Line::fail(
            CHECK,
            what,
            format!("Service {ns}/{name} not found"),
            format!("helm upgrade --install weft charts/weft -n {own}"),
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

/// A `clientConfig.url` webhook, called from where `check` runs.
async fn reachable_url(url: &str, ca_bundle: &str, ns: &str) -> Line {
    let what = format!("injection webhook {url}");
    let uid = uid();
    match url_post::post(url, ca_bundle, &review(&uid)).await {
        Ok(answer) => judge(what, &answer, &uid, " (clientConfig.url, called from here)", ns),
        Err(why) => Line::fail(
            CHECK,
            what,
            format!("not reachable from here (clientConfig.url, called directly): {why}"),
            format!("check the URL serves the webhook with a certificate its caBundle verifies, or point clientConfig at the control plane's Service: helm upgrade weft charts/weft -n {ns}"),
        ),
    }
}

/// The line for an answer to the review with `uid`: it must be that
/// review's, allowed, and without a patch (the Pod opted out).
fn judge(what: String, answer: &Value, uid: &str, how: &str, ns: &str) -> Line {
    let response = &answer["response"];
    let logs = format!("kubectl -n {ns} logs deployment/weft-control-plane");
    if response["uid"] != uid {
        return Line::fail(
            CHECK,
            what,
            format!(
                "answered, but not the AdmissionReview sent (response.uid {}, sent {uid:?})",
                response["uid"]
            ),
            format!("something other than Weft's injector answers there: check clientConfig of {CONFIGURATION} names the control plane's Service and see {logs}"),
        );
    }
    if response["allowed"] != true {
        let message = response["status"]["message"]
            .as_str()
            .unwrap_or("no message");
        return Line::fail(
            CHECK,
            what,
            format!("it refused the dry-run review of a Pod labelled weft.dev/inject=disabled: {message}"),
            format!("opted-out Pods must be allowed unchanged: see {logs}"),
        );
    }
    if response.get("patch").is_some_and(|p| !p.is_null()) {
        return Line::fail(
            CHECK,
            what,
            "it answered the dry-run review of a Pod labelled weft.dev/inject=disabled with a patch: it would change opted-out Pods",
            format!("run a control plane of this version (opted-out Pods are allowed unchanged): see {logs}"),
        );
    }
    Line::ok(
        CHECK,
        format!("{what} reachable{how}: a dry-run AdmissionReview came back answered (allowed, no patch)"),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, config: Value) -> Value {
        json!({"name": name, "clientConfig": config})
    }

    #[test]
    fn each_distinct_client_config_is_one_target() {
        let svc = |port: u64| {
            json!({"service": {"namespace": "weft-system", "name": "weft-control-plane",
                "port": port, "path": "/inject"}, "caBundle": "QQ=="})
        };
        let hooks = [
            hook("namespace.inject.weft.dev", svc(15017)),
            hook("pod.inject.weft.dev", svc(15017)),
            hook("old.inject.weft.dev", svc(15018)),
            hook(
                "url.inject.weft.dev",
                json!({"url": "https://localhost:9443/inject", "caBundle": "Qg=="}),
            ),
            hook(
                "again.inject.weft.dev",
                json!({"url": "https://localhost:9443/inject"}),
            ),
            hook("none.inject.weft.dev", json!({})),
            hook("none2.inject.weft.dev", json!({})),
        ];
        let service = |port| Target::Service {
            ns: "weft-system".into(),
            name: "weft-control-plane".into(),
            port,
            path: "/inject".into(),
        };
        assert_eq!(
            targets(&hooks),
            vec![
                (service(15017), "QQ==".to_string()),
                (service(15018), "QQ==".to_string()),
                (
                    Target::Url("https://localhost:9443/inject".into()),
                    "Qg==".into()
                ),
                (
                    Target::Nowhere("none.inject.weft.dev".into()),
                    String::new()
                ),
                (
                    Target::Nowhere("none2.inject.weft.dev".into()),
                    String::new()
                ),
            ]
        );
        // Service defaults as the API server applies them.
        let bare = [hook(
            "a",
            json!({"service": {"namespace": "n", "name": "s"}}),
        )];
        assert_eq!(
            targets(&bare)[0].0,
            Target::Service {
                ns: "n".into(),
                name: "s".into(),
                port: 443,
                path: "/".into()
            }
        );
    }

    #[test]
    fn only_an_allowed_unpatched_answer_with_the_uid_sent_passes() {
        let what = || "injection webhook x".to_string();
        let answer = |response: Value| json!({"response": response});
        let ok = judge(
            what(),
            &answer(json!({"uid": "u1", "allowed": true})),
            "u1",
            "",
            "weft-system",
        );
        assert_eq!(
            ok.text(),
            "✓ injection webhook x reachable: a dry-run AdmissionReview came back answered (allowed, no patch)"
        );
        let wrong = judge(
            what(),
            &answer(json!({"uid": "u2", "allowed": true})),
            "u1",
            "",
            "weft-system",
        );
        assert!(
            wrong.text().starts_with("✗ injection webhook x: answered, but not the AdmissionReview sent (response.uid \"u2\", sent \"u1\") — fix: something other than Weft's injector"),
            "{}",
            wrong.text()
        );
        let missing = judge(what(), &json!({}), "u1", "", "weft-system");
        assert!(missing.text().contains("(response.uid null, sent \"u1\")"));
        let denied = judge(
            what(),
            &answer(json!({"uid": "u1", "allowed": false, "status": {"message": "no"}})),
            "u1",
            "",
            "weft-system",
        );
        assert!(
            denied.text().starts_with(
                "✗ injection webhook x: it refused the dry-run review of a Pod labelled weft.dev/inject=disabled: no — fix: "
            ),
            "{}",
            denied.text()
        );
        let patched = judge(
            what(),
            &answer(
                json!({"uid": "u1", "allowed": true, "patchType": "JSONPatch", "patch": "W10="}),
            ),
            "u1",
            "",
            "weft-system",
        );
        assert!(
            patched
                .text()
                .contains("with a patch: it would change opted-out Pods"),
            "{}",
            patched.text()
        );
    }

    #[test]
    fn the_review_is_a_dry_run_of_an_opted_out_pod() {
        let r = review("u1");
        assert_eq!(r["request"]["uid"], "u1");
        assert_eq!(r["request"]["dryRun"], true);
        assert_eq!(
            r["request"]["object"]["metadata"]["labels"]["weft.dev/inject"],
            "disabled"
        );
        assert_ne!(uid(), "");
    }
}
