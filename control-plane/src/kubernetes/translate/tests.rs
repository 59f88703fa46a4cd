//! The translation of Services and EndpointSlices, checked through the
//! file loader (what it writes must load) and the name table, and the
//! endpoints' identities from their Pods.

use super::super::pods::PodView;
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
    load_with(services, slices, &[])
}

fn load_with(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    pods: &[Arc<PodView>],
) -> ConfigSet {
    let ids = Identities {
        trust_domain: "cluster.test",
        pods: Pods::new(pods),
    };
    let docs = backends(services, slices, &ids);
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
    let ext = set.backends.iter().find(|b| b.key() == "shop/ext").unwrap();
    assert_eq!(ext.spec.dns.as_ref().unwrap().name, "example.com");
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

fn pod(v: serde_json::Value) -> Arc<PodView> {
    let mut p: PodView = serde_json::from_value(v).unwrap();
    p.trim();
    Arc::new(p)
}

fn identities(set: &ConfigSet, key: &str) -> Vec<(String, Option<String>)> {
    let b = set.backends.iter().find(|b| b.key() == key).unwrap();
    b.spec
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.identity.clone()))
        .collect()
}

#[test]
fn meshed_pods_give_their_endpoints_an_identity() {
    let meshed = json!({"weft.dev/injected": "proxy"});
    let pods = [
        // Meshed, found by targetRef.
        pod(
            json!({"metadata": {"name": "r-1", "namespace": "shop", "uid": "u1",
            "annotations": meshed, "labels": {"app": "reviews"}},
            "spec": {"serviceAccountName": "reviews", "containers": [{"name": "app", "image": "x"}]},
            "status": {"podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}]}}),
        ),
        // Not meshed.
        pod(
            json!({"metadata": {"name": "r-2", "namespace": "shop", "annotations": {"other": "x"}},
            "spec": {"serviceAccountName": "reviews"},
            "status": {"podIPs": [{"ip": "10.1.0.2"}]}}),
        ),
        // Meshed, no service account named: `default`; found by IP.
        pod(
            json!({"metadata": {"name": "r-3", "namespace": "shop", "annotations": meshed},
            "spec": {}, "status": {"podIPs": [{"ip": "10.1.0.3"}]}}),
        ),
        // Meshed and host-network: never matched by IP.
        pod(
            json!({"metadata": {"name": "node-agent", "namespace": "shop", "annotations": meshed},
            "spec": {"serviceAccountName": "agent", "hostNetwork": true},
            "status": {"podIPs": [{"ip": "10.1.0.6"}]}}),
        ),
        // Two Pods claiming one IP with different identities: neither.
        pod(
            json!({"metadata": {"name": "dup-a", "namespace": "shop", "annotations": meshed},
            "spec": {"serviceAccountName": "a"}, "status": {"podIPs": [{"ip": "10.1.0.7"}]}}),
        ),
        pod(
            json!({"metadata": {"name": "dup-b", "namespace": "shop", "annotations": meshed},
            "spec": {"serviceAccountName": "b"}, "status": {"podIPs": [{"ip": "10.1.0.7"}]}}),
        ),
    ];
    let to = |name: &str| json!({"kind": "Pod", "name": name, "namespace": "shop"});
    let slices = [slice(
        json!({"metadata": {"name": "reviews-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "r-1", "uid": "u1"}},
            {"addresses": ["10.1.0.2"], "targetRef": to("r-2")},
            {"addresses": ["10.1.0.3"]},
            // Its Pod is not in the store (yet): plaintext.
            {"addresses": ["10.1.0.4"], "targetRef": to("r-4")},
            // The targetRef wins over the IP: r-1's IP, but names r-2.
            {"addresses": ["10.1.0.5"], "targetRef": to("r-2")},
            {"addresses": ["10.1.0.6"]},
            {"addresses": ["10.1.0.7"]},
            // A targetRef to a Pod of the same name but another UID (it was
            // replaced): not that Pod.
            {"addresses": ["10.1.0.8"], "targetRef": {"kind": "Pod", "name": "r-1", "uid": "old"}},
        ]}),
    )];
    let set = load_with(&[reviews()], &slices, &pods);
    let id = |sa: &str| Some(format!("spiffe://cluster.test/ns/shop/sa/{sa}"));
    assert_eq!(
        identities(&set, "shop/reviews"),
        [
            ("10.1.0.1:8080".to_string(), id("reviews")),
            ("10.1.0.2:8080".to_string(), None),
            ("10.1.0.3:8080".to_string(), id("default")),
            ("10.1.0.4:8080".to_string(), None),
            ("10.1.0.5:8080".to_string(), None),
            ("10.1.0.6:8080".to_string(), None),
            ("10.1.0.7:8080".to_string(), None),
            ("10.1.0.8:8080".to_string(), None),
        ]
    );
    // Without Pods, every endpoint is plaintext.
    let set = load(&[reviews()], &slices);
    assert!(identities(&set, "shop/reviews")
        .iter()
        .all(|(_, id)| id.is_none()));
}

#[test]
fn an_ip_fallback_matches_ipv6_in_any_spelling_and_a_pod_is_trimmed() {
    let p = pod(json!({"metadata": {"name": "db-0", "namespace": "shop",
            "annotations": {"weft.dev/injected": "proxy", "big": "x".repeat(1000)},
            "labels": {"app": "db"},
            "managedFields": [{"manager": "kubelet", "operation": "Update"}]},
        "spec": {"serviceAccountName": "db"},
        "status": {"podIPs": [{"ip": "10.1.0.9"}, {"ip": "fd00:0:0::9"}]}}));
    assert_eq!(
        p.metadata.annotations.as_ref().map(|a| a.len()),
        Some(1),
        "only the injection annotation is kept"
    );
    assert!(p.metadata.labels.is_none() && p.metadata.managed_fields.is_none());
    let db = service(json!({"metadata": {"name": "db", "namespace": "shop"},
        "spec": {"ports": [{"port": 5432, "appProtocol": "tcp"}]}}));
    let slices = [slice(
        json!({"metadata": {"name": "db-v6", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv6", "ports": [{"port": 5432}],
        "endpoints": [{"addresses": ["fd00::9"]}]}),
    )];
    let set = load_with(&[db], &slices, &[p]);
    assert_eq!(
        identities(&set, "shop/db"),
        [(
            "[fd00::9]:5432".to_string(),
            Some("spiffe://cluster.test/ns/shop/sa/db".to_string())
        )]
    );
}

fn external(name: &str, target: &str, ports: serde_json::Value) -> Arc<Service> {
    service(json!({"metadata": {"name": name, "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": target, "ports": ports}}))
}

#[test]
fn an_external_name_service_is_a_dns_backend_reached_by_its_names() {
    let set = load(
        &[
            external(
                "billing",
                "Billing.Example.COM.",
                json!([{"name": "web", "port": 80}, {"name": "api", "port": 8443, "appProtocol": "kubernetes.io/h2c"}]),
            ),
            external("bare", "bare.example.com", json!(null)),
        ],
        &[],
    );
    let b = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/billing")
        .unwrap();
    let dns = b.spec.dns.as_ref().unwrap();
    assert_eq!((dns.name.as_str(), dns.port), ("billing.example.com", 80));
    assert!(b.spec.endpoints.is_empty());
    assert!(!b.meta.annotations.contains_key("weft.dev/cluster-ips"));
    let api = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/billing.8443")
        .unwrap();
    assert_eq!(api.spec.dns.as_ref().unwrap().port, 8443);
    assert_eq!(api.spec.protocol, Protocol::Http2);
    let bare = set
        .backends
        .iter()
        .find(|b| b.key() == "shop/bare")
        .unwrap();
    assert_eq!(
        bare.spec.dns.as_ref().unwrap().port,
        80,
        "no ports: port 80"
    );
    let names = NameTable::build(&set, "shop");
    for n in [
        "billing",
        "billing.shop",
        "billing.shop.svc.cluster.local:80",
    ] {
        assert_eq!(names.get(n).unwrap().name, "shop/billing", "{n}");
    }
    assert_eq!(
        names.get("billing.shop.svc:8443").unwrap().name,
        "shop/billing.8443"
    );
}

#[test]
fn an_external_name_reaching_this_host_is_refused_with_its_reason() {
    let refused_targets = [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "169.254.169.254",
        "fe80::1",
        "febf::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "::",
        "localhost",
        "LOCALHOST.",
        "metadata.localhost",
        "not a name",
        "",
    ];
    let services: Vec<Arc<Service>> = refused_targets
        .iter()
        .enumerate()
        .map(|(i, t)| external(&format!("x{i:02}"), t, json!([{"port": 80}])))
        .chain([external("ok", "10.20.30.40", json!([{"port": 80}]))])
        .chain([external("fec0", "[fec0::1]", json!([{"port": 80}]))])
        .collect();
    let refused = refused(&services);
    assert_eq!(refused.len(), refused_targets.len(), "{refused:#?}");
    for (i, (service, reason)) in refused.iter().enumerate() {
        assert_eq!(service, &format!("shop/x{i:02}"));
        let t = refused_targets[i];
        if t.contains(' ') || t.is_empty() {
            assert!(reason.contains("is not a DNS name"), "{t}: {reason}");
        } else {
            assert!(
                reason.contains("would reach the sidecar itself"),
                "{t}: {reason}"
            );
        }
    }
    assert!(refused[0].1.contains("loopback"), "{}", refused[0].1);
    assert!(refused[4].1.contains("link-local"), "{}", refused[4].1);
    // Left out of the Backends; an IP literal elsewhere, or fec0::/10 (not
    // link-local), is an ordinary destination.
    let set = load(&services, &[]);
    let keys: Vec<String> = set.backends.iter().map(|b| b.key()).collect();
    assert_eq!(keys, ["shop/fec0", "shop/ok"]);
    assert_eq!(addresses(&set, "shop/ok"), ["10.20.30.40:80"]);
    assert_eq!(addresses(&set, "shop/fec0"), ["[fec0::1]:80"]);
}

#[test]
fn a_headless_service_is_its_ready_pod_ips_by_name_only() {
    let set = load(
        &[
            service(json!({"metadata": {"name": "db", "namespace": "shop"},
                "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "pg", "port": 5432, "appProtocol": "tcp"}]}})),
            service(
                json!({"metadata": {"name": "portless", "namespace": "shop"},
                "spec": {"clusterIP": "None"}}),
            ),
        ],
        &[slice(
            json!({"metadata": {"name": "db-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432}],
            "endpoints": [
                {"addresses": ["10.1.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.8"], "conditions": {"ready": false}},
            ]}),
        )],
    );
    assert_eq!(addresses(&set, "shop/db"), ["10.1.0.7:5432"]);
    assert!(set.backends.iter().all(|b| b.meta.name != "portless"));
    let names = NameTable::build(&set, "shop");
    assert_eq!(names.get("db.shop.svc:5432").unwrap().name, "shop/db");
    assert!(names.get("None:5432").is_none());
    assert!(refused(&[]).is_empty());
}

#[test]
fn a_pod_update_that_changes_nothing_read_keeps_its_fingerprint() {
    let base = serde_json::json!({
        "metadata": {"name": "reviews-0", "namespace": "shop", "uid": "u1",
            "labels": {"app": "reviews"}, "annotations": {"weft.dev/injected": "true", "other": "x"}},
        "spec": {"serviceAccountName": "reviews"},
        "status": {"phase": "Running", "podIP": "10.1.0.5", "conditions": [{"type": "Ready", "status": "True"}]}});
    let fp = |v: &serde_json::Value| pod(v.clone()).fingerprint();
    let mut churn = base.clone();
    churn["status"]["conditions"][0]["status"] = "False".into();
    churn["metadata"]["labels"]["pod-template-hash"] = "abc".into();
    churn["metadata"]["annotations"]["other"] = "y".into();
    churn["metadata"]["resourceVersion"] = "99".into();
    assert_eq!(
        fp(&base),
        fp(&churn),
        "status, labels and other annotations are not read"
    );
    for (path, value) in [
        (&["status", "podIP"][..], serde_json::json!("10.1.0.6")),
        (
            &["spec", "serviceAccountName"][..],
            serde_json::json!("ratings"),
        ),
        (&["spec", "hostNetwork"][..], serde_json::json!(true)),
        (&["metadata", "uid"][..], serde_json::json!("u2")),
    ] {
        let mut changed = base.clone();
        let mut at = &mut changed;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        assert_ne!(fp(&base), fp(&changed), "{path:?} is read");
    }
    let mut unmeshed = base.clone();
    unmeshed["metadata"]["annotations"] = serde_json::json!({"other": "x"});
    assert_ne!(fp(&base), fp(&unmeshed), "the injection annotation is read");
}
