//! What the fake API server accepts and refuses, as a real one would:
//! custom objects against their CRD's schema (the Gateway API routes and
//! Weft's kinds: types, enums, patterns, bounds, required fields, pruning
//! of unknown fields with a Warning or a Strict 400, defaults), the built-in
//! kinds a chart creates (Deployment, PodDisruptionBudget, ConfigMap,
//! Secret, RBAC, MutatingWebhookConfiguration), and kinds it does not serve.

use bytes::Bytes;
use serde_json::{json, Value};
use weft_tests::kube_fake::{fixtures_dir, Credentials, FakeClient, KubeFake};

const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes";

async fn send(c: &FakeClient, method: &str, path: &str, body: &Value) -> (u16, Value, Vec<String>) {
    let r = c
        .send(
            method,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
    let warnings = r
        .headers
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into()));
    (r.status, v, warnings)
}

/// `(field, reason)` of each cause.
fn causes(body: &Value) -> Vec<(String, String)> {
    body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn route(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
}

async fn fake() -> (KubeFake, FakeClient) {
    let fake = KubeFake::builder().weft_crds().start().await;
    fake.create_namespace("shop", json!({})).await;
    let c = fake.client(Credentials::Admin);
    (fake, c)
}

#[tokio::test]
async fn routes_are_pruned_defaulted_and_checked_against_the_crd_schema() {
    let (_fake, c) = fake().await;
    // Defaults from the schema; an unknown field is dropped with a Warning.
    let ok = route(
        "ok",
        json!({"parentRefs": [{"name": "web", "kind": "Service", "group": ""}],
        "rules": [{"backendRefs": [{"name": "web", "port": 80}], "bogus": 1}]}),
    );
    let (code, body, warnings) = send(&c, "POST", ROUTES, &ok).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        warnings,
        ["299 - \"unknown field \\\"spec.rules[0].bogus\\\"\""]
    );
    let rule = &body["spec"]["rules"][0];
    assert!(rule.get("bogus").is_none(), "{body}");
    assert_eq!(
        rule["backendRefs"][0],
        json!({"group": "", "kind": "Service", "name": "web", "port": 80, "weight": 1})
    );
    assert_eq!(
        rule["matches"],
        json!([{"path": {"type": "PathPrefix", "value": "/"}}])
    );
    // Strict: the same unknown field is a 400 and nothing is stored.
    let mut strict = ok.clone();
    strict["metadata"]["name"] = json!("strict");
    let (code, body, _) = send(
        &c,
        "POST",
        &format!("{ROUTES}?fieldValidation=Strict"),
        &strict,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["message"], "HTTPRoute in version \"v1\" cannot be handled as a HTTPRoute: strict decoding error: unknown field \"spec.rules[0].bogus\"");
    let (code, _, _) = send(&c, "GET", &format!("{ROUTES}/strict"), &Value::Null).await;
    assert_eq!(code, 404);

    // Each kind of schema failure, with its path and reason.
    let parents: Vec<Value> = (0..33).map(|i| json!({"name": format!("p{i}")})).collect();
    let bad = route(
        "bad",
        json!({
            "hostnames": ["Not_A_Host"],
            "parentRefs": parents,
            "rules": [{"backendRefs": [{"port": "eighty"}, {"name": "web", "port": 70000}],
                       "matches": [{"path": {"type": "Glob", "value": "/"}}]}],
        }),
    );
    let (code, body, _) = send(&c, "POST", ROUTES, &bad).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    let got = causes(&body);
    let want = [
        ("spec.hostnames[0]", "FieldValueInvalid"),
        ("spec.parentRefs", "FieldValueTooMany"),
        ("spec.rules[0].backendRefs[0].name", "FieldValueRequired"),
        ("spec.rules[0].backendRefs[0].port", "FieldValueTypeInvalid"),
        ("spec.rules[0].backendRefs[1].port", "FieldValueInvalid"),
        (
            "spec.rules[0].matches[0].path.type",
            "FieldValueNotSupported",
        ),
        ("<nil>", "FieldValueInvalid"),
    ];
    for (field, reason) in want {
        assert!(
            got.contains(&(field.to_string(), reason.to_string())),
            "{field} {reason} not in {got:?}"
        );
    }
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("spec.rules[0].backendRefs[0].port: Invalid value: \"string\": spec.rules[0].backendRefs[0].port in body must be of type integer: \"string\""), "{message}");
    assert!(
        message.contains(
            "spec.rules[0].backendRefs[1].port in body should be less than or equal to 65535"
        ),
        "{message}"
    );
    assert!(
        message.contains("spec.parentRefs: Too many: 33: must have at most 32 items"),
        "{message}"
    );
}

#[tokio::test]
async fn a_status_write_is_refused_in_the_recorded_words() {
    // The recorded 422 for an invalid route status, message for message.
    let (fake, c) = fake().await;
    let text = std::fs::read_to_string(
        fixtures_dir().join("status/06-invalid-status-enum-and-pattern.json"),
    )
    .unwrap();
    let rec: Value = serde_json::from_str(&text).unwrap();
    fake.create(route(
        "details",
        json!({"parentRefs": [{"group": "", "kind": "Service", "name": "details", "port": 9080}]}),
    ))
    .await;
    let path = format!("{ROUTES}/details/status");
    let r = c
        .send(
            "PATCH",
            &path,
            &[("content-type", "application/merge-patch+json")],
            Bytes::from(rec["request"]["body"].to_string()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422);
    let body = r.json();
    let want = &rec["response"]["body"];
    assert_eq!(body["message"], want["message"]);
    assert_eq!(body["details"]["causes"], want["details"]["causes"]);
}

#[tokio::test]
async fn weft_objects_are_checked_against_their_crd_schema() {
    let (_fake, c) = fake().await;
    let path = "/apis/weft.dev/v1alpha1/namespaces/shop/backends";
    let ok = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend", "metadata": {"name": "db"},
                    "spec": {"protocol": "tcp", "endpoints": [{"address": "10.1.0.1:5432", "weight": 2}]}});
    let (code, body, _) = send(&c, "POST", path, &ok).await;
    assert_eq!(code, 201, "{body}");
    let bad = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend", "metadata": {"name": "bad"},
                     "spec": {"protocol": "udp", "port": 99999, "endpoints": ["10.1.0.1:5432", {"weight": -1}],
                              "dns": {"name": "db.example"}}});
    let (code, body, _) = send(&c, "POST", path, &bad).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        causes(&body),
        [
            ("spec.dns.port", "FieldValueRequired"),
            ("spec.endpoints[0]", "FieldValueTypeInvalid"),
            ("spec.endpoints[1].address", "FieldValueRequired"),
            ("spec.endpoints[1].weight", "FieldValueInvalid"),
            ("spec.port", "FieldValueInvalid"),
            ("spec.protocol", "FieldValueNotSupported"),
        ]
        .map(|(f, r)| (f.to_string(), r.to_string())),
        "{body}"
    );
    // No CEL rules in Weft's schemas: no "<nil>" cause.
    let (code, body, _) = send(&c, "POST", path, &json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Backend", "metadata": {"name": "nospec"}})).await;
    assert_eq!(
        (code, causes(&body)),
        (
            422,
            vec![("spec".to_string(), "FieldValueRequired".to_string())]
        )
    );
}

#[tokio::test]
async fn built_in_kinds_are_defaulted_and_refuse_obvious_mistakes() {
    let (_fake, c) = fake().await;
    let deployments = "/apis/apps/v1/namespaces/shop/deployments";
    let labels = json!({"app.kubernetes.io/name": "web"});
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                 "spec": {"containers": [{"name": "web", "image": "web:1", "ports": [{"containerPort": 8080}]}]}}}});
    let (code, body, _) = send(&c, "POST", deployments, &d).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["replicas"], 1);
    assert_eq!(
        body["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"],
        "File"
    );
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
        "TCP"
    );
    assert_eq!(body["metadata"]["generation"], 1);
    // /status takes only status.
    let mut st = body.clone();
    st["status"] = json!({"replicas": 1, "readyReplicas": 1});
    st["spec"]["replicas"] = json!(5);
    let (code, body, _) = send(&c, "PUT", &format!("{deployments}/web/status"), &st).await;
    assert_eq!(
        (
            code,
            &body["status"]["readyReplicas"],
            &body["spec"]["replicas"]
        ),
        (200, &json!(1), &json!(1)),
        "{body}"
    );

    let refused = [
        (
            "/apis/apps/v1/namespaces/shop/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
                "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}}),
            vec!["spec.selector"],
        ),
        (
            "/apis/apps/v1/namespaces/shop/deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "b"},
                "spec": {"selector": {"matchLabels": {"app": "other"}}, "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "Web", "image": ""}]}}}}),
            vec![
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].name",
                "spec.template.spec.containers[0].image",
            ],
        ),
        (
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "p"},
                "spec": {"minAvailable": 1, "maxUnavailable": "150%", "selector": {"matchLabels": labels}}}),
            vec!["spec", "spec.maxUnavailable"],
        ),
        (
            "/api/v1/namespaces/shop/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"bad key": "x"}}),
            vec!["data[bad key]"],
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "resources": ["pods"]}]}),
            vec!["rules[0].verbs", "rules[1].apiGroups"],
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "weft-control-plane"}]}),
            vec!["roleRef.kind", "subjects[0].namespace"],
        ),
        (
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "w"},
                "webhooks": [{"name": "inject", "clientConfig": {"service": {"namespace": "weft-system", "name": "weft-control-plane", "path": "inject"}},
                              "rules": [{"operations": ["MAKE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                              "timeoutSeconds": 60}]}),
            vec![
                "webhooks[0].name",
                "webhooks[0].admissionReviewVersions",
                "webhooks[0].sideEffects",
                "webhooks[0].clientConfig.service.path",
                "webhooks[0].rules[0].operations[0]",
                "webhooks[0].timeoutSeconds",
            ],
        ),
    ];
    for (path, obj, fields) in refused {
        let (code, body, _) = send(&c, "POST", path, &obj).await;
        assert_eq!(code, 422, "{obj}: {body}");
        let got: Vec<String> = causes(&body).into_iter().map(|(f, _)| f).collect();
        assert_eq!(got, fields, "{body}");
    }
    // A Secret whose data is not base64 does not decode: 400.
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "not base64!"}});
    let (code, body, _) = send(&c, "POST", "/api/v1/namespaces/shop/secrets", &s).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("illegal base64 data"),
        "{body}"
    );
    // RBAC subjects get their apiGroup.
    let b = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "shop"}, {"kind": "Group", "name": "devs"}]});
    let (code, body, _) = send(
        &c,
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
        &b,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert!(body["subjects"][0].get("apiGroup").is_none(), "{body}");
    assert_eq!(body["subjects"][1]["apiGroup"], "rbac.authorization.k8s.io");
}

#[tokio::test]
async fn kinds_the_server_does_not_serve_are_not_found() {
    let (_fake, c) = fake().await;
    let monitor = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}});
    for (method, path) in [
        (
            "POST",
            "/apis/monitoring.coreos.com/v1/namespaces/shop/servicemonitors",
        ),
        ("GET", "/apis/monitoring.coreos.com/v1"),
        (
            "POST",
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/tcproutes",
        ),
    ] {
        let (code, body, _) = send(&c, method, path, &monitor).await;
        assert_eq!(
            (code, body),
            (404, json!("404 page not found\n")),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn odd_shapes_get_an_answer_not_a_crash() {
    let (_fake, c) = fake().await;
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let odd = [
        (
            "POST",
            "/apis/apps/v1/namespaces/shop/deployments".to_string(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                "spec": {"strategy": "fast", "selector": [], "template": {"spec": {"containers": ["web"]}}}}),
        ),
        (
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings".to_string(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
                "roleRef": "view", "subjects": [1, "x"]}),
        ),
        (
            "POST",
            crds.to_string(),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x.example.com"},
                "spec": {"names": "x", "versions": {"v1": true}}}),
        ),
        (
            "PUT",
            format!("{crds}/backends.weft.dev/status"),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "backends.weft.dev"}, "status": "broken"}),
        ),
        (
            "POST",
            ROUTES.to_string(),
            route(
                "odd",
                json!({"rules": {"not": "a list"}, "hostnames": "one"}),
            ),
        ),
        (
            "POST",
            ROUTES.to_string(),
            route("odd2", json!("spec as a string")),
        ),
    ];
    for (method, path, body) in odd {
        let (code, answer, _) = send(&c, method, &path, &body).await;
        assert!(code < 500, "{method} {path}: {code} {answer}");
    }
    // The fake still serves.
    let (code, _, _) = send(&c, "GET", ROUTES, &Value::Null).await;
    assert_eq!(code, 200);
}
