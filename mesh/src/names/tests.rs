//! Tests of the name table; the `#[cfg(test)] mod tests` of `names.rs`.

use super::*;
use crate::config::load_sources;

fn table(yaml: &str, local_ns: &str) -> (ConfigSet, NameTable<Destination>) {
    let set = load_sources(vec![("t.yaml".into(), yaml.into())]).unwrap();
    let t = NameTable::build(&set, local_ns);
    (set, t)
}

const BACKENDS: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews, namespace: shop}
spec:
  port: 8080
  endpoints: [{address: 127.0.0.1:1}]
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: db, namespace: shop}
spec:
  protocol: tcp
  endpoints: [{address: 127.0.0.1:2}]
"#;

#[test]
fn ports_are_stripped() {
    for (a, want) in [
        ("reviews:8080", "reviews"),
        ("reviews", "reviews"),
        ("reviews:", "reviews"),
        ("127.0.0.1:18083", "127.0.0.1"),
        ("a:b:80", "a:b"),
        ("host:http", "host:http"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("8080", "8080"),
        (":80", ""),
        ("", ""),
    ] {
        assert_eq!(strip_port(a), want, "{a}");
    }
}

#[test]
fn a_backend_is_reachable_by_its_service_names() {
    let (_, t) = table(BACKENDS, "shop");
    for name in [
        "reviews",
        "reviews:8080",
        "reviews.shop",
        "reviews.shop:8080",
        "reviews.shop.svc",
        "reviews.shop.svc.cluster.local",
        "reviews.shop.svc.cluster.local:8080",
        "REVIEWS.Shop",
        "reviews.shop.",
        // A port it was not given falls back to the bare name.
        "reviews.shop:9999",
    ] {
        let d = t.get(name).unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(d.name, "shop/reviews", "{name}");
        assert_eq!(d.backend, Some(0));
        assert!(d.matches.is_empty());
    }
    assert!(t.get("reviews.other").is_none());
    assert!(t.get("view").is_none());
}

#[test]
fn a_bare_name_is_only_known_in_its_own_namespace() {
    let (_, t) = table(BACKENDS, "default");
    assert!(t.get("reviews").is_none());
    assert!(t.get("reviews.shop").is_some());
}

#[test]
fn opaque_tcp_backends_get_no_implicit_route() {
    let (set, t) = table(BACKENDS, "shop");
    assert_eq!(t.get("reviews").unwrap().implicit_backend(&set), Some(0));
    assert_eq!(t.get("db").unwrap().implicit_backend(&set), None);
    assert_eq!(t.get("db").unwrap().backend, Some(1));
}

#[test]
fn routes_take_over_their_parents_names_ordered_by_precedence() {
    let yaml = format!(
        "{BACKENDS}{}",
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: first, namespace: shop}
spec:
  parentRefs: [{name: reviews}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: reviews}]
    - backendRefs: [{name: reviews}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: second, namespace: shop}
spec:
  parentRefs: [{name: reviews}]
  hostnames: [reviews.example.com, "*.example.com", "*.api.example.com"]
  rules:
    - matches:
        - {path: {type: Exact, value: /api/v1}}
        - {path: {type: PathPrefix, value: /api}, method: GET}
      backendRefs: [{name: reviews}]
"#
    );
    let (set, t) = table(&yaml, "shop");
    let d = t.get("reviews:8080").unwrap();
    let got: Vec<(usize, usize, Option<usize>)> = d
        .matches
        .iter()
        .map(|m| (m.route, m.rule, m.matched))
        .collect();
    // Exact first; then /api with a method before /api without; the
    // catch-all last.
    assert_eq!(
        got,
        vec![
            (1, 0, Some(0)),
            (1, 0, Some(1)),
            (0, 0, Some(0)),
            (0, 1, None)
        ]
    );
    // The route's name keeps the Backend for CONNECT and opaque TCP, and
    // no implicit route.
    assert_eq!(d.backend, Some(0));
    assert_eq!(d.implicit_backend(&set), None);
    // Hostnames: exact, then the longest wildcard suffix.
    assert_eq!(t.get("reviews.example.com").unwrap().matches.len(), 2);
    assert_eq!(t.get("Reviews.Example.com:80").unwrap().matches.len(), 2);
    assert_eq!(t.get("x.api.example.com").unwrap().name, ".api.example.com");
    assert_eq!(t.get("x.example.com").unwrap().name, ".example.com");
    assert_eq!(t.get("x.example.com").unwrap().backend, None);
    assert!(t.get("example.com").is_none());
}

#[test]
fn map_keeps_names_shared() {
    let (_, t) = table(BACKENDS, "shop");
    let mut calls = 0;
    let mapped = t.map(|d| {
        calls += 1;
        d.name.len()
    });
    assert_eq!(calls, t.entries().len());
    assert_eq!(mapped.get("reviews.shop.svc"), Some(&"shop/reviews".len()));
    assert_eq!(mapped.get("db:1"), Some(&"shop/db".len()));
}

#[test]
fn precedence_follows_gateway_api() {
    let m = |yaml: &str| -> RouteMatch { serde_json::from_str(yaml).unwrap() };
    let exact = precedence(Some(&m(r#"{"path": {"type": "Exact", "value": "/a"}}"#)));
    let long = precedence(Some(&m(
        r#"{"path": {"type": "PathPrefix", "value": "/abc/"}}"#,
    )));
    let short = precedence(Some(&m(
        r#"{"path": {"type": "PathPrefix", "value": "/a"}}"#,
    )));
    let method = precedence(Some(&m(
        r#"{"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}"#,
    )));
    let regex = precedence(Some(&m(
        r#"{"path": {"type": "RegularExpression", "value": "/.*"}}"#,
    )));
    let all = precedence(None);
    assert!(exact > long && long > method && method > short && short > all && all > regex);
}

#[test]
fn each_port_of_a_service_is_its_own_backend() {
    // As the control plane writes a Service with ports 80 (its default)
    // and 9090.
    let (_, t) = table(
        r#"
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: web, namespace: shop, annotations: {weft.dev/service: web, weft.dev/cluster-ips: "10.0.0.7,fd00::7"}}
spec: {port: 80, endpoints: [{address: "10.1.0.1:8080"}]}
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: web.9090, namespace: shop, annotations: {weft.dev/service: web, weft.dev/cluster-ips: "10.0.0.7,fd00::7"}}
spec: {port: 9090, protocol: grpc, endpoints: [{address: "10.1.0.1:9091"}]}
"#,
        "shop",
    );
    for name in [
        "web",
        "web:80",
        "web.shop",
        "web.shop.svc.cluster.local:80",
        "web.shop:1234",
    ] {
        assert_eq!(
            t.get(name).map(|d| d.name.as_str()),
            Some("shop/web"),
            "{name}"
        );
    }
    for name in [
        "web:9090",
        "web.shop:9090",
        "web.shop.svc:9090",
        "web.shop.svc.cluster.local:9090",
    ] {
        assert_eq!(
            t.get(name).map(|d| d.name.as_str()),
            Some("shop/web.9090"),
            "{name}"
        );
    }
    // The extra port's Backend has no names of its own.
    assert!(t.get("web.9090").is_none());
    assert!(t.get("web.9090.shop").is_none());
}

const GRPC: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: shop}
spec:
  parentRefs: [{name: reviews}]
  rules:
    - backendRefs: [{name: reviews}]
    - matches:
        - method: {service: a.Svc}
        - method: {service: a.Svc, method: Get}
        - method: {service: a.Svc, method: Get}
          headers: [{name: x-v, value: "1"}]
        - method: {type: RegularExpression, service: 'a\..*', method: Get}
        - headers: [{name: x-v, value: "1"}]
        - method: {method: GetAll}
      backendRefs: [{name: reviews}]
"#;

#[test]
fn grpc_routes_are_ordered_by_their_own_precedence() {
    let (_, t) = table(&format!("{BACKENDS}{GRPC}"), "shop");
    let d = t.get("reviews.shop").unwrap();
    let got: Vec<(bool, usize, Option<usize>)> = d
        .matches
        .iter()
        .map(|m| (m.grpc, m.rule, m.matched))
        .collect();
    // Exact before regex before none; then service characters (a
    // method-only match has none), method characters, headers; the rule
    // without matches last.
    assert_eq!(
        got,
        vec![
            (true, 1, Some(2)),
            (true, 1, Some(1)),
            (true, 1, Some(0)),
            (true, 1, Some(5)),
            (true, 1, Some(3)),
            (true, 1, Some(4)),
            (true, 0, None),
        ]
    );
}

#[test]
fn an_http_and_a_grpc_route_on_one_name_do_not_merge() {
    let http = |ts: &str| {
        format!(
            r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: h, namespace: shop{ts}}}
spec:
  parentRefs: [{{name: reviews}}]
  rules: [{{backendRefs: [{{name: reviews}}]}}]
"#
        )
    };
    let kinds = |yaml: &str| -> Vec<bool> {
        let (_, t) = table(yaml, "shop");
        let mut k: Vec<bool> = t
            .get("reviews")
            .unwrap()
            .matches
            .iter()
            .map(|m| m.grpc)
            .collect();
        k.dedup();
        k
    };
    // No timestamps: "shop/g" sorts before "shop/h", the GRPCRoute keeps the name.
    assert_eq!(kinds(&format!("{BACKENDS}{}{GRPC}", http(""))), vec![true]);
    // The oldest route wins over the name order.
    let old = ", creationTimestamp: \"2026-01-01T00:00:00Z\"";
    assert_eq!(
        kinds(&format!("{BACKENDS}{}{GRPC}", http(old))),
        vec![false]
    );
    let newer = GRPC.replace(
        "namespace: shop}",
        "namespace: shop, creationTimestamp: \"2026-02-01T00:00:00Z\"}",
    );
    assert_eq!(
        kinds(&format!("{BACKENDS}{}{newer}", http(old))),
        vec![false]
    );
    // Each kind alone keeps the name.
    assert_eq!(kinds(&format!("{BACKENDS}{}", http(""))), vec![false]);
}

#[test]
fn a_consumer_route_replaces_producer_routes_for_its_own_namespace_only() {
    let yaml = format!(
        "{BACKENDS}{}",
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: reviews}]
  rules: [{backendRefs: [{name: reviews}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: web}
spec:
  parentRefs: [{kind: Service, name: reviews, namespace: shop}]
  rules: [{backendRefs: [{name: reviews, namespace: shop}]}]
"#
    );
    let routes_for = |ns: &str| {
        let (set, t) = table(&yaml, ns);
        let d = t.get("reviews.shop").unwrap().clone();
        d.matches
            .iter()
            .map(|m| set.http_routes[m.route].key())
            .collect::<Vec<_>>()
    };
    assert_eq!(routes_for("shop"), ["shop/producer"]);
    assert_eq!(routes_for("other"), ["shop/producer"]);
    assert_eq!(routes_for("web"), ["web/consumer"]);
}

#[test]
fn a_route_takes_over_its_services_cluster_ips() {
    let (set, t) = table(
        r#"
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: web, namespace: shop, annotations: {weft.dev/service: web, weft.dev/cluster-ips: "10.96.0.7,fd00::7"}}
spec: {port: 80, endpoints: [{address: "10.1.0.1:8080"}]}
---
apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: web.9090, namespace: shop, annotations: {weft.dev/service: web, weft.dev/cluster-ips: "10.96.0.7,fd00::7"}}
spec: {port: 9090, endpoints: [{address: "10.1.0.1:9091"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web}]
  rules: [{backendRefs: [{name: web.9090}]}]
"#,
        "other",
    );
    for name in ["10.96.0.7:80", "10.96.0.7", "[fd00::7]:80", "[fd00::7]"] {
        let d = t.get_exact(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(d.matches.len(), 1, "{name}");
        assert_eq!(set.http_routes[d.matches[0].route].meta.name, "web");
    }
    // The other port is still that port's Backend, without the route.
    let d = t.get_exact("10.96.0.7:9090").unwrap();
    assert_eq!(d.name, "shop/web.9090");
    assert!(d.matches.is_empty());
    // Exact: a port the Service lacks is nothing (`get` would fall back).
    assert!(t.get_exact("10.96.0.7:1234").is_none());
    assert_eq!(
        address_name("[::ffff:10.96.0.7]:80".parse().unwrap()),
        "10.96.0.7:80"
    );
    assert_eq!(
        address_name("[fd00::7]:80".parse().unwrap()),
        "[fd00::7]:80"
    );
}

#[test]
fn lookup_names_what_it_was_found_by() {
    let route = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{name: db}]
  hostnames: ["*.example.com"]
  rules: [{backendRefs: [{name: reviews}]}]
"#;
    let (_, t) = table(&format!("{BACKENDS}{route}"), "shop");
    let by = |a: &str| {
        t.lookup(a)
            .map(|(name, d)| (name.to_owned(), d.name.clone()))
    };
    let hit = |name: &str, dest: &str| Some((name.to_owned(), dest.to_owned()));
    assert_eq!(
        by("Reviews.Shop:8080"),
        hit("reviews.shop:8080", "shop/reviews")
    );
    assert_eq!(by("reviews.shop:9"), hit("reviews.shop", "shop/reviews"));
    assert_eq!(by("reviews."), hit("reviews", "shop/reviews"));
    assert_eq!(
        by("api.example.com:80"),
        hit(".example.com", ".example.com")
    );
    assert_eq!(by("nothing.shop"), None);
    for a in ["Reviews.Shop:8080", "api.example.com", "nothing"] {
        assert_eq!(t.get(a).map(|d| &d.name), by(a).map(|(_, d)| d).as_ref());
    }
    let names = t.names();
    assert!(
        names.contains(&"*.example.com".to_owned()) && names.contains(&"reviews.shop".to_owned())
    );
    assert!(names.windows(2).all(|w| w[0] <= w[1]), "sorted");
}
