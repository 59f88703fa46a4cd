//! Hot reload in file mode: edits apply within a second without dropping
//! in-flight requests or open connections; invalid edits are rejected with
//! their position and the old config keeps serving.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::{Duration, Instant};
use weft_tests::*;

fn route_to(target: &str, a: &Upstream, b: &Upstream) -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec:\n  endpoints: [{{address: {}}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: b}}\nspec:\n  endpoints: [{{address: {}}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: svc}}\nspec:\n  parentRefs: [{{name: svc}}]\n  rules:\n    - backendRefs: [{{name: {target}}}]\n",
        a.addr, b.addr
    )
}

fn req(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "svc")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn edit_applies_within_a_second_without_dropping_anything() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Proxy::start(route_to("a", &a, &b));
    let mut keep = Conn::open(p.outbound).await.unwrap();
    assert_eq!(
        keep.send(req("/")).await.unwrap().header("x-upstream"),
        Some("a")
    );

    // A streaming response that starts before the swap: 20 events, 40 ms apart.
    let mut streaming = Conn::open(p.outbound).await.unwrap();
    let resp = streaming.send_streaming(req("/sse/20/40")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.starts_with(b"data: event 0"));

    let v0 = p.version().await;
    let edited = Instant::now();
    p.write_config(&route_to("b", &a, &b));
    let applied = eventually("the edit to apply", Duration::from_secs(3), || async {
        let r = get(&p.url("/"), &[("host", "svc")]).await.ok()?;
        (r.header("x-upstream") == Some("b")).then(Instant::now)
    })
    .await;
    let took = applied - edited;
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    assert_eq!(p.version().await, v0 + 1);

    // The stream that began on the old config finishes, every event intact.
    let mut rest = first.to_vec();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            rest.extend_from_slice(&d);
        }
    }
    let text = String::from_utf8(rest).unwrap();
    assert_eq!(text.matches("data: event").count(), 20, "{text}");
    // The connection opened before the swap still works, now on the new config.
    assert_eq!(
        keep.send(req("/")).await.unwrap().header("x-upstream"),
        Some("b")
    );
    assert_eq!(
        p.metric("weft_config_reloads_total", &["result=\"applied\""])
            .await,
        1.0
    );
}

#[tokio::test]
async fn invalid_edit_is_rejected_with_position_and_old_config_serves() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Proxy::start(route_to("a", &a, &b));
    let bad = route_to("b", &a, &b).replace(
        "    - backendRefs: [{name: b}]",
        "    - backendRefs: [{name: b, weight: many}]",
    );
    p.write_config(&bad);
    let config = eventually(
        "the rejection to show on /config",
        Duration::from_secs(3),
        || async {
            let (_, body) = p.admin_get("/config").await;
            body.contains("REJECTED").then_some(body)
        },
    )
    .await;
    let line = bad.lines().position(|l| l.contains("many")).unwrap() + 1;
    let column = bad.lines().nth(line - 1).unwrap().find("many").unwrap() + 1;
    let want = format!(
        "{}:{line}:{column}: spec.rules[0].backendRefs[0].weight",
        p.config.display()
    );
    assert!(
        config.contains(&want),
        "expected {want} in /config:\n{config}"
    );
    assert!(p.logs().contains(&want), "expected {want} in the log");
    assert_eq!(
        p.metric("weft_config_reloads_total", &["result=\"rejected\""])
            .await,
        1.0
    );
    assert_eq!(p.version().await, 1);
    let r = get(&p.url("/"), &[("host", "svc")]).await.unwrap();
    assert_eq!(
        r.header("x-upstream"),
        Some("a"),
        "the old config keeps serving"
    );
    // Fixing the file applies it and clears the rejection.
    p.write_config(&route_to("b", &a, &b));
    eventually("the fix to apply", Duration::from_secs(3), || async {
        let r = get(&p.url("/"), &[("host", "svc")]).await.ok()?;
        (r.header("x-upstream") == Some("b")).then_some(())
    })
    .await;
    let (_, config) = p.admin_get("/config").await;
    assert!(!config.contains("REJECTED"));
}

#[tokio::test]
async fn folder_of_files_is_watched() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = TempDir::new("folder");
    let doc = |name: &str, up: &Upstream| {
        format!("apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{address: {}}}]\n", up.addr)
    };
    std::fs::write(dir.path().join("a.yaml"), doc("a", &a)).unwrap();
    let p = Proxy::builder("")
        .arg("--config")
        .arg(dir.path().display().to_string())
        .start();
    assert_eq!(
        get(&p.url("/"), &[("host", "a")]).await.unwrap().status,
        200
    );
    assert_eq!(
        get(&p.url("/"), &[("host", "b")]).await.unwrap().status,
        404
    );
    std::fs::write(dir.path().join("b.yaml"), doc("b", &b)).unwrap();
    eventually(
        "a new file in the folder to apply",
        Duration::from_secs(3),
        || async {
            let r = get(&p.url("/"), &[("host", "b")]).await.ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await;
}
