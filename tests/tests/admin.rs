//! The admin endpoint an operator reads.

use weft_tests::*;

#[tokio::test]
async fn admin_pages() {
    let a = Upstream::start("a").await;
    let p = Proxy::start(format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec:\n  endpoints: [{{address: {}, weight: 3}}]\n",
        a.addr
    ));
    assert_eq!(
        get(&p.url("/"), &[("host", "a")]).await.unwrap().status,
        200
    );
    assert_eq!(p.admin_get("/live").await.0, 200);
    assert_eq!(p.admin_get("/ready").await.0, 200);

    let (status, metrics) = p.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "weft_requests_total{",
        "weft_request_duration_seconds_bucket{",
        "weft_active_connections{",
        "weft_config_version ",
        "weft_upstream_connects_total{",
        "weft_process_resident_memory_bytes ",
        "weft_process_cpu_seconds ",
        "weft_runtime_alive_tasks ",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    assert_eq!(
        p.metric(
            "weft_requests_total",
            &[
                "direction=\"outbound\"",
                "backend=\"default/a\"",
                "code_class=\"2xx\""
            ]
        )
        .await,
        1.0
    );
    assert_eq!(p.metric("weft_config_version", &[]).await, 1.0);
    let rss = p.metric("weft_process_resident_memory_bytes", &[]).await;
    assert!(rss > 1e6 && rss < 200e6, "plausible RSS: {rss}");
    // Each downstream connection is a task: eight held open, each having
    // been answered, count. (Earlier one-shot connections may have ended
    // in between, hence 6 rather than 8.)
    let before = p.metric("weft_runtime_alive_tasks", &[]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = Conn::open(p.outbound).await.unwrap();
        let req = http::Request::get("/")
            .header("host", "a")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(c.send(req).await.unwrap().status, 200);
        held.push(c);
    }
    let after = p.metric("weft_runtime_alive_tasks", &[]).await;
    assert!(
        before >= 1.0 && after >= before + 6.0,
        "live tasks {before} -> {after} with 8 more connections open"
    );
    drop(held);

    let (_, config) = p.admin_get("/config").await;
    assert!(config.contains("# version: 1"), "{config}");
    assert!(config.contains("kind: Backend"), "{config}");

    let (_, endpoints) = p.admin_get("/endpoints").await;
    let v: serde_json::Value = serde_json::from_str(&endpoints).unwrap();
    let ep = &v["backends"][0]["endpoints"][0];
    assert_eq!(ep["address"], a.addr.to_string());
    assert_eq!(ep["weight"], 3);
    assert_eq!(ep["activeRequests"], 0);
    assert!(ep["ewmaLatencyMs"].as_f64().unwrap() > 0.0);

    assert_eq!(p.admin_get("/log-level").await.1.trim(), "info");
    let put = |body: &'static str| {
        let admin = p.admin;
        async move {
            let mut c = Conn::open(admin).await.unwrap();
            let req = http::Request::put("/log-level")
                .header("host", "admin")
                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                    body.as_bytes(),
                )))
                .unwrap();
            c.send(req).await.unwrap()
        }
    };
    assert_eq!(put("debug").await.status, 200);
    assert_eq!(p.admin_get("/log-level").await.1.trim(), "debug");
    assert_eq!(put("no=such=level[").await.status, 400);
    assert_eq!(p.admin_get("/nope").await.0, 404);
}

/// The shipped Grafana dashboard only queries metrics the proxy exports.
#[tokio::test]
async fn dashboard_queries_exported_metrics() {
    let a = Upstream::start("a").await;
    let p = Proxy::start(format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: a}}\nspec:\n  endpoints: [{{address: {}}}]\n",
        a.addr
    ));
    assert_eq!(
        get(&p.url("/"), &[("host", "a")]).await.unwrap().status,
        200
    );
    let (_, metrics) = p.admin_get("/metrics").await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/weft/dashboards/weft-golden-signals.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("weft_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                names.push(name);
            }
        }
    }
    assert!(names.len() >= 12, "{names:?}");
    for name in names {
        // Series appear as `name{` or `name `; a family with no series yet
        // only as `# TYPE family` (OpenMetrics drops `_total`/`_bucket` there).
        let family = name.trim_end_matches("_total").trim_end_matches("_bucket");
        let exported = metrics
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            || metrics.contains(&format!("# TYPE {family} "));
        assert!(
            exported,
            "dashboard queries {name}, which /metrics does not export"
        );
    }
}
