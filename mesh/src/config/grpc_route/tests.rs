//! Loader tests of `GRPCRoute`: what it accepts, and errors with their
//! positions and field paths.

use crate::config::route::{FilterType, ValueMatchType};
use crate::config::{load_sources, ConfigError, ConfigErrors, ConfigSet};

fn load(text: &str) -> Result<ConfigSet, ConfigErrors> {
    load_sources(vec![("grpc.yaml".into(), text.into())])
}

const GOOD: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: cart-v1}
spec:
  protocol: grpc
  port: 50051
  endpoints: [{address: 127.0.0.1:19081}]
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: cart-v2}
spec:
  protocol: grpc
  endpoints: [{address: 127.0.0.1:19082}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart}
spec:
  parentRefs: [{kind: Backend, name: cart-v1, port: 50051}]
  hostnames: [cart.example.com]
  rules:
    - matches:
        - method: {service: shop.v1.Cart, method: Get}
          headers:
            - {name: x-canary, value: "1"}
        - method: {type: RegularExpression, service: 'shop\.v[0-9]+\.Cart'}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-route, value: cart}]}
      backendRefs:
        - name: cart-v1
          weight: 90
        - name: cart-v2
          weight: 10
          filters:
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: x-v, value: "2"}]}
    - backendRefs: [{name: cart-v1}]
"#;

/// The one error `text` gives, with the line of the first line containing
/// `at` (1-based).
fn only_error(text: &str, at: &str) -> (ConfigError, u32) {
    let errs = load(text).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    let line = text.lines().position(|l| l.contains(at)).unwrap() as u32 + 1;
    (errs.into_iter().next().unwrap(), line)
}

#[test]
fn loads_a_good_grpc_route() {
    let set = load(GOOD).unwrap();
    assert_eq!(set.grpc_routes.len(), 1);
    let r = &set.grpc_routes[0];
    assert_eq!(r.key(), "default/cart");
    let m = r.spec.rules[0].matches[0].method.as_ref().unwrap();
    assert_eq!(m.kind, ValueMatchType::Exact, "Exact is the default");
    assert_eq!(
        (m.service(), m.method()),
        (Some("shop.v1.Cart"), Some("Get"))
    );
    assert_eq!(r.spec.rules[0].backend_refs[1].weight, Some(10));
    assert_eq!(
        r.spec.rules[0].filters[0].kind,
        FilterType::RequestHeaderModifier
    );
    assert!(set.http_routes.is_empty());
}

#[test]
fn unknown_field_points_at_line_and_path() {
    let bad = GOOD.replace(
        "method: {service: shop.v1.Cart, method: Get}",
        "method: {service: shop.v1.Cart, methd: Get}",
    );
    let (e, line) = only_error(&bad, "methd");
    assert_eq!(e.file, "grpc.yaml");
    assert_eq!(e.path, "spec.rules[0].matches[0].method.methd");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains("unknown field"), "{e}");
    // A field of HTTPRoute's match is no field of GRPCRoute's.
    let bad = GOOD.replace(
        "        - method: {type: RegularExpression",
        "        - path: {value: /x}\n          method: {type: RegularExpression",
    );
    let (e, line) = only_error(&bad, "path: {value");
    assert_eq!(e.path, "spec.rules[0].matches[1].path");
    assert_eq!(e.line, line, "{e}");
}

#[test]
fn a_method_match_needs_a_service_or_a_method() {
    let bad = GOOD.replace(
        "method: {service: shop.v1.Cart, method: Get}",
        "method: {type: Exact}",
    );
    let (e, line) = only_error(&bad, "method: {type: Exact}");
    assert_eq!(e.path, "spec.rules[0].matches[0].method");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains("service and method"), "{e}");
}

#[test]
fn exact_names_and_regexes_are_checked() {
    let bad = GOOD.replace("service: shop.v1.Cart,", "service: shop/v1.Cart,");
    let (e, line) = only_error(&bad, "shop/v1");
    assert_eq!(e.path, "spec.rules[0].matches[0].method.service");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains("not a gRPC service name"), "{e}");

    let bad = GOOD.replace("method: Get}", "method: 1Get}");
    let (e, _) = only_error(&bad, "1Get");
    assert_eq!(e.path, "spec.rules[0].matches[0].method.method");

    let bad = GOOD.replace(r"'shop\.v[0-9]+\.Cart'", "'shop(['");
    let (e, line) = only_error(&bad, "shop([");
    assert_eq!(e.path, "spec.rules[0].matches[1].method.service");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains("regular expression"), "{e}");

    let bad = GOOD.replace(
        "{name: x-canary, value: \"1\"}",
        "{name: \"x canary\", value: \"1\"}",
    );
    let (e, _) = only_error(&bad, "x canary");
    assert_eq!(e.path, "spec.rules[0].matches[0].headers[0].name");
}

#[test]
fn only_grpc_filters_once_each() {
    let bad = GOOD.replace(
        "        - type: RequestHeaderModifier\n",
        "        - type: URLRewrite\n          urlRewrite: {hostname: x}\n        - type: RequestHeaderModifier\n",
    );
    let (e, line) = only_error(&bad, "type: URLRewrite");
    assert_eq!(e.path, "spec.rules[0].filters[0].type");
    assert_eq!(e.line, line, "{e}");
    assert!(e.message.contains("not a GRPCRoute filter"), "{e}");

    let twice = "        - type: RequestHeaderModifier\n          requestHeaderModifier: {set: [{name: x-route, value: cart}]}\n";
    let bad = GOOD.replace(twice, &format!("{twice}{twice}"));
    let errs = load(&bad).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "spec.rules[0].filters[1].type");
    assert!(
        errs[0].message.contains("cannot be repeated"),
        "{}",
        errs[0]
    );

    // A backendRef's filters are checked the same way.
    let bad = GOOD.replace("- type: ResponseHeaderModifier", "- type: RequestRedirect");
    let errs = load(&bad).unwrap_err().0;
    assert!(
        errs.iter()
            .any(|e| e.path == "spec.rules[0].backendRefs[1].filters[0].type"
                && e.message.contains("not a GRPCRoute filter")),
        "{errs:?}"
    );
}

#[test]
fn backend_refs_and_parents_are_checked() {
    let bad = GOOD.replace("        - name: cart-v2\n", "        - name: cart-v3\n");
    let (e, line) = only_error(&bad, "name: cart-v3");
    assert_eq!(e.path, "spec.rules[0].backendRefs[1].name");
    assert_eq!(e.line, line, "{e}");

    let bad = GOOD.replace(
        "    - backendRefs: [{name: cart-v1}]\n",
        "    - matches: []\n",
    );
    let (e, _) = only_error(&bad, "matches: []");
    assert_eq!(e.path, "spec.rules[1].backendRefs");

    let bad = GOOD.replace(
        "parentRefs: [{kind: Backend,",
        "parentRefs: [{kind: Gateway,",
    );
    let (e, _) = only_error(&bad, "kind: Gateway");
    assert_eq!(e.path, "spec.parentRefs[0].kind");
}

#[test]
fn api_version_and_duplicates() {
    let bad = GOOD.replace(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute",
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: GRPCRoute",
    );
    let (e, _) = only_error(&bad, "v1alpha2");
    assert_eq!(e.path, "apiVersion");
    let route = &GOOD[GOOD.find("apiVersion: gateway").unwrap()..];
    let twice = format!("{GOOD}---\n{route}");
    let errs = load(&twice).unwrap_err().0;
    assert!(
        errs.iter().any(|e| e
            .message
            .contains("GRPCRoute default/cart is defined twice")),
        "{errs:?}"
    );
}

#[test]
fn list_limits_are_the_crds() {
    let many: String = (0..65)
        .map(|i| format!("        - method: {{service: s{i}}}\n"))
        .collect();
    let bad = GOOD.replace(
        "    - backendRefs: [{name: cart-v1}]\n",
        &format!("    - matches:\n{many}      backendRefs: [{{name: cart-v1}}]\n"),
    );
    let errs = load(&bad).unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    let lines: Vec<&str> = bad.lines().collect();
    let line = lines.iter().rposition(|l| *l == "    - matches:").unwrap() as u32 + 1;
    assert_eq!(e.path, "spec.rules[1].matches");
    assert!(e.line == line || e.line == line + 1, "{e}");
    assert!(e.message.contains("at most 64"), "{e}");
}

#[test]
fn mirrors_are_checked() {
    let with = |mirror: &str| {
        GOOD.replace(
            "      backendRefs:\n        - name: cart-v1\n          weight: 90\n",
            &format!("        - type: RequestMirror\n          requestMirror: {mirror}\n      backendRefs:\n        - name: cart-v1\n          weight: 90\n"),
        )
    };
    let ok = load(&with("{backendRef: {name: cart-v2}, percent: 10}")).unwrap();
    let f = &ok.grpc_routes[0].spec.rules[0].filters[1];
    assert_eq!(f.request_mirror.as_ref().unwrap().per_million(), 100_000);
    let half = load(&with(
        "{backendRef: {name: cart-v2}, fraction: {numerator: 1, denominator: 2}}",
    ))
    .unwrap();
    let f = &half.grpc_routes[0].spec.rules[0].filters[1];
    assert_eq!(f.request_mirror.as_ref().unwrap().per_million(), 500_000);

    let bad = with("{backendRef: {name: nowhere}}");
    let (e, line) = only_error(&bad, "name: nowhere");
    assert_eq!(
        e.path,
        "spec.rules[0].filters[1].requestMirror.backendRef.name"
    );
    assert_eq!(e.line, line, "{e}");
    let (e, _) = only_error(
        &with("{backendRef: {name: cart-v2}, percent: 101}"),
        "percent: 101",
    );
    assert_eq!(e.path, "spec.rules[0].filters[1].requestMirror.percent");
    let both = with("{backendRef: {name: cart-v2}, percent: 1, fraction: {numerator: 1}}");
    let (e, _) = only_error(&both, "numerator");
    assert!(e.message.contains("only one of percent or fraction"), "{e}");
    let (e, _) = only_error(
        &with("{backendRef: {name: cart-v2}, fraction: {numerator: 3, denominator: 2}}"),
        "numerator",
    );
    assert_eq!(e.path, "spec.rules[0].filters[1].requestMirror.fraction");

    // On a backendRef, a mirror is refused.
    let bad = GOOD.replace(
        "            - type: ResponseHeaderModifier\n              responseHeaderModifier: {add: [{name: x-v, value: \"2\"}]}\n",
        "            - type: RequestMirror\n              requestMirror: {backendRef: {name: cart-v1}}\n",
    );
    let (e, _) = only_error(&bad, "requestMirror: {backendRef: {name: cart-v1}}");
    assert_eq!(e.path, "spec.rules[0].backendRefs[1].filters[0].type");
}
