//! The translation of Services and EndpointSlices, checked through the
//! file loader (what it writes must load) and the name table.

use super::*;
use serde_json::json;
use weft_mesh::config::{load_sources, ConfigSet};
use weft_mesh::names::NameTable;

fn service(v: serde_json::Value) -> Arc<Service> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn load(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> ConfigSet {
    let docs = backends(services, slices);
    load_sources(
        docs.into_iter()
            .map(|d| (format!("kubernetes:{}", d.service), d.text))
            .collect(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn addresses(set: &ConfigSet, key: &str) -> Vec<String> {
    let b = set.backends.iter().find(|b| b.key() == key).unwrap();
    b.spec.endpoints.iter().map(|e| e.address.clone()).collect()
}

fn reviews() -> Arc<Service> {
    service(
        json!({"metadata": {"name": "reviews", "namespace": "shop"}, "spec": {"ports": [
            {"name": "grpc", "port": 9090, "targetPort": "grpc-web", "appProtocol": "grpc"},
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]}}),
    )
}

#[test]
fn one_backend_per_port_with_ready_endpoints_at_the_resolved_port() {
    let slices = [
        slice(
            json!({"metadata": {"name": "reviews-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc", "port": 9091}],
            "endpoints": [
                {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.1"]},
                {"addresses": ["10.1.0.3"], "conditions": {"ready": false}},
                {"addresses": ["10.1.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            ]}),
        ),
        // The same endpoint in a second slice (a move between slices) counts once.
        slice(
            json!({"metadata": {"name": "reviews-b", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.1.0.2"], "conditions": {"ready": true}}]}),
        ),
        // Another namespace's Service of the same name is not this one.
        slice(
            json!({"metadata": {"name": "reviews-x", "namespace": "other", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.9.0.1"]}]}),
        ),
    ];
    let set = load(&[reviews()], &slices);
    assert_eq!(set.backends.len(), 2, "the UDP port has no Backend");
    assert_eq!(
        addresses(&set, "shop/reviews"),
        ["10.1.0.1:8080", "10.1.0.2:8080"]
    );
    assert_eq!(
        addresses(&set, "shop/reviews.9090"),
        ["10.1.0.1:9091", "10.1.0.2:9091"]
    );
    let http = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/reviews")
        .unwrap();
    assert_eq!(http.spec.protocol, Protocol::Http);
    assert_eq!(http.spec.port, Some(80));
    let grpc = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/reviews.9090")
        .unwrap();
    assert_eq!(grpc.spec.protocol, Protocol::Grpc);

    let names = NameTable::build(&set, "default");
    assert_eq!(names.get("reviews.shop").unwrap().name, "shop/reviews");
    assert_eq!(
        names.get("reviews.shop.svc.cluster.local:80").unwrap().name,
        "shop/reviews"
    );
    assert_eq!(
        names.get("reviews.shop.svc:9090").unwrap().name,
        "shop/reviews.9090"
    );
    assert!(
        names.get("reviews").is_none(),
        "a bare name is for its own namespace"
    );
}

#[test]
fn terminating_endpoints_serve_only_while_none_is_ready() {
    let ep = |ready: bool| {
        slice(
            json!({"metadata": {"name": "reviews-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.1.0.1"], "conditions": {"ready": ready}},
                {"addresses": ["10.1.0.4"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.1.0.5"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            ]}),
        )
    };
    let set = load(&[reviews()], &[ep(true)]);
    assert_eq!(addresses(&set, "shop/reviews"), ["10.1.0.1:8080"]);
    let set = load(&[reviews()], &[ep(false)]);
    assert_eq!(addresses(&set, "shop/reviews"), ["10.1.0.4:8080"]);
}

#[test]
fn app_protocols_and_odd_services() {
    let svc = |name: &str, spec: serde_json::Value| {
        service(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}))
    };
    let set = load(
        &[
            svc(
                "h2",
                json!({"ports": [{"port": 80, "appProtocol": "kubernetes.io/h2c"}]}),
            ),
            svc(
                "db",
                json!({"ports": [{"port": 5432, "appProtocol": "tcp"}]}),
            ),
            svc(
                "tls",
                json!({"ports": [{"port": 443, "appProtocol": "https"}]}),
            ),
            svc(
                "ws",
                json!({"ports": [{"port": 80, "appProtocol": "kubernetes.io/ws"}]}),
            ),
            svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            svc("empty", json!({"ports": [{"port": 80}]})),
            svc(
                "headless",
                json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 80}]}),
            ),
        ],
        &[slice(
            json!({"metadata": {"name": "v6", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv6", "ports": [{"port": 5432}],
            "endpoints": [{"addresses": ["fd00::1"]}]}),
        )],
    );
    let proto = |key: &str| {
        set.backends
            .iter()
            .find(|b| b.key() == key)
            .unwrap()
            .spec
            .protocol
    };
    assert_eq!(proto("shop/h2"), Protocol::Http2);
    assert_eq!(proto("shop/db"), Protocol::Tcp);
    assert_eq!(proto("shop/tls"), Protocol::Tcp);
    assert_eq!(proto("shop/ws"), Protocol::Http);
    assert_eq!(addresses(&set, "shop/db"), ["[fd00::1]:5432"]);
    assert!(
        addresses(&set, "shop/empty").is_empty(),
        "known, with no endpoints"
    );
    assert!(set.backends.iter().all(|b| b.meta.name != "ext"));
    let headless = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/headless")
        .unwrap();
    assert!(!headless
        .meta
        .annotations
        .contains_key("weft.dev/cluster-ips"));
}
