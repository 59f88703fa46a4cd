//! Headless and ExternalName Services, end to end: the fake API server
//! holds them, the real `weft-control-plane --kubernetes` turns them into
//! Backends, and a real sidecar in mesh mode reaches them by name. An
//! ExternalName Service is resolved by the sidecar against a real (tiny,
//! in-test) DNS server (`--dns-server`); an answer that is this host's
//! own address (127.0.0.1) is dropped, and externalNames that would reach
//! the sidecar itself are refused by the control plane and listed on its
//! `/config`.
//!
//! Endpoint addresses: the API server refuses loopback ones, so the
//! upstreams listen on this host's own non-loopback IPv4 address.

use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;
use weft_tests::dns::DnsServer;
use weft_tests::kube_cluster::install_control_plane_account;
use weft_tests::kube_fake::KubeFake;
use weft_tests::pod_net::PodNet;
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);
const EXTERNAL: &str = "billing.example.test";

fn external(name: &str, target: &str, port: u16) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": target, "ports": [{"name": "http", "port": port}]}})
}

/// The addresses the sidecar's `/endpoints` lists for `backend`.
async fn endpoints(proxy: &Proxy, backend: &str) -> Option<Vec<String>> {
    let (_, body) = proxy.admin_get("/endpoints").await;
    let v: Value = serde_json::from_str(&body).ok()?;
    let list = v.as_array().or_else(|| v["backends"].as_array())?;
    let b = list.iter().find(|b| b["backend"] == backend)?;
    let mut out: Vec<String> = b["endpoints"]
        .as_array()?
        .iter()
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    Some(out)
}

/// A request for `host` through the sidecar, once it answers 200.
async fn reached(proxy: &Proxy, host: &str) -> String {
    eventually(
        &format!("{host} reached through the sidecar"),
        LIMIT,
        || async {
            let r = get(&proxy.url("/"), &[("host", host)]).await.ok()?;
            (r.status == 200).then(|| r.header("x-upstream").unwrap_or_default().to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_and_external_name_services_are_reached_by_name() {
    let Some(pods) = PodNet::new("headless_and_external_name_services_are_reached_by_name") else {
        return;
    };
    let billing = pods.upstream("billing").await;
    let db = pods.upstream("db").await;
    // The external name answers billing's (stand-in Pod) address and
    // 127.0.0.1: the latter must never become an endpoint.
    let dns = DnsServer::start(1).await;
    let billing_ip: Ipv4Addr = billing.addr.ip().to_string().parse().unwrap();
    dns.set(EXTERNAL, &[billing_ip, Ipv4Addr::LOCALHOST]);

    let fake = KubeFake::start().await;
    install_control_plane_account(&fake, &["shop"]).await;
    fake.create(external("billing", EXTERNAL, billing.addr.port()))
        .await;
    fake.create(external("sneaky", "localhost", 80)).await;
    fake.create(external("metadata", "169.254.169.254", 80))
        .await;
    let headless = fake
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                     "ports": [{"name": "http", "port": 7000, "targetPort": db.addr.port()}]}}))
        .await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    fake.create(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "db-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": db.addr.port(), "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [db.addr.ip().to_string()], "conditions": {"ready": true}},
            {"addresses": ["10.9.9.9"], "conditions": {"ready": false}},
        ]}))
        .await;

    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let token = cp.token("shop", "productpage");
    let mut b = Proxy::builder("")
        .no_config()
        .arg("--dns-server")
        .arg(dns.addr.to_string());
    for a in cp.proxy_args("shop", "productpage", &token) {
        b = b.arg(a);
    }
    let proxy = b.start();
    eventually("the sidecar is ready", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;

    // ExternalName: by the Service's names, through DNS, never to loopback.
    for host in ["billing", "billing.shop", "billing.shop.svc.cluster.local"] {
        assert_eq!(reached(&proxy, host).await, "billing", "{host}");
    }
    assert_eq!(
        endpoints(&proxy, "shop/billing").await.unwrap(),
        [billing.addr.to_string()],
        "127.0.0.1 is dropped"
    );
    eventually("the dropped answer is logged", LIMIT, || async {
        proxy
            .logs()
            .contains("this host's own addresses")
            .then_some(())
    })
    .await;

    // Headless: by name, to the ready Pod IP only.
    for host in ["db:7000", "db.shop.svc:7000"] {
        assert_eq!(reached(&proxy, host).await, "db", "{host}");
    }
    assert_eq!(
        endpoints(&proxy, "shop/db").await.unwrap(),
        [db.addr.to_string()]
    );

    // The refused ones: on the control plane's /config with the reason,
    // logged, and not destinations.
    let status = cp.admin_json("/config").await;
    let refused = &status["kubernetes"]["refused_services"];
    assert_eq!(refused[0]["service"], "shop/metadata", "{status}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("link-local"),
        "{refused}"
    );
    assert_eq!(refused[1]["service"], "shop/sneaky", "{status}");
    assert!(
        refused[1]["reason"]
            .as_str()
            .unwrap()
            .contains("would reach the sidecar itself"),
        "{refused}"
    );
    assert!(cp.logs().contains("Service left out of the mesh"));
    for host in ["sneaky.shop", "metadata.shop"] {
        let r = get(&proxy.url("/"), &[("host", host)]).await.unwrap();
        assert_ne!(r.header("x-upstream"), Some("billing"), "{host}");
        assert!(
            endpoints(&proxy, &format!("shop/{}", &host[..host.len() - 5]))
                .await
                .is_none()
        );
    }

    // Fixing the Service brings it in (and off the refused list).
    fake.merge_patch(
        "v1",
        "Service",
        Some("shop"),
        "sneaky",
        None,
        json!({"spec": {"externalName": EXTERNAL, "ports": [{"name": "http", "port": billing.addr.port()}]}}),
    )
    .await;
    assert_eq!(reached(&proxy, "sneaky.shop").await, "billing");
    let status = cp.admin_json("/config").await;
    let refused = status["kubernetes"]["refused_services"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{status}");
}
