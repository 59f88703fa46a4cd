//! Mesh mode end to end, with the real binaries: `weft-control-plane` issues
//! identities (bootstrap tokens) and streams config; `weft-proxy
//! --control-plane` sidecars get certificates, talk mTLS with exact SPIFFE
//! IDs, apply pushed edits without failing a request, and keep serving when
//! the control plane dies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_tests::*;

const TD: &str = "weft.local";

fn backend(name: &str, addr: std::net::SocketAddr, identity: Option<&str>) -> String {
    let id = identity
        .map(|i| format!(", identity: \"spiffe://{TD}/ns/default/sa/{i}\""))
        .unwrap_or_default();
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{address: \"{addr}\"{id}}}]\n"
    )
}

async fn ready(p: &Proxy) {
    eventually("the proxy is ready", Duration::from_secs(20), || async {
        (p.admin_get("/ready").await.0 == 200).then_some(())
    })
    .await;
}

fn mesh_proxy(cp: &ControlPlane, sa: &str, token: &str) -> ProxyBuilder {
    let mut b = Proxy::builder("").no_config();
    for a in cp.proxy_args("default", sa, token) {
        b = b.arg(a);
    }
    b
}

/// Two ready sidecars: `b` fronts service `reviews` (app `app`), `a` is
/// `productpage`, which calls it.
async fn caller_and_reviews(cp: &ControlPlane, app: &Upstream) -> (Proxy, Proxy) {
    let b = mesh_proxy(cp, "reviews", &cp.token("default", "reviews"))
        .arg("--service")
        .arg("reviews")
        .app(app.addr)
        .start();
    let a = mesh_proxy(cp, "productpage", &cp.token("default", "productpage")).start();
    ready(&a).await;
    ready(&b).await;
    (a, b)
}

#[tokio::test]
async fn identities_come_from_the_control_plane_and_peers_are_verified_exactly() {
    let app = Upstream::start("reviews-app").await;
    let placeholder = Upstream::start("placeholder").await;
    let mut cp = ControlPlane::start(&backend("placeholder", placeholder.addr, None), &[]);
    let (a, b) = caller_and_reviews(&cp, &app).await;

    // A calls B's inbound over mTLS, expecting exactly B's identity.
    let v0 = cp.version().await;
    cp.write_config(
        &(backend("reviews", b.inbound, Some("reviews"))
            + "---\n"
            + &backend("impostor", b.inbound, Some("ratings"))),
    );
    cp.wait_all_acked(2, Some(&v0), Duration::from_secs(10))
        .await;
    let r = get(&a.url("/headers"), &[("host", "reviews")])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Carried as HTTP/2 between the sidecars, handed to the app as the
    // HTTP/1.1 the client spoke.
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
    let seen: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(seen.get("x-weft-orig-proto").is_none(), "{seen}");
    assert_eq!(
        seen["x-weft-peer-identity"].as_str(),
        Some("spiffe://weft.local/ns/default/sa/productpage"),
        "the app sees the caller's verified identity: {seen}"
    );
    // The same sidecar behind a name that expects another identity is refused.
    let r = get(&a.url("/"), &[("host", "impostor")]).await.unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("connect-failed"));

    // The control plane lists both, on the version in force.
    let proxies = cp.admin_json("/proxies").await;
    let ids: Vec<&str> = proxies
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["identity"].as_str())
        .collect();
    assert!(
        ids.contains(&"spiffe://weft.local/ns/default/sa/reviews"),
        "{proxies}"
    );
    assert!(
        ids.contains(&"spiffe://weft.local/ns/default/sa/productpage"),
        "{proxies}"
    );

    // A token names one workload: it cannot get another's certificate, and
    // a made-up token gets nothing.
    let thief = mesh_proxy(&cp, "reviews", &cp.token("default", "productpage")).start();
    let forged = mesh_proxy(&cp, "reviews", "weft1:default:reviews:99999999999:00").start();
    eventually("both requests refused", Duration::from_secs(10), || async {
        let m = cp.metric("weft_cp_certificate_denials_total").await;
        (m >= 2.0).then_some(())
    })
    .await;
    assert_eq!(thief.admin_get("/ready").await.0, 503);
    assert_eq!(forged.admin_get("/ready").await.0, 503);
    cp.kill();
}

/// Sends requests until stopped; counts answers that are not 200.
fn load(
    url: String,
    host: &'static str,
) -> (
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::sync::watch::Sender<bool>,
) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (o, f) = (ok.clone(), failed.clone());
    tokio::spawn(async move {
        while !*stopped.borrow_and_update() {
            match get(&url, &[("host", host)]).await {
                Ok(r) if r.status == 200 => o.fetch_add(1, Ordering::Relaxed),
                Ok(r) => {
                    eprintln!("failed: {} {}", r.status, r.text());
                    f.fetch_add(1, Ordering::Relaxed)
                }
                Err(e) => {
                    eprintln!("failed: {e}");
                    f.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    });
    (ok, failed, stop)
}

#[tokio::test]
async fn edits_apply_under_load_and_a_dead_control_plane_loses_nothing() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let mut cp = ControlPlane::start(&backend("svc", one.addr, None), &[]);
    let a = mesh_proxy(&cp, "client", &cp.token("default", "client")).start();
    ready(&a).await;
    let v1 = cp.wait_all_acked(1, None, Duration::from_secs(10)).await;
    let (ok, failed, stop) = load(a.url("/"), "svc");

    // An edit reaches the proxy within a second, under load.
    let edited = Instant::now();
    cp.write_config(&backend("svc", two.addr, None));
    let v2 = cp
        .wait_all_acked(1, Some(&v1), Duration::from_secs(5))
        .await;
    let took = edited.elapsed();
    assert_ne!(v1, v2);
    assert!(took < Duration::from_secs(1), "edit applied after {took:?}");
    let r = get(&a.url("/"), &[("host", "svc")]).await.unwrap();
    assert_eq!(r.header("x-upstream"), Some("two"));

    // The control plane dies: traffic goes on, the proxy stays ready.
    cp.kill();
    let before = ok.load(Ordering::Relaxed);
    eventually(
        "requests flow without the control plane",
        Duration::from_secs(5),
        || async { (ok.load(Ordering::Relaxed) > before + 50).then_some(()) },
    )
    .await;
    assert_eq!(a.admin_get("/ready").await.0, 200);

    // It comes back (same files, same CA): the proxy reconnects, names the
    // version it holds, and takes the next edit.
    cp.restart();
    cp.wait_all_acked(1, None, Duration::from_secs(20)).await;
    cp.write_config(&backend("svc", one.addr, None));
    let v3 = cp
        .wait_all_acked(1, Some(&v2), Duration::from_secs(5))
        .await;
    assert_ne!(v3, v2);
    eventually("traffic moved back", Duration::from_secs(5), || async {
        let r = get(&a.url("/"), &[("host", "svc")]).await.ok()?;
        (r.header("x-upstream") == Some("one")).then_some(())
    })
    .await;
    let _ = stop.send(true);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 100);
    eprintln!(
        "edit to applied: {took:?}; requests during the test: {}",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let app = Upstream::start("reviews-app").await;
    let placeholder = Upstream::start("placeholder").await;
    // Two-second certificates: each sidecar renews every 1.0-1.4 s.
    let mut cp = ControlPlane::start(
        &backend("placeholder", placeholder.addr, None),
        &["--cert-ttl", "2s"],
    );
    let (a, b) = caller_and_reviews(&cp, &app).await;
    let v0 = cp.version().await;
    cp.write_config(&backend("reviews", b.inbound, Some("reviews")));
    cp.wait_all_acked(2, Some(&v0), Duration::from_secs(10))
        .await;
    let expiry = |p: &Proxy| {
        let p = p.admin;
        async move {
            let r = get(&format!("http://{p}/metrics"), &[]).await.unwrap();
            r.text()
                .lines()
                .find(|l| l.starts_with("weft_certificate_expiry_timestamp_seconds "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap()
        }
    };
    let (a0, b0) = (expiry(&a).await, expiry(&b).await);
    let (ok, failed, stop) = load(a.url("/"), "reviews");
    // Two renewals each (six certificates in all), with traffic flowing.
    let issued0 = cp.metric("weft_cp_certificates_issued_total").await;
    assert_eq!(issued0, 2.0, "one first certificate each so far");
    let started = Instant::now();
    eventually(
        "both sidecars renewed twice",
        Duration::from_secs(15),
        || async {
            let issued = cp.metric("weft_cp_certificates_issued_total").await;
            let (a1, b1) = (expiry(&a).await, expiry(&b).await);
            (issued >= 6.0 && a1 > a0 && b1 > b0).then_some(())
        },
    )
    .await;
    // Renewal waits for half the life or more (whole-second expiry makes
    // that 0.5-1.4 s here), not a tight loop.
    let issued = cp.metric("weft_cp_certificates_issued_total").await;
    let most = 2.0 + 2.0 * (started.elapsed().as_secs_f64() / 0.5 + 1.0);
    assert!(issued <= most, "{issued} certificates");
    // New connections after the rotations use the new certificates.
    let r = get(&a.url("/"), &[("host", "reviews")]).await.unwrap();
    assert_eq!(r.status, 200);
    let _ = stop.send(true);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during rotation"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    cp.kill();
}

/// `n` services the proxy under test never calls: a Backend and an
/// HTTPRoute each.
fn unrelated(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc-{i}}}\nspec:\n  endpoints: [{{address: \"127.9.{}.{}:9\"}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc-{i}}}\nspec:\n  parentRefs: [{{kind: Service, name: svc-{i}}}]\n  hostnames: [svc-{i}.example]\n  rules:\n    - backendRefs: [{{name: svc-{i}}}]\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect()
}

#[tokio::test]
async fn a_proxy_holds_only_what_it_calls() {
    let one = Upstream::start("one").await;
    let small = ControlPlane::start(&backend("svc", one.addr, None), &[]);
    let big = ControlPlane::start(&(backend("svc", one.addr, None) + &unrelated(1000)), &[]);
    let a = mesh_proxy(&small, "client", &small.token("default", "client")).start();
    let b = mesh_proxy(&big, "client", &big.token("default", "client")).start();
    ready(&a).await;
    ready(&b).await;
    for p in [&a, &b] {
        // The first call to a name asks the control plane; later calls don't.
        let r = get(&p.url("/"), &[("host", "svc")]).await.unwrap();
        assert_eq!((r.status, r.header("x-upstream")), (200, Some("one")));
        let r = get(&p.url("/"), &[("host", "svc")]).await.unwrap();
        assert_eq!(r.status, 200);
        // A name nobody serves: answered (404) once the control plane says so.
        let r = get(&p.url("/"), &[("host", "nowhere")]).await.unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-weft-error"), Some("no-route"));
    }
    // With 1,000 other services in the mesh, the proxy still holds one Backend.
    let (_, body) = b.admin_get("/endpoints").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["backend"].as_str())
        .collect();
    assert_eq!(names, ["default/svc"]);
    let wants = &big.admin_json("/proxies").await[0]["wants"];
    assert_eq!(wants, &serde_json::json!(["nowhere", "svc"]));
    // And a service it calls later arrives when it is first called.
    let r = get(&b.url("/"), &[("host", "svc-7.example")])
        .await
        .unwrap();
    assert_eq!(r.status, 502, "svc-7 routes to an unreachable test address");
    let (_, body) = b.admin_get("/endpoints").await;
    assert!(body.contains("default/svc-7"), "{body}");
    eprintln!(
        "proxy RSS: {} KiB with 1 service in the mesh, {} KiB with 1,001",
        rss_kib(a.pid()),
        rss_kib(b.pid())
    );
}

#[tokio::test]
async fn a_snapshot_the_proxy_cannot_apply_is_nacked_and_the_old_config_serves() {
    let one = Upstream::start("one").await;
    let mut cp = ControlPlane::start(&backend("svc", one.addr, None), &[]);
    let a = mesh_proxy(&cp, "client", &cp.token("default", "client")).start();
    ready(&a).await;
    let r = get(&a.url("/"), &[("host", "svc")]).await.unwrap();
    assert_eq!(r.status, 200);
    let v1 = cp.wait_all_acked(1, None, Duration::from_secs(10)).await;
    let held = cp.admin_json("/proxies").await[0]["acked"].clone();

    // Valid YAML the control plane serves, but a trust domain this proxy's
    // identity is not in: applying it would cut every mTLS connection.
    cp.write_config(&format!(
        "{}---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh, namespace: weft-system}}\nspec:\n  trustDomain: elsewhere.example\n",
        backend("svc", one.addr, None)
    ));
    let nack = eventually(
        "the proxy's NACK shows at the control plane",
        Duration::from_secs(10),
        || async {
            let p = cp.admin_json("/proxies").await;
            let n = p[0]["last_nack"].clone();
            n.is_object().then_some(n)
        },
    )
    .await;
    let reason = nack["reason"].as_str().unwrap();
    assert!(reason.contains("spec.trustDomain"), "{reason}");
    assert!(reason.contains("weft.local"), "{reason}");
    assert_ne!(cp.version().await, v1);
    // The proxy still runs the version it acknowledged, and serves.
    let p = cp.admin_json("/proxies").await;
    assert_eq!(p[0]["acked"], held);
    assert_ne!(p[0]["current"], held);
    let r = get(&a.url("/"), &[("host", "svc")]).await.unwrap();
    assert_eq!(r.status, 200);
    let (_, config) = a.admin_get("/config").await;
    assert!(
        config.contains("spec.trustDomain"),
        "the proxy's /config shows why: {config}"
    );
    assert!(cp.metric("weft_cp_nacks_total").await >= 1.0);
    cp.kill();
}

#[tokio::test]
async fn a_proxy_whose_first_snapshot_is_refused_does_not_claim_readiness() {
    let one = Upstream::start("one").await;
    // From the start, a trust domain this proxy's identity is not in.
    let mut cp = ControlPlane::start(
        &format!(
            "{}---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: mesh, namespace: weft-system}}\nspec:\n  trustDomain: elsewhere.example\n",
            backend("svc", one.addr, None)
        ),
        &[],
    );
    let a = mesh_proxy(&cp, "client", &cp.token("default", "client")).start();
    eventually(
        "the proxy's NACK shows at the control plane",
        Duration::from_secs(20),
        || async {
            let p = cp.admin_json("/proxies").await;
            p[0]["last_nack"].is_object().then_some(())
        },
    )
    .await;
    // It holds its certificate, but no config it could accept: before its
    // first snapshot it does not know its inbound policies, so it does not
    // say it is ready.
    assert!(
        a.metric("weft_certificate_expiry_timestamp_seconds", &[])
            .await
            > 0.0
    );
    let (status, body) = a.admin_get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no config applied yet"), "{body}");
    cp.kill();
}

#[tokio::test]
async fn two_control_planes_on_the_same_files_agree_and_authorization_holds() {
    let app = Upstream::start("reviews-app").await;
    let placeholder = Upstream::start("placeholder").await;
    let first = ControlPlane::start(&backend("placeholder", placeholder.addr, None), &[]);
    let b = mesh_proxy(&first, "reviews", &first.token("default", "reviews"))
        .arg("--service")
        .arg("reviews")
        .app(app.addr)
        .start();
    ready(&b).await;
    // Only productpage may call reviews.
    let files = backend("reviews", b.inbound, Some("reviews"))
        + "---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: reviews}\nspec:\n  targetRef: {kind: Service, name: reviews}\n  action: Allow\n  rules:\n    - from:\n        identities: [\"spiffe://weft.local/ns/default/sa/productpage\"]\n";
    let v0 = first.version().await;
    first.write_config(&files);
    first
        .wait_all_acked(1, Some(&v0), Duration::from_secs(10))
        .await;
    // A replica: same CA, same files, started separately.
    let second = ControlPlane::replica_of(&first, &files);
    assert_eq!(second.version().await, first.version().await);
    let a = mesh_proxy(
        &second,
        "productpage",
        &second.token("default", "productpage"),
    )
    .start();
    let c = mesh_proxy(&first, "ratings", &first.token("default", "ratings")).start();
    ready(&a).await;
    ready(&c).await;
    // Certificates from either instance chain to the same CA: A (via the
    // second) reaches B (via the first); C is authenticated but not allowed.
    let r = get(&a.url("/"), &[("host", "reviews")]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&c.url("/"), &[("host", "reviews")]).await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("x-weft-error"), Some("forbidden"));
    // Same files, same wants: the same snapshot version from both instances.
    let current = |cp: &ControlPlane, name: &'static str| {
        let cp_admin = cp.admin;
        async move {
            let r = get(&format!("http://{cp_admin}/proxies"), &[])
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .find(|p| p["identity"].as_str().unwrap().ends_with(name))
                .map(|p| p["current"].clone())
                .unwrap()
        }
    };
    assert_eq!(
        current(&second, "/productpage").await,
        current(&first, "/ratings").await
    );
}

#[tokio::test]
async fn mesh_config_sets_the_certificate_lifetime() {
    let one = Upstream::start("one").await;
    let cp = ControlPlane::start(
        &(backend("svc", one.addr, None)
            + "---\napiVersion: weft.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: mesh, namespace: weft-system}\nspec:\n  certificateLifetime: 2h\n  rotationPercent: [60, 65]\n"),
        &[],
    );
    let a = mesh_proxy(&cp, "client", &cp.token("default", "client")).start();
    ready(&a).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let expiry = a
        .metric("weft_certificate_expiry_timestamp_seconds", &[])
        .await;
    assert!(
        (expiry - (now + 7200.0)).abs() < 120.0,
        "expires in {} s, not 2 h",
        expiry - now
    );
}
