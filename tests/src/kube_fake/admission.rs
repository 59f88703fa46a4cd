//! Mutating admission webhooks, called the way the apiserver calls them:
//! for each MutatingWebhookConfiguration (by name) and each webhook whose
//! rules match the operation, group, version and resource, whose
//! `namespaceSelector` matches the namespace's labels and whose
//! `objectSelector` matches the object's, an HTTPS POST of an
//! `admission.k8s.io/v1` AdmissionReview to `clientConfig.url` with
//! `?timeout=<n>s`, trusting `caBundle`. The answer's uid must match; a
//! denial becomes the client's error; a `JSONPatch` is applied. A failed
//! call follows `failurePolicy` (Fail: 500; Ignore: carry on unmutated).
//! `clientConfig.service` goes to the address a test routed that Service to
//! (`KubeFake::route_service`); an unrouted one is a failed call. Validating webhooks and
//! reinvocation are not implemented.

use super::discovery::Resource;
use super::errors::ApiError;
use super::router::Request;
use super::util::{b64_decode, uuid};
use super::{patch, State};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const CONFIGS: &str = "mutatingwebhookconfigurations.admissionregistration.k8s.io";

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v == "*" || v == want)
}

/// A Kubernetes LabelSelector against a label map.
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if sel.is_null() {
        return true;
    }
    let label = |k: &str| labels[k].as_str().map(str::to_string);
    let labels_ok = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k).as_deref() == v.as_str());
    let exprs_ok = sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let v = label(key);
            match e["operator"].as_str() {
                Some("In") => v.is_some_and(|v| values.contains(&v.as_str())),
                Some("NotIn") => v.is_none_or(|v| !values.contains(&v.as_str())),
                Some("Exists") => v.is_some(),
                Some("DoesNotExist") => v.is_none(),
                _ => false,
            }
        });
    labels_ok && exprs_ok
}

fn rule_matches(rule: &Value, op: &str, r: &Resource) -> bool {
    let scope_ok = match rule["scope"].as_str() {
        Some("Namespaced") => r.namespaced,
        Some("Cluster") => !r.namespaced,
        _ => true,
    };
    has(&rule["operations"], op)
        && has(&rule["apiGroups"], &r.group)
        && has(&rule["apiVersions"], &r.version)
        && (has(&rule["resources"], &r.plural) || has(&rule["resources"], "*/*"))
        && scope_ok
}

/// Runs every matching mutating webhook on `obj`, in order.
pub async fn mutate(
    state: &Arc<State>,
    req: &Request,
    r: &Resource,
    obj: &mut Value,
    op: &str,
) -> Result<(), ApiError> {
    let (configs, ns_labels) = {
        let store = state.store();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
        let labels = if r.plural == "namespaces" && r.group.is_empty() {
            obj["metadata"]["labels"].clone()
        } else {
            store
                .get("namespaces", "", ns)
                .map(|n| n["metadata"]["labels"].clone())
                .unwrap_or(Value::Null)
        };
        (store.list(CONFIGS, None), labels)
    };
    for config in configs {
        for hook in config["webhooks"].as_array().into_iter().flatten() {
            let rules_ok = hook["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| rule_matches(rule, op, r));
            if !rules_ok
                || (r.namespaced && !selector_matches(&hook["namespaceSelector"], &ns_labels))
                || !selector_matches(&hook["objectSelector"], &obj["metadata"]["labels"])
            {
                continue;
            }
            call(state, req, r, obj, op, hook).await?;
        }
    }
    Ok(())
}

async fn call(
    state: &State,
    req: &Request,
    r: &Resource,
    obj: &mut Value,
    op: &str,
    hook: &Value,
) -> Result<(), ApiError> {
    let name = hook["name"].as_str().unwrap_or("");
    let timeout = hook["timeoutSeconds"].as_u64().unwrap_or(10);
    let uid = uuid();
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let gvr = json!({"group": r.group, "version": r.version, "resource": r.plural});
    let mut request = json!({
        "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": obj["metadata"]["name"], "operation": op, "userInfo": req.user.info(),
        "object": obj, "oldObject": null, "dryRun": req.dry_run(),
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    });
    if r.namespaced {
        request["namespace"] = obj["metadata"]["namespace"].clone();
    }
    let review =
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request});
    let cc = &hook["clientConfig"];
    // A Service reference goes to the address the test routed it to, and
    // the webhook's certificate is checked for `<name>.<namespace>.svc`.
    let (url, connect_to) = match cc["url"].as_str() {
        Some(u) => (u.to_string(), None),
        None => {
            let svc = &cc["service"];
            let (ns, svc_name) = (
                svc["namespace"].as_str().unwrap_or(""),
                svc["name"].as_str().unwrap_or(""),
            );
            let port = svc["port"].as_u64().unwrap_or(443);
            let path = svc["path"].as_str().unwrap_or("/");
            let routed = state
                .service_routes()
                .get(&(ns.to_string(), svc_name.to_string()))
                .copied();
            (format!("https://{svc_name}.{ns}.svc:{port}{path}"), routed)
        }
    };
    let full_url = format!("{url}?timeout={timeout}s");
    let fail = |why: String| -> Result<(), ApiError> {
        if hook["failurePolicy"] == "Ignore" {
            Ok(())
        } else {
            Err(ApiError::internal(format!(
                "failed calling webhook {name:?}: {why}"
            )))
        }
    };
    if cc["url"].is_null() && connect_to.is_none() {
        return fail(format!(
            "failed to call webhook: Post {full_url:?}: the service is not routed (KubeFake::route_service)"
        ));
    }
    let ca = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    let sent = tokio::time::timeout(
        Duration::from_secs(timeout),
        post(
            &full_url,
            connect_to,
            b64_decode(ca).unwrap_or_default(),
            review.to_string(),
        ),
    )
    .await;
    let body = match sent {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return fail(format!("failed to call webhook: Post {full_url:?}: {e}")),
        Err(_) => {
            return fail(format!(
                "failed to call webhook: Post {full_url:?}: context deadline exceeded"
            ))
        }
    };
    let answer: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return fail(format!("received invalid webhook response: {e}")),
    };
    let resp = &answer["response"];
    if resp["uid"] != uid.as_str() {
        return Err(ApiError::internal(format!(
            "failed calling webhook {name:?}: received invalid webhook response: expected response.uid={uid:?}, got {:?}",
            resp["uid"].as_str().unwrap_or("")
        )));
    }
    if resp["allowed"] != true {
        let status = &resp["status"];
        let code = status["code"].as_u64().unwrap_or(403) as u16;
        let reason = status["reason"].as_str().unwrap_or("Forbidden");
        let msg = status["message"].as_str().unwrap_or("");
        return Err(ApiError::denied(
            code,
            reason,
            format!("admission webhook {name:?} denied the request: {msg}"),
        ));
    }
    if let Some(p) = resp["patch"].as_str() {
        let bytes = b64_decode(p).map_err(|at| {
            ApiError::internal(format!(
                "failed calling webhook {name:?}: failed to call webhook: illegal base64 data at input byte {at}"
            ))
        })?;
        let ops: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("failed calling webhook {name:?}: {e}")))?;
        *obj = patch::json_patch(obj, &ops).map_err(ApiError::internal)?;
    }
    Ok(())
}

/// One HTTPS POST over HTTP/1.1, trusting the PEM `ca` bundle, to the
/// URL's host or to `connect_to` when given.
async fn post(
    url: &str,
    connect_to: Option<std::net::SocketAddr>,
    ca: Vec<u8>,
    body: String,
) -> Result<Bytes, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("only https:// webhook URLs are supported")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = match connect_to {
        Some(a) => a.to_string(),
        None if authority.contains(':') && !authority.ends_with(']') => authority.to_string(),
        None => format!("{authority}:443"),
    };
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            format!("dial tcp {addr}: connect: connection refused")
        } else {
            format!("dial tcp {addr}: {e}")
        }
    })?;
    let server_name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = http::Request::post(if path.is_empty() { "/" } else { path })
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .header("user-agent", "kube-apiserver-admission")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "the server responded with status {}",
            status.as_u16()
        ));
    }
    Ok(bytes)
}
