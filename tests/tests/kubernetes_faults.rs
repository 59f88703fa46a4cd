//! Fault injection from the cluster, end to end: a TrafficPolicy with a
//! `fault` block, stored in the fake API server (checked against the
//! generated CRD), read by the real `weft-control-plane --kubernetes` and
//! streamed to a real sidecar, which aborts the requests that carry the
//! fault's header without sending them to the Service's endpoint.
//!
//! Endpoint addresses: the API server refuses loopback ones, so the
//! upstream is a stand-in Pod (`weft_tests::pod_net`; root needed: without
//! it the test says why it skips, and fails under CI).

use serde_json::json;
use std::time::Duration;
use weft_tests::kube_cluster::control_plane_rbac;
use weft_tests::pod_net::PodNet;
use weft_tests::route_cluster::{fake_with, service};
use weft_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_from_the_cluster_aborts_only_the_requests_that_ask() {
    let Some(pods) = PodNet::new("a_fault_from_the_cluster_aborts_only_the_requests_that_ask")
    else {
        return;
    };
    let ratings = pods.upstream("ratings").await;
    let fake = fake_with(control_plane_rbac(), true).await;
    service(&fake, "ratings", ratings.addr).await;
    fake.create(
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "ratings-chaos", "namespace": "shop"},
        "spec": {"targetRef": {"kind": "Service", "name": "ratings"},
                 "fault": {"abort": {"httpStatus": 503},
                           "headers": [{"name": "x-weft-fault", "value": "on"}]}}}),
    )
    .await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let cp = ControlPlane::start_kubernetes(&kubeconfig, &[]);
    let b = cp.sidecar("web", "client");
    let proxy = b.start();
    eventually("the sidecar is ready", LIMIT, || async {
        (proxy.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
    // Without the header the Service answers; with it, the caller's
    // sidecar aborts (once the policy has reached it).
    let r = get(&proxy.url("/"), &[("host", "ratings.shop")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-upstream"), Some("ratings"));
    let faulted = [("host", "ratings.shop"), ("x-weft-fault", "on")];
    eventually("the fault reaches the sidecar", LIMIT, || async {
        let r = get(&proxy.url("/"), &faulted).await.unwrap();
        (r.header("x-weft-error") == Some("fault-abort")).then_some(())
    })
    .await;
    let before = ratings.requests();
    for _ in 0..10 {
        let r = get(&proxy.url("/"), &faulted).await.unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("x-weft-error"), Some("fault-abort"));
    }
    assert_eq!(
        ratings.requests(),
        before,
        "an aborted request reached the Pod"
    );
    let r = get(
        &proxy.url("/"),
        &[("host", "ratings.shop"), ("x-weft-fault", "off")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
