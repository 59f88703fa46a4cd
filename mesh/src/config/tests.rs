//! Tests of the resource model; this file is the `#[cfg(test)] mod tests`
//! declared in `config/mod.rs`, so its unwraps never run outside tests.

use super::*;

fn load(text: &str) -> Result<ConfigSet, ConfigErrors> {
    load_sources(vec![("mesh.yaml".into(), text.into())])
}

const GOOD: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews-v1}
spec:
  protocol: http
  endpoints:
    - address: 127.0.0.1:19081
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews-v2}
spec:
  endpoints:
    - address: 127.0.0.1:19082
      weight: 2
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
spec:
  parentRefs:
    - name: reviews
  rules:
    - matches:
        - path: {type: PathPrefix, value: /api}
      backendRefs:
        - name: reviews-v1
          weight: 90
        - name: reviews-v2
          weight: 10
      timeouts: {request: 2s}
"#;

#[test]
fn loads_a_good_config() {
    let set = load(GOOD).unwrap();
    assert_eq!(set.backends.len(), 2);
    assert_eq!(set.http_routes.len(), 1);
    assert_eq!(set.http_routes[0].meta.namespace, "default");
    let rule = &set.http_routes[0].spec.rules[0];
    assert_eq!(rule.backend_refs[1].weight, Some(10));
    assert_eq!(
        rule.timeouts.as_ref().unwrap().request,
        Some(Dur::from_secs(2))
    );
}

fn only_error(text: &str) -> ConfigError {
    let errs = load(text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn unknown_field_points_at_line_and_path() {
    let bad = GOOD.replace(
        "          weight: 10\n",
        "          weight: 10\n          wieght: 3\n",
    );
    let e = only_error(&bad);
    assert_eq!(e.file, "mesh.yaml");
    assert_eq!(e.path, "spec.rules[0].backendRefs[1].wieght");
    let line = bad.lines().position(|l| l.contains("wieght")).unwrap() as u32 + 1;
    assert_eq!((e.line, e.column), (line, 11), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");
}

#[test]
fn wrong_type_points_at_value() {
    let bad = GOOD.replace("weight: 90", "weight: ninety");
    let e = only_error(&bad);
    assert_eq!(e.path, "spec.rules[0].backendRefs[0].weight");
    let line = bad.lines().position(|l| l.contains("ninety")).unwrap() as u32 + 1;
    assert_eq!(e.line, line);
}

#[test]
fn dangling_backend_ref_is_reported_with_path() {
    let bad = GOOD.replace(
        "- name: reviews-v2\n          weight: 10",
        "- name: reviews-v3\n          weight: 10",
    );
    let e = only_error(&bad);
    assert_eq!(e.path, "spec.rules[0].backendRefs[1].name");
    assert!(e.message.contains("reviews-v3"), "{e}");
    let line = bad.lines().position(|l| l.contains("reviews-v3")).unwrap() as u32 + 1;
    assert_eq!(e.line, line, "{e}");
    assert_eq!(
        e.to_string(),
        format!("mesh.yaml:{line}:17: spec.rules[0].backendRefs[1].name: no Backend named \"reviews-v3\" in namespace \"default\"")
    );
}

#[test]
fn bad_duration_and_regex() {
    let e = only_error(&GOOD.replace("request: 2s", "request: 2 parsecs"));
    assert_eq!(e.path, "spec.rules[0].timeouts.request");
    let e = only_error(&GOOD.replace(
        "{type: PathPrefix, value: /api}",
        "{type: RegularExpression, value: \"/a(\"}",
    ));
    assert_eq!(e.path, "spec.rules[0].matches[0].path.value");
}

#[test]
fn syntax_error_is_located() {
    let errs =
        load("apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {name: x\n").unwrap_err();
    assert!(errs.0[0].line >= 3, "{errs}");
}

#[test]
fn unknown_kind_and_api_version() {
    let e =
        only_error("apiVersion: weft.dev/v1alpha1\nkind: Gateway\nmetadata: {name: x}\nspec: {}\n");
    assert_eq!((e.path.as_str(), e.line), ("kind", 2));
    let e = only_error("apiVersion: weft.dev/v2\nkind: Backend\nmetadata: {name: x}\nspec: {}\n");
    assert_eq!((e.path.as_str(), e.line), ("apiVersion", 1));
}

#[test]
fn duplicates_are_rejected() {
    let twice = format!("{GOOD}\n---\napiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews-v1}}\nspec: {{}}\n");
    let e = only_error(&twice);
    assert!(e.message.contains("defined twice"), "{e}");
}

#[test]
fn mesh_config_rotation_window_and_lifetime_are_checked() {
    let mc = |spec: &str| {
        format!("apiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh}}\nspec:\n{spec}")
    };
    assert!(load(&mc(
        "  rotationPercent: [50, 70]\n  certificateLifetime: 1h\n"
    ))
    .is_ok());
    let e = load(&mc("  rotationPercent: [70, 50]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mesh.yaml:5:") && e.contains("spec.rotationPercent"),
        "{e}"
    );
    let e = load(&mc("  rotationPercent: [50]\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("spec.rotationPercent"), "{e}");
    let e = load(&mc("  certificateLifetime: 10s\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mesh.yaml:5:") && e.contains("spec.certificateLifetime"),
        "{e}"
    );
}

#[test]
fn unknown_retry_condition_points_at_it() {
    let text = format!(
        "{GOOD}---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: p}}
spec:
  targetRef: {{kind: Backend, name: reviews-v1}}
  retry:
    retryOn: [connect-failure, 5xx, gateway-eror]
"
    );
    let e = only_error(&text);
    assert_eq!(e.path, "spec.retry.retryOn[2]", "{e}");
    let line = text
        .lines()
        .position(|l| l.contains("gateway-eror"))
        .unwrap() as u32
        + 1;
    assert_eq!(e.line, line, "{e}");
    assert!(
        e.message
            .contains("unknown condition \"gateway-eror\"; one of connect-failure"),
        "{e}"
    );
    let ok = load(&text.replace("gateway-eror", "gateway-error")).unwrap();
    let conditions = ok.traffic_policies[0]
        .spec
        .retry
        .as_ref()
        .unwrap()
        .retry_on
        .clone();
    use policy::RetryCondition as C;
    assert_eq!(
        conditions,
        Some(vec![C::ConnectFailure, C::FiveXx, C::GatewayError])
    );
}
