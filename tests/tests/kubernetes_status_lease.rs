//! The status Lease, end to end with the fake API server: with two control
//! planes only the holder of `weft-control-plane-status` writes route
//! status; when it dies (SIGKILL) the other takes the Lease once it
//! expires, and when it is stopped (SIGTERM) it gives the Lease up at once.

use serde_json::json;
use weft_tests::kube_cluster::control_plane_rbac;
use weft_tests::pod_net::PodNet;
use weft_tests::route_cluster::{fake_with, route, service, w};
use weft_tests::route_status::{condition, is, route_status};
use weft_tests::*;

const LIMIT: std::time::Duration = std::time::Duration::from_secs(20);
const GATEWAY: &str = "gateway.networking.k8s.io/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_status_and_another_takes_over() {
    let Some(pods) = PodNet::new("only_the_lease_holder_writes_status_and_another_takes_over")
    else {
        return;
    };
    let v1 = pods.upstream("reviews-v1").await;
    let fake = fake_with(control_plane_rbac(), true).await;
    service(&fake, "reviews", v1.addr).await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    let lease = ["--status-lease", "2s"];
    let mut first = ControlPlane::start_kubernetes(&kubeconfig, &lease);
    let lease_holder = || async {
        fake.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("weft-system"),
            "weft-control-plane-status",
        )
        .await
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
    };
    let one = eventually("the first control plane holds the Lease", LIMIT, || async {
        let h = lease_holder().await?;
        (first.admin_json("/config").await["kubernetes"]["status_writer"] == true).then_some(h)
    })
    .await;
    let second = ControlPlane::start_kubernetes(&kubeconfig, &lease);
    assert_eq!(
        second.admin_json("/config").await["kubernetes"]["status_writer"],
        false
    );

    fake.create(route(
        "shop",
        "r",
        None,
        json!([{"backendRefs": [{"name": "reviews", "port": 9080}]}]),
    ))
    .await;
    route_status(&fake, "HTTPRoute", "shop", "r", "written", |p| {
        condition(&p["conditions"], "Accepted")["observedGeneration"] == 1
    })
    .await;
    assert_eq!(w(&first).await, 1);
    assert_eq!(w(&second).await, 0);
    assert!(
        !second.logs().contains("status written"),
        "{}",
        second.logs()
    );

    // The holder dies; once its Lease expires the other takes it and
    // writes the next change.
    first.kill();
    fake.merge_patch(
        GATEWAY,
        "HTTPRoute",
        Some("shop"),
        "r",
        None,
        json!({"spec": {"hostnames": ["r.example.com"]}}),
    )
    .await;
    route_status(
        &fake,
        "HTTPRoute",
        "shop",
        "r",
        "written by the other",
        |p| condition(&p["conditions"], "Accepted")["observedGeneration"] == 2,
    )
    .await;
    let two = lease_holder().await.unwrap();
    assert_ne!(one, two, "the Lease changed hands");
    assert!(w(&second).await >= 1);
    let lease = fake
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("weft-system"),
            "weft-control-plane-status",
        )
        .await
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stopped_with_sigterm_gives_the_lease_up_at_once() {
    let fake = fake_with(control_plane_rbac(), true).await;
    let kubeconfig = fake.service_account_kubeconfig("weft-system", "weft-control-plane");
    // A Lease far longer than the test's limit: only a release explains a
    // quick takeover.
    let lease = ["--status-lease", "120s"];
    let mut first = ControlPlane::start_kubernetes(&kubeconfig, &lease);
    eventually("the first control plane holds the Lease", LIMIT, || async {
        (first.admin_json("/config").await["kubernetes"]["status_writer"] == true).then_some(())
    })
    .await;
    let second = ControlPlane::start_kubernetes(&kubeconfig, &lease);
    first.terminate();
    assert!(first.logs().contains("Lease released"), "{}", first.logs());
    eventually("the second takes the Lease over", LIMIT, || async {
        (second.admin_json("/config").await["kubernetes"]["status_writer"] == true).then_some(())
    })
    .await;
    fake.create(route(
        "shop",
        "r",
        None,
        json!([{"backendRefs": [{"name": "nowhere", "port": 9080}]}]),
    ))
    .await;
    route_status(
        &fake,
        "HTTPRoute",
        "shop",
        "r",
        "written by the second",
        |p| {
            is(
                &condition(&p["conditions"], "ResolvedRefs"),
                "False",
                "BackendNotFound",
            )
        },
    )
    .await;
    assert_eq!(w(&second).await, 1);
}
