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

/// `text` with its line breaks cycled through a CR alone, CRLF and LF.
fn mixed_line_breaks(text: &str) -> String {
    let mut out = String::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str(["\r", "\r\n", "\n"][i % 3]);
        }
        out.push_str(line);
    }
    out
}

/// Lines in `text` as YAML counts them: LF, CRLF and a CR alone end one.
fn yaml_lines(text: &str) -> u32 {
    let b = text.as_bytes();
    let breaks = (0..b.len())
        .filter(|&i| b[i] == b'\n' || (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n')))
        .count();
    breaks as u32 + 1
}

/// Found by fuzzing (`fuzz/fuzz_targets/config_yaml.rs`): YAML breaks lines
/// at a CR alone, but documents were cut out of the text at LF alone, so a
/// file with CR line breaks had its documents cut in the wrong places and
/// its errors pointed past its end. A file mixing CR, CRLF and LF loads as
/// the same file with LF, and its errors name the same places, in the file.
#[test]
fn a_file_with_cr_and_crlf_line_breaks_loads_as_with_lf() {
    let mixed = mixed_line_breaks(GOOD);
    let b = mixed.as_bytes();
    assert!((1..b.len()).any(|i| b[i - 1] == b'\r' && b[i] != b'\n'));
    assert!(mixed.contains("\r\n"));
    let keys = |set: &ConfigSet| {
        let mut k: Vec<String> = set.backends.iter().map(|r| r.key()).collect();
        k.extend(set.http_routes.iter().map(|r| r.key()));
        k
    };
    let set = load(&mixed).unwrap();
    assert_eq!(keys(&set), keys(&load(GOOD).unwrap()));
    let docs = yaml::documents(&mixed).unwrap();
    assert_eq!(docs.len(), 3);
    for d in &docs {
        assert!(d.text.starts_with("apiVersion"), "{:?}", d.text);
        assert!(!d.text.contains("---"), "{:?}", d.text);
    }

    // Errors in the first document, the last, and on the file's last line.
    for bad in [
        GOOD.replace("protocol: http", "protocol: [http]"),
        GOOD.replace(
            "          weight: 10\n",
            "          weight: 10\n          wieght: 3\n",
        ),
        GOOD.replace("request: 2s", "request: 2 parsecs"),
    ] {
        let want = only_error(&bad);
        let mixed = mixed_line_breaks(&bad);
        let got = only_error(&mixed);
        assert_eq!(
            (got.line, got.column, &got.path),
            (want.line, want.column, &want.path),
            "{got}"
        );
        assert!(got.line >= 1 && got.line <= yaml_lines(&mixed), "{got}");
    }
}
